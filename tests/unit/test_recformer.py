"""Recformer's pieces on small generated data: item text through the NVTabular item workflow,
token budgets, the tokenizer, packing, the four embeddings and the Longformer, the losses, the
cold split and the strict ranks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from seqrec.config import load_recipe, section
from seqrec.errors import ConfigError
from seqrec.preprocessing import item_text as it
from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training.evaluation import rank_metrics, strict_ranks
from seqrec.training.recformer.batching import gather_prefixes, pack, prefix_examples, to_tensors
from seqrec.training.recformer.coldstart import cold_items, drop_items, split_targets
from seqrec.training.recformer.losses import IGNORE, contrastive_loss, finetune_loss, mask_tokens
from seqrec.training.recformer.model import (Recformer, RecformerModelConfig, build_recformer, load_recformer,
                                             save_recformer)
from seqrec.training.data import Ragged

WORDS = ["space", "love", "war", "night", "city", "star", "blue", "king", "dream", "storm"]
GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
KEYS = ["title", "genre", "year"]
ATTRS = {"title": "movie_title", "genre": "class", "year": "release_year"}


def item_table(n=40, seed=0):
    """Raw ids 101.. with a title (list of words), genres (list, sometimes empty), a year (text,
    sometimes missing)."""
    rng = np.random.default_rng(seed)
    titles = [[WORDS[w] for w in rng.integers(0, len(WORDS), rng.integers(1, 6))] for _ in range(n)]
    genres = [[GENRES[g] for g in rng.integers(0, len(GENRES), rng.integers(0, 3))] for _ in range(n)]
    years = [None if i % 7 == 3 else str(1950 + int(rng.integers(0, 50))) for i in range(n)]
    return pd.DataFrame({"item_id": np.arange(101, 101 + n), "movie_title": titles, "class": genres,
                         "release_year": years})


def vocabulary_for(raw_ids, skip=()):
    """encoded id -> raw id; the raw ids in `skip` are not in the vocabulary (never interacted)."""
    kept = [r for r in raw_ids if r not in skip]
    vocab = np.full(FIRST_ITEM_ID + len(kept), -1, dtype=np.int64)
    vocab[FIRST_ITEM_ID:] = kept[::-1]  # encoded order differs from the table's order
    return vocab


@pytest.fixture(scope="module")
def catalogue():
    table = item_table()
    vocab = vocabulary_for(table["item_id"].tolist(), skip={105, 130})
    texts = it.item_texts(table, ATTRS, vocab)
    tokenizer = it.train_tokenizer(it.flatten(texts, KEYS), vocab_size=300)
    return table, vocab, texts, tokenizer


def test_item_workflow_keys_text_by_encoded_id(catalogue):
    table, vocab, texts, _ = catalogue
    assert list(texts.columns) == ["item_id", "text-title", "text-genre", "text-year"]
    assert texts["item_id"].tolist() == list(range(FIRST_ITEM_ID, len(vocab)))  # 105, 130 dropped
    by_raw = table.set_index("item_id")
    for encoded, title, genre, year in texts.itertuples(index=False):
        raw = by_raw.loc[vocab[encoded]]
        assert title == " ".join(raw["movie_title"]) and genre == " ".join(raw["class"])
        assert year == (raw["release_year"] or "")
    flat = it.flatten(texts, KEYS)
    for encoded, text in zip(texts["item_id"], flat):
        raw = by_raw.loc[vocab[encoded]]
        parts = [f"title {' '.join(raw['movie_title'])}"]
        if len(raw["class"]):
            parts.append(f"genre {' '.join(raw['class'])}")
        if raw["release_year"]:
            parts.append(f"year {raw['release_year']}")
        assert text == " ".join(parts)


def test_item_workflow_names_a_missing_column():
    table = item_table().drop(columns=["class"])
    with pytest.raises(ValueError, match="class"):
        it.item_texts(table, ATTRS, vocabulary_for(table["item_id"].tolist()))


def test_tokenizer_training_is_reproducible():
    """The same texts (MovieLens-100k's 1,682 item texts, a vocabulary small enough for ties to
    decide merges) give the same vocabulary and the same ids, run after run."""
    from seqrec.preprocessing.datasets import movielens_100k_dir
    from seqrec.preprocessing.readers.recbole import read_recbole_items

    table = read_recbole_items(movielens_100k_dir() / "ml-100k.item")
    vocab = vocabulary_for(table["item_id"].tolist())
    flat = it.flatten(it.item_texts(table, ATTRS, vocab), KEYS)
    runs = []
    for _ in range(3):
        tokenizer = it.train_tokenizer(flat, vocab_size=1500)
        runs.append((tokenizer.get_vocab(), [e.ids for e in tokenizer.encode_batch(list(flat))]))
    assert len(runs[0][0]) == 1500
    assert all(run == runs[0] for run in runs[1:])


def test_tokenizer_special_ids_and_lowercase_words(catalogue):
    *_, tokenizer = catalogue
    assert [tokenizer.token_to_id(t) for t in it.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tokenizer.encode("Space WAR", add_special_tokens=False).ids
    assert tokenizer.decode(ids) == "space war"


@pytest.mark.parametrize("budget", [1, 2, 50])
def test_item_tokens_follow_the_per_attribute_budget(catalogue, budget):
    table, vocab, texts, tokenizer = catalogue
    budgets = {"title": budget, "genre": budget + 1, "year": 1}
    tokens = it.item_tokens(texts, KEYS, budgets, tokenizer, len(vocab))
    assert tokens.num_items == len(vocab) and (tokens.lengths[:FIRST_ITEM_ID] == 0).all()
    for i, item in enumerate(texts["item_id"]):
        want_ids, want_types = [], []
        for key in KEYS:  # the per-item reference: one encode call per attribute
            text = texts[it.text_column(key)].iloc[i]
            value = tokenizer.encode(text, add_special_tokens=False).ids[:budgets[key]]
            if value:
                key_ids = tokenizer.encode(key, add_special_tokens=False).ids
                want_ids += key_ids + value
                want_types += [it.TYPE_KEY] * len(key_ids) + [it.TYPE_VALUE] * len(value)
        a, b = tokens.offsets[item], tokens.offsets[item + 1]
        assert tokens.ids[a:b].tolist() == want_ids
        assert tokens.types[a:b].tolist() == want_types


def test_item_tokens_refuse_a_zero_budget(catalogue):
    _, vocab, texts, tokenizer = catalogue
    with pytest.raises(ValueError, match="genre"):
        it.item_tokens(texts, KEYS, {"title": 3, "genre": 0, "year": 1}, tokenizer, len(vocab))


def test_item_tokens_round_trip_through_a_file(catalogue, tmp_path):
    _, vocab, texts, tokenizer = catalogue
    tokens = it.item_tokens(texts, KEYS, 4, tokenizer, len(vocab))
    tokens.save(tmp_path)
    back = it.ItemTokens.load(tmp_path)
    for a, b in [(tokens.ids, back.ids), (tokens.types, back.types), (tokens.offsets, back.offsets)]:
        np.testing.assert_array_equal(a, b)


def tiny_tokens(lengths):
    """Item e (encoded) has lengths[e] tokens: ids 100 * e + j, types alternating key / value."""
    ids = np.concatenate([100 * e + np.arange(n) for e, n in enumerate(lengths)]).astype(np.int32)
    types = np.concatenate([np.where(np.arange(n) == 0, it.TYPE_KEY, it.TYPE_VALUE) for n in lengths]).astype(np.int8)
    return it.ItemTokens(ids, types, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def test_pack_puts_the_most_recent_item_first_and_cuts_at_the_budgets():
    tokens = tiny_tokens([0, 0, 0, 3, 2, 4, 1])
    histories = [[3, 4, 5], [6], [5, 3, 4, 6, 5]]
    values = np.concatenate(histories)
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])])
    max_tokens, max_items, window = 8, 3, 4
    got = pack(tokens, values, offsets, max_tokens, max_items, window)
    width = got["input_ids"].shape[1]
    assert width % window == 0 and width == 8
    for r, history in enumerate(histories):  # a per-row reference
        ids, types, item_pos = [it.CLS_TOKEN], [it.TYPE_CLS], [0]
        for rank, item in enumerate(history[::-1][:max_items]):
            for j in range(tokens.lengths[item]):
                ids.append(100 * item + j)
                types.append(it.TYPE_KEY if j == 0 else it.TYPE_VALUE)
                item_pos.append(rank + 1)
        ids, types, item_pos = ids[:max_tokens], types[:max_tokens], item_pos[:max_tokens]
        n = len(ids)
        assert got["input_ids"][r, :n].tolist() == ids and (got["input_ids"][r, n:] == it.PAD_TOKEN).all()
        assert got["token_types"][r, :n].tolist() == types
        assert got["item_positions"][r, :n].tolist() == item_pos
        assert got["token_positions"][r, :n].tolist() == list(range(n))
        assert got["attention_mask"][r].tolist() == [1] * n + [0] * (width - n)


def test_prefix_examples_and_their_histories():
    rows = Ragged(np.array([7, 8, 9, 4, 5]), np.array([0, 3, 5]))
    r, e = prefix_examples(rows.values, rows.offsets)
    assert list(zip(r, e)) == [(0, 1), (0, 2), (1, 1)]
    values, offsets, targets = gather_prefixes(rows.values, rows.offsets, r, e, max_items=1)
    assert targets.tolist() == [8, 9, 5]
    assert [values[offsets[i]:offsets[i + 1]].tolist() for i in range(3)] == [[7], [8], [4]]


def tiny_cfg(**kw):
    base = dict(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32, attention_window=4,
                max_tokens=16, max_items=4, dropout=0.0)
    return RecformerModelConfig(**{**base, **kw})


def test_model_shapes_and_padding_does_not_change_a_representation():
    torch.manual_seed(0)
    tokens = tiny_tokens([0, 0, 0, 3, 2, 5, 1])
    tokens = it.ItemTokens(tokens.ids % 35 + 5, tokens.types, tokens.offsets)  # ids inside the vocabulary
    model = Recformer(tiny_cfg()).eval()
    alone = to_tensors(pack(tokens, np.array([4]), np.array([0, 1]), 16, 4, 4), "cpu")
    batch = to_tensors(pack(tokens, np.array([4, 3, 5, 6, 3]), np.array([0, 1, 5]), 16, 4, 4), "cpu")
    assert batch["input_ids"].shape == (2, 16)  # 13 tokens, padded to the window
    with torch.no_grad():
        hidden = model.hidden(batch)
        one = model.represent(alone)
    assert hidden.shape == (2, 16, 16) and one.shape == (1, 16)
    torch.testing.assert_close(hidden[0, 0], one[0], atol=1e-5, rtol=1e-5)  # row 0 padded 4 -> 16
    assert not torch.allclose(hidden[0, 0], hidden[1, 0])
    scores = model.scores(hidden[:, 0], torch.randn(7, 16))
    assert scores.shape == (2, 7) and scores.abs().max() <= 1 / model.cfg.temperature + 1e-4
    # the four embeddings all take part: another item position changes the input embedding (once
    # the table has moved from its zero start, as training moves it)
    torch.nn.init.normal_(model.embeddings.item_position.weight)
    moved = {**batch, "item_positions": batch["item_positions"].clamp(max=1)}
    assert not torch.allclose(model.embeddings(moved), model.embeddings(batch))


def test_a_new_model_tells_items_apart_by_their_words():
    """The structural embeddings start at zero, so items encoded alone by an untrained model are
    as far apart as their words make them; summed at unit scale (PyTorch's default), the shared
    positions and token types make every item nearly the same."""
    torch.manual_seed(0)
    lengths = [0, 0, 0, 0] + [6] * 30
    rng = np.random.default_rng(0)
    base = tiny_tokens(lengths)
    tokens = it.ItemTokens(rng.integers(5, 40, len(base.ids)).astype(np.int32), base.types, base.offsets)
    items = np.arange(4, 34)
    batch = to_tensors(pack(tokens, items, np.arange(len(items) + 1), 16, 4, 4), "cpu")

    def mean_cosine(model):
        with torch.no_grad():
            x = torch.nn.functional.normalize(model.eval().represent(batch), dim=-1)
        c = x @ x.T
        return float(c[~torch.eye(len(x), dtype=torch.bool)].mean())

    model = Recformer(tiny_cfg(pooling="mean"))
    emb = model.embeddings
    for table in (emb.token_position, emb.token_type, emb.item_position):
        assert not table.weight.any()
    fresh = mean_cosine(model)
    for table in (emb.token_position, emb.token_type, emb.item_position):
        torch.nn.init.normal_(table.weight)
    assert fresh < 0.5 < mean_cosine(model)  # measured: 0.19 against 0.91


def test_mean_pooling_averages_the_real_tokens_only():
    torch.manual_seed(0)
    tokens = tiny_tokens([0, 0, 0, 3, 2, 5, 1])
    tokens = it.ItemTokens(tokens.ids % 35 + 5, tokens.types, tokens.offsets)
    model = Recformer(tiny_cfg(pooling="mean")).eval()
    batch = to_tensors(pack(tokens, np.array([4, 3, 5, 6, 3]), np.array([0, 1, 5]), 16, 4, 4), "cpu")
    alone = to_tensors(pack(tokens, np.array([4]), np.array([0, 1]), 16, 4, 4), "cpu")
    with torch.no_grad():
        hidden = model.hidden(batch)
        pooled = model.represent(batch)
        one = model.represent(alone)
    n = int(batch["attention_mask"][1].sum())
    torch.testing.assert_close(pooled[1], hidden[1, 1:n].mean(0))  # [CLS] and padding left out
    torch.testing.assert_close(pooled[0], one[0], atol=1e-5, rtol=1e-5)


def test_model_refuses_a_batch_not_padded_to_the_window():
    model = Recformer(tiny_cfg())
    batch = {k: torch.ones(1, 6, dtype=torch.int64) for k in
             ("input_ids", "token_types", "token_positions", "item_positions", "attention_mask")}
    with pytest.raises(ValueError, match="multiple of the attention window"):
        model.hidden(batch)


def test_config_checks():
    with pytest.raises(ValueError, match="even"):
        tiny_cfg(attention_window=5)
    with pytest.raises(ValueError, match="n_heads"):
        tiny_cfg(d_model=18, n_heads=4)


def test_save_load_and_pretrained_from_local_folders(tmp_path):
    from transformers import LongformerModel

    torch.manual_seed(1)
    model = Recformer(tiny_cfg())
    save_recformer(model, tmp_path / "rf")
    back = load_recformer(tmp_path / "rf")
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    # a Hugging Face Longformer folder (save_pretrained): its layers and word embeddings load
    hf = LongformerModel(tiny_cfg().longformer(), add_pooling_layer=False)
    hf.save_pretrained(tmp_path / "hf")
    built = build_recformer(tiny_cfg(pretrained=str(tmp_path / "hf")))
    torch.testing.assert_close(built.encoder.encoder.state_dict()["layer.1.output.dense.weight"],
                               hf.encoder.state_dict()["layer.1.output.dense.weight"])
    torch.testing.assert_close(built.embeddings.token.weight, hf.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="layers"):
        build_recformer(tiny_cfg(pretrained=str(tmp_path / "hf"), n_layers=3))
    with pytest.raises(FileNotFoundError, match="neither"):
        build_recformer(tiny_cfg(pretrained=str(tmp_path)))


def test_mask_tokens_follow_15_percent_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (200, 64))
    types = torch.full_like(ids, it.TYPE_VALUE)
    types[:, 0] = it.TYPE_CLS
    mask = torch.ones_like(ids)
    mask[:, 48:] = 0
    batch = {"input_ids": ids, "token_types": types, "attention_mask": mask}
    masked, labels = mask_tokens(batch, 500, g)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, 48:].any()  # never [CLS] or padding
    assert abs(chosen[:, 1:48].float().mean().item() - 0.15) < 0.01
    assert (labels[chosen] == ids[chosen]).all()
    became = masked["input_ids"][chosen]
    share_mask = (became == it.MASK_TOKEN).float().mean().item()
    share_same = (became == ids[chosen]).float().mean().item()
    assert abs(share_mask - 0.8) < 0.03 and abs(share_same - 0.1) < 0.03
    assert (masked["input_ids"][~chosen] == ids[~chosen]).all()


def test_contrastive_loss_leaves_out_repeated_next_items():
    scores = torch.tensor([[2.0, 1.0, 0.5], [0.3, 1.5, 4.0], [0.0, 3.0, 1.0]])
    distinct = contrastive_loss(scores, torch.tensor([7, 8, 9]))
    want = -torch.log_softmax(scores, dim=1).diagonal().mean()
    torch.testing.assert_close(distinct, want)
    repeated = contrastive_loss(scores, torch.tensor([7, 8, 8]))  # rows 1, 2 share their positive
    kept = scores.clone()
    kept[1, 2] = kept[2, 1] = float("-inf")
    torch.testing.assert_close(repeated, -torch.log_softmax(kept, dim=1).diagonal().mean())


def test_finetune_loss_ranks_only_the_candidates():
    scores = torch.tensor([[1.0, 5.0, 2.0, 0.0]])
    candidates = torch.tensor([True, False, True, True])
    got = finetune_loss(scores, torch.tensor([2]), candidates)
    want = -torch.log_softmax(torch.tensor([1.0, 2.0, 0.0]), dim=0)[1]
    torch.testing.assert_close(got, want)


def test_cold_split_holds_items_out_of_every_training_row():
    held = cold_items(103, 0.2, seed=3)
    assert held.sum() == 20 and not held[:FIRST_ITEM_ID].any()
    assert (cold_items(103, 0.2, seed=3) == held).all() and (cold_items(103, 0.2, seed=4) != held).any()
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 50)
    rows = Ragged(rng.integers(FIRST_ITEM_ID, 103, lengths.sum()), np.concatenate([[0], np.cumsum(lengths)]))
    kept = drop_items(rows, held)
    assert not held[kept.values].any() and (kept.lengths >= 2).all()
    want = [[v for v in r if not held[v]] for r in rows]
    assert [list(r) for r in kept] == [w for w in want if len(w) >= 2]
    warm, cold = split_targets(rows, held)
    assert sorted(np.concatenate([warm, cold])) == list(range(50))
    assert held[rows.last()[cold]].all() and not held[rows.last()[warm]].any()


def test_strict_ranks_count_ties_against_the_target():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.1, 0.1, -np.inf]])
    np.testing.assert_array_equal(strict_ranks(scores, np.array([1, 0])), [1, 0])
    m = rank_metrics(np.array([0, 1, 10]))
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 / 11) / 3)


def test_recipe_section_is_strict(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("recformer:\n  finetune: {variant: fixed}\n")
    with pytest.raises(ConfigError, match="recformer.finetune.variant"):
        section(load_recipe(path), "recformer")
    path.write_text("recformer:\n  model: {layers: 2}\n")
    with pytest.raises(ConfigError, match="recformer.model.*n_layers"):
        section(load_recipe(path), "recformer")
    path.write_text("recformer:\n  items: {attributes: {title: t}, budget: {genre: 3}}\n")
    with pytest.raises(ConfigError, match="title"):
        section(load_recipe(path), "recformer")
    # a recipe without the section leaves `seqrec train` to the ID model
    path.write_text("workdir: w\netl: {}\n")
    assert load_recipe(path)["recformer"] == {}


def synthetic_data(n_items=23, seed=0):
    """Items with 1-4 tokens, sequences over them, the last 4 items held out."""
    from seqrec.training.recformer.train import RecformerData

    rng = np.random.default_rng(seed)
    lengths = np.zeros(n_items, dtype=np.int64)
    lengths[FIRST_ITEM_ID:] = rng.integers(1, 5, n_items - FIRST_ITEM_ID)
    tokens = tiny_tokens(lengths)
    tokens = it.ItemTokens(tokens.ids % 35 + 5, tokens.types, tokens.offsets)
    held = np.zeros(n_items, dtype=bool)
    held[-4:] = True

    def rows(n, warm_only):
        pool = np.flatnonzero(~held)[FIRST_ITEM_ID:] if warm_only else np.arange(FIRST_ITEM_ID, n_items)
        lens = rng.integers(3, 7, n)
        return Ragged(rng.choice(pool, lens.sum()), np.concatenate([[0], np.cumsum(lens)]))

    return RecformerData(n_items, held, tokens, rows(30, True), rows(12, True), rows(12, False), None)


@pytest.mark.parametrize("variant", ["fix", "original", "variable", "training-only", "fine-tuning-only"])
def test_finetune_variants_run_their_stages(variant):
    from seqrec.training.recformer.train import (VARIANTS, RecformerConfig, encode_items, finetune, new_speeds)

    torch.manual_seed(0)
    data = synthetic_data()
    cfg = RecformerConfig(model=tiny_cfg(), eval_batch_size=8, encode_batch_size=8,
                          finetune={"variant": variant, "stage1_epochs": 2, "stage2_epochs": 2,
                                    "steps_per_epoch": 2, "batch_size": 8, "patience": 5})
    model = Recformer(cfg.model)
    examples = prefix_examples(data.train.values, data.train.offsets)
    start = encode_items(model, data.tokens, 8)
    log: list = []
    model, matrix, valid = finetune(model, data, examples, cfg, start, -1.0, new_speeds(), log,
                                    say=lambda *a: None)
    stage1, stage2 = VARIANTS[variant]
    assert [e["stage"] for e in log] == [1] * 2 * (stage1 is not None) + [2] * 2 * (stage2 is not None)
    assert matrix.shape == (data.num_items, 16) and valid == max(e["valid_ndcg@10"] for e in log)
    re_encoded = [e["encode_seconds"] > 0 for e in log]
    assert re_encoded == [e["stage"] == 1 for e in log]  # stage 1 re-encodes each epoch, stage 2 never


@pytest.mark.parametrize("items_mode", ["fixed", "trainable"])
def test_stage_two_keeps_a_fixed_item_matrix_and_trains_a_trainable_one(items_mode):
    from seqrec.training.recformer.train import RecformerConfig, encode_items, new_speeds, run_stage

    torch.manual_seed(0)
    data = synthetic_data(seed=1)
    cfg = RecformerConfig(model=tiny_cfg(), eval_batch_size=8, encode_batch_size=8,
                          finetune={"stage2_epochs": 1, "steps_per_epoch": 3, "batch_size": 8})
    model = Recformer(cfg.model)
    start = encode_items(model, data.tokens, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = prefix_examples(data.train.values, data.train.offsets)
    model, matrix, _ = run_stage(model, data, examples, cfg, 2, items_mode, start, new_speeds(), [])
    assert torch.equal(matrix, start) == (items_mode == "fixed")
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the encoder trained
