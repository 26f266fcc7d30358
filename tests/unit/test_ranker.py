"""The discriminative ranker: labels without leakage, the five initialisation strategies,
AUC / GAUC against brute force, and the model's shapes and masking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.config import structure
from seqrec.errors import ConfigError
from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training.evaluation import binary_auc, group_auc, log_loss
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.ranker.labels import LabelConfig, build_examples, generative_rows, split_users
from seqrec.training.ranker.model import Ranker, RankerModelConfig, dense_parameter_count, sparse_names
from seqrec.training.ranker.strategies import STRATEGIES, apply_strategy
from seqrec.training.ranker.trainer import RankConfig, RankData, fit, predict

NUM_ITEMS = 40


def interactions(seed=0, users=12, per_user=(5, 25)):
    """Random timed ratings with many equal timestamps within a user (ties must not leak)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(*per_user, users)
    user = np.repeat(np.arange(100, 100 + users), counts)
    items = rng.integers(FIRST_ITEM_ID, NUM_ITEMS, len(user))
    times = rng.integers(0, 30, len(user)) * 1000 + user  # users end at different times
    ratings = rng.integers(1, 6, len(user)).astype(float)
    shuffle = rng.permutation(len(user))
    return user[shuffle], items[shuffle], times[shuffle], ratings[shuffle]


@pytest.mark.parametrize("protocol", ["ratings", "sampled"])
def test_histories_hold_only_the_users_strictly_earlier_interactions(protocol):
    user, items, times, ratings = interactions()
    cfg = LabelConfig(protocol=protocol, max_history=6)
    ex = build_examples(user, items, times, ratings, cfg, NUM_ITEMS)
    n = len(user)
    assert len(ex) == (n if protocol == "ratings" else 2 * n)
    for e in range(len(ex)):  # brute force, per example
        earlier = np.flatnonzero((user == ex.user[e]) & (times < ex.time[e]))
        earlier = earlier[np.lexsort((times[earlier], user[earlier]))]
        hist = slice(ex.start[e], ex.end[e])
        assert (ex.users[hist] == ex.user[e]).all()
        assert (ex.times[hist] < ex.time[e]).all()  # nothing at or after the candidate's time
        assert len(range(*hist.indices(len(ex.items)))) == min(len(earlier), 6)
        # the LAST max_history earlier interactions (same timestamps as the brute-force ones)
        np.testing.assert_array_equal(np.sort(ex.times[hist]), np.sort(times[earlier][-6:]))
    hist, lengths, cand = ex.batch(np.arange(len(ex)))
    assert hist.shape == (len(ex), 6) and (hist[torch.arange(6)[None] >= lengths[:, None]] == 0).all()
    np.testing.assert_array_equal(cand.numpy(), ex.candidate)


def test_rating_labels_and_sampled_negatives():
    user, items, times, ratings = interactions(1)
    ex = build_examples(user, items, times, ratings, LabelConfig(positive_rating=4), NUM_ITEMS)
    order = np.lexsort((times, user))
    np.testing.assert_array_equal(ex.label, (ratings[order] >= 4).astype(np.float32))
    np.testing.assert_array_equal(ex.candidate, items[order])
    sampled = build_examples(user, items, times, ratings, LabelConfig(protocol="sampled"), NUM_ITEMS)
    pos, neg = sampled.label == 1, sampled.label == 0
    assert pos.sum() == neg.sum() == len(user)
    seen = set(zip(user.tolist(), items.tolist()))
    assert not any((u, i) in seen for u, i in zip(sampled.user[neg].tolist(), sampled.candidate[neg].tolist()))
    assert (sampled.candidate[neg] >= FIRST_ITEM_ID).all()
    # a negative has its positive's history
    np.testing.assert_array_equal(sampled.start[pos], sampled.start[neg])
    np.testing.assert_array_equal(sampled.end[pos], sampled.end[neg])


def test_users_split_by_last_interaction_time():
    user, items, times, ratings = interactions(2, users=30)
    ex = build_examples(user, items, times, ratings, LabelConfig(), NUM_ITEMS)
    train, test = split_users(ex, 0.7)
    assert not set(train.user) & set(test.user)
    assert len(train) + len(test) == len(ex)
    last = {u: times[user == u].max() for u in np.unique(user)}
    assert max(last[u] for u in set(train.user)) < min(last[u] for u in set(test.user))
    assert len(set(test.user)) == pytest.approx(0.3 * 30, abs=1)
    with pytest.raises(ValueError, match="no train or no test users"):
        split_users(ex.take(np.flatnonzero(ex.user == ex.user[0])), 0.5)


