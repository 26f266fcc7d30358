"""A tiny Recformer served by the real tritonserver: `seqrec export` of a recipe with a recformer
section answers as offline scoring does on real MovieLens-100k histories, and `seqrec items add`
puts an item never seen in training into the running server as a new version, without a
restart and without retraining."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from seqrec.cli import main
from seqrec.client import RecommenderClient
from seqrec.client.contract import ENSEMBLE, MODEL, PREPROCESS
from seqrec.client.control import ModelControl
from seqrec.model_repository.publish import versions
from seqrec.model_repository.server import TritonServer
from seqrec.preprocessing.arrays import FIRST_ITEM_ID, ITEM_LIST
from seqrec.preprocessing.token_pack import ItemTokens
from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
from seqrec.training.recformer.model import load_recformer
from seqrec.training.recformer.train import ML100K_ATTRIBUTES, ItemSource, _pack, encode_items, read_items

pytestmark = pytest.mark.slow

K = 10
RECFORMER = {
    "vocab_size": 800, "cold_fraction": 0.2, "seed": 3, "valid_rows": 50, "eval_batch_size": 256,
    "items": {"budget": {"title": 8, "genre": 6, "year": 1}},
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "attention_window": 16,
              "max_tokens": 48, "max_items": 3, "dropout": 0.0, "pooling": "mean"},
    "pretrain": {"epochs": 0},
    "finetune": {"variant": "fix", "stage1_epochs": 1, "stage2_epochs": 0, "steps_per_epoch": 5,
                 "batch_size": 32, "lr": 0.003, "patience": 1},
}


def offline_top(model, tokens, matrix, vocab, histories):
    """Offline scoring, from training's own pieces: pack, represent, cosine / temperature over
    the item matrix, reserved ids never ranked; top-k in original ids."""
    lengths = np.array([len(h) for h in histories])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    packed = _pack(model, tokens, np.concatenate(histories), offsets)
    with torch.no_grad():
        seq = model.represent({k: torch.from_numpy(v) for k, v in packed.items()})
        scores = model.scores(seq, matrix).float()
    scores[:, :FIRST_ITEM_ID] = float("-inf")
    top = torch.topk(scores, K, dim=1)
    return vocab[top.indices.numpy()], top.values.numpy()


def test_served_text_model_matches_offline_and_adds_items_live(tmp_path, etl, capsys):
    out = tmp_path / "recformer"
    recipe = {"workdir": str(tmp_path / "w"),
              "recformer": {**RECFORMER, "data_dir": str(etl.output_dir), "output_dir": str(out)},
              "export": {"repository": str(tmp_path / "repo"), "top_k": K}}
    config = tmp_path / "recformer.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(config)]) == 0
    assert main(["export", "--config", str(config)]) == 0
    repo = tmp_path / "repo"
    assert versions(repo / MODEL) == [1]

    vocab = item_vocabulary(load_workflow(Path(etl.output_dir) / "workflow"))
    rows = pd.read_parquet(Path(etl.output_dir) / "test.parquet")[ITEM_LIST]
    histories = [np.asarray(r[:-1], dtype=np.int64) for r in rows if len(r) >= 2][:200]
    model, tokens = load_recformer(out, dropout=0.0).eval(), ItemTokens.load(out)
    matrix = encode_items(model, tokens, 256)
    want_ids, want_scores = offline_top(model, tokens, matrix, vocab, histories)

    items = read_items(ItemSource())
    known = vocab[histories[0][-1]]  # an item of a real history: its text, under a new id
    twin = items[items["item_id"] == known].copy()
    twin["item_id"] = new_id = int(vocab.max()) + 1000
    for column in ML100K_ATTRIBUTES.values():  # a list attribute (title words, genres): space-separated
        if isinstance(twin[column].iloc[0], (list, np.ndarray)):
            twin[column] = twin[column].map(" ".join)
    columns = ["item_id", *ML100K_ATTRIBUTES.values()]
    good = tmp_path / "new_items.csv"
    twin[columns].to_csv(good, index=False)
    for name, frame, problem in (
            ("missing.csv", twin[columns[:-1]], "missing column(s) ['release_year']"),
            ("dupes.csv", pd.concat([twin, twin])[columns], f"duplicate item_id(s) [{new_id}]"),
            ("present.csv", twin.assign(item_id=known)[columns], f"item_id(s) [{known}] are already")):
        frame.to_csv(tmp_path / name, index=False)
        capsys.readouterr()
        assert main(["items", "add", "--file", str(tmp_path / name), "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert problem in err and "Traceback" not in err, err
    assert versions(repo / MODEL) == [1]  # nothing published by a bad file

    with TritonServer(repo, model_control="explicit", load_models=[ENSEMBLE]) as srv, \
            RecommenderClient(srv.grpc_url, timeout_s=60) as client, \
            ModelControl(srv.grpc_url, key=srv.repository_key) as ctl:
        raw = [vocab[h].tolist() for h in histories]
        served = [r for at in range(0, len(raw), 50) for r in client.recommend_batch(raw[at:at + 50], k=K)]
        assert [r.item_ids for r in served] == want_ids.tolist()
        np.testing.assert_allclose([r.scores for r in served], want_scores, atol=1e-5, rtol=0)
        before = client.recommend([known], k=K)
        assert new_id not in before.item_ids

        pid = srv.pid
        key = tmp_path / "key"
        key.write_text(srv.repository_key)
        assert main(["items", "add", "--file", str(good), "--config", str(config),
                     "--url", srv.grpc_url, "--key-file", str(key)]) == 0
        assert ctl.member_versions(ENSEMBLE) == {PREPROCESS: 2, MODEL: 2} and srv.pid == pid
        after = client.recommend([known], k=K)
        # its text is the history's item's: it ranks at the top, where the item itself does
        assert new_id in after.item_ids[:2] and known in after.item_ids[:2], after
        score = after.scores[after.item_ids.index(new_id)]
        assert score == pytest.approx(1 / model.cfg.temperature, abs=1e-3)
        # a history holding the new item is packed from its text: it reads as the item's twin
        assert known in client.recommend([new_id], k=K).item_ids[:2]
        # the rest of the catalogue answers as before: the old items' matrix rows are unchanged
        again = client.recommend_batch(raw[:50], k=K)
        for got, old in zip(again, want_ids[:50].tolist()):
            kept = [i for i in got.item_ids if i != new_id]
            assert kept == old[:len(kept)]