def test_generative_rows_are_each_users_sequence_in_windows():
    user, items, times, ratings = interactions(3)
    ex = build_examples(user, items, times, ratings, LabelConfig(), NUM_ITEMS)
    some = np.unique(user)[:5]
    rows = generative_rows(ex, some, 4)
    assert rows.shape[1] == 4
    flat = rows[rows != 0]
    np.testing.assert_array_equal(flat, ex.items[np.isin(ex.users, some)])
    assert len(rows) == sum(-(-int((user == u).sum()) // 4) for u in some)


def brute_auc(scores, labels):
    p, n = scores[labels == 1], scores[labels == 0]
    return np.mean((p[:, None] > n[None]) + 0.5 * (p[:, None] == n[None]))


def test_auc_and_gauc_match_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 8, 600) / 8.0  # many ties
    labels = rng.integers(0, 2, 600)
    groups = rng.integers(0, 25, 600)
    groups[:5], labels[:5] = 99, 1  # a group with positives only: skipped by GAUC
    assert binary_auc(scores, labels) == pytest.approx(brute_auc(scores, labels))
    want_num = want_den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if 0 < labels[m].sum() < m.sum():
            want_num += m.sum() * brute_auc(scores[m], labels[m])
            want_den += m.sum()
    assert group_auc(scores, labels, groups) == pytest.approx(want_num / want_den)
    assert group_auc(scores, labels, groups) != pytest.approx(binary_auc(scores, labels))
    p = np.array([0.9, 0.2, 0.6])
    y = np.array([1, 0, 0])
    assert log_loss(p, y) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])))
    with pytest.raises(ValueError, match="both positive and negative"):
        group_auc(scores[:5], labels[:5], groups[:5])


def ranker(seed=0, d=16, layers=2, max_history=8):
    torch.manual_seed(seed)
    category = np.r_[np.zeros(FIRST_ITEM_ID, np.int64), np.arange(NUM_ITEMS - FIRST_ITEM_ID) % 5 + 2]
    return Ranker(RankerModelConfig(d_model=d, n_layers=layers, n_heads=2, dropout=0.0), category, 7, max_history)


def test_logit_shapes_and_padding_do_not_change_a_row():
    model = ranker().eval()
    hist = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    lengths, cand = torch.tensor([3, 5]), torch.tensor([20, 21])
    with torch.no_grad():
        both = model(hist, lengths, cand)
        alone = model(hist[:1, :3], lengths[:1], cand[:1])
        other = model(hist[:1, :3], lengths[:1], torch.tensor([22]))
        empty = model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), cand[:1])
    assert both.shape == (2,) and empty.shape == (1,)
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone, other)  # the candidate matters
    loss = model.generative_loss(hist, n_negatives=16, temperature=0.05, category_weight=1.0)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0


SPARSE = {"item_embedding.weight", "category_embedding.weight", "segment_embedding.weight"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_copy_and_freeze_exactly_what_they_claim(strategy):
    source_model = ranker(seed=1)
    source = {k: v.clone() for k, v in source_model.state_dict().items()}
    model = ranker(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moved = apply_strategy(model, source, strategy)
    assert set(sparse_names(model)) == SPARSE
    own = dict(model.named_parameters())
    copy_sparse = strategy != "none"
    copy_dense = strategy.startswith("full")
    expect_copied = {n for n in own if not n.startswith(("segment_embedding.", "head."))
                     and ((n in SPARSE and copy_sparse) or (n not in SPARSE and copy_dense))}
    assert set(moved["copied"]) == expect_copied
    for name, p in own.items():
        if name in expect_copied:
            assert torch.equal(p, source[name]), name
        elif name != "backbone.embed_tokens.weight" and "norm" not in name:  # norms init to 1 in both
            assert torch.equal(p, before[name]) and not torch.equal(p, source[name]), name
    frozen = {"item_embedding.weight", "category_embedding.weight"} if strategy.endswith("_freeze") else set()
    assert set(moved["frozen"]) == frozen
    assert {n for n, p in own.items() if not p.requires_grad} == frozen


def test_transfer_from_a_seqrec_clm_checkpoint_and_mismatches():
    gen = SequenceRecommender(ModelConfig(num_items=NUM_ITEMS, max_len=9, backbone="llama", task="clm",
                                          d_model=16, n_layers=2, n_heads=2, dropout=0.0))
    model = ranker(seed=3)
    category_before = model.category_embedding.weight.clone()
    moved = apply_strategy(model, gen.state_dict(), "full_freeze")
    assert torch.equal(model.item_embedding.weight, gen.item_embedding.weight)
    for name, p in gen.backbone.named_parameters():
        assert torch.equal(dict(model.backbone.named_parameters())[name], p)
    # the category table has no counterpart: random and trainable, not frozen noise
    assert torch.equal(model.category_embedding.weight, category_before)
    assert model.category_embedding.weight.requires_grad and moved["frozen"] == ["item_embedding.weight"]
    with pytest.raises(ValueError, match=r"full transfer: the generative model lacks \['backbone.layers.2"):
        apply_strategy(ranker(layers=3), gen.state_dict(), "full")
    with pytest.raises(ValueError, match="item_embedding.weight is"):
        apply_strategy(ranker(d=32), gen.state_dict(), "sparse")
    with pytest.raises(ValueError, match="strategy 'fully'"):
        apply_strategy(model, gen.state_dict(), "fully")


def test_frozen_tables_stay_put_while_the_rest_trains():
    user, items, times, ratings = interactions(4, users=20)
    ex = build_examples(user, items, times, ratings, LabelConfig(max_history=8), NUM_ITEMS)
    train, test = split_users(ex, 0.7)
    base = ranker(seed=5)
    data = RankData(train, test, base.item_category.numpy(), ["a", "b", "c", "d", "e"])
    source = {k: v.clone() for k, v in ranker(seed=6).state_dict().items()}
    cfg = RankConfig(epochs=2, batch_size=32, lr=1e-2,
                     labels=LabelConfig(max_history=8), init={"strategy": "sparse_freeze"},
                     model=RankerModelConfig(d_model=16, n_layers=2, n_heads=2, dropout=0.0))
    model, fitted = fit(cfg, data, source, torch.device("cpu"))
    assert torch.equal(model.item_embedding.weight, source["item_embedding.weight"])
    assert torch.equal(model.category_embedding.weight, source["category_embedding.weight"])
    assert not torch.equal(model.backbone.layers[0].mlp.up_proj.weight,
                           ranker(seed=5).backbone.layers[0].mlp.up_proj.weight)
    assert not torch.equal(model.segment_embedding.weight, base.segment_embedding.weight)
    assert len(fitted["losses"]) == 2
    p = predict(model, test, 64)
    assert p.shape == (len(test),) and ((p > 0) & (p < 1)).all()


def test_dense_parameters_and_config_errors():
    model = ranker(d=16, layers=1)
    # one Llama layer: q, k, v, o (4 d^2) + SwiGLU (3 * d * 4d) + 2 RMSNorms; final norm; head
    d = 16
    assert dense_parameter_count(model) == 4 * d * d + 12 * d * d + 2 * d + d + d + 1
    with pytest.raises(ConfigError, match=r"init.strategy: 'half' is not one of"):
        structure(RankConfig, {"init": {"strategy": "half"}})
    with pytest.raises(ConfigError, match=r"labels: unknown key 'max_hist'"):
        structure(RankConfig, {"labels": {"max_hist": 3}})
    with pytest.raises(ConfigError, match=r"labels: test_quantile 1.5"):
        structure(RankConfig, {"labels": {"test_quantile": 1.5}})


def test_a_seqrec_checkpoint_is_checked_before_transfer(tmp_path):
    from seqrec.training.checkpoint import save_checkpoint
    from seqrec.training.ranker.trainer import checkpoint_source

    def saved(backbone, num_items, name):
        model = SequenceRecommender(ModelConfig(num_items=num_items, max_len=9, backbone=backbone, task="clm",
                                                d_model=16, n_layers=2, n_heads=2))
        save_checkpoint(model, tmp_path / name)
        return model, tmp_path / name

    llama, folder = saved("llama", NUM_ITEMS, "llama")
    state = checkpoint_source(folder, NUM_ITEMS)
    assert torch.equal(state["item_embedding.weight"], llama.item_embedding.weight)
    with pytest.raises(ValueError, match=f"{NUM_ITEMS} item ids, but the ranker's data has 50"):
        checkpoint_source(folder, 50)
    _, gpt2 = saved("gpt2", NUM_ITEMS, "gpt2")
    with pytest.raises(ValueError, match="a 'gpt2' checkpoint"):
        checkpoint_source(gpt2, NUM_ITEMS)
    with pytest.raises(ValueError, match="needs rank.generative_dir"):
        checkpoint_source(None, NUM_ITEMS)
