"""A tiny Recformer trained end to end through the CLI on MovieLens-100k: preprocess, then `seqrec
train` with a `recformer` section (pretraining, both fine-tuning stages), 20% of the items held
out of all training and ranked as cold targets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from seqrec.cli import main

pytestmark = pytest.mark.slow

RECIPE = {
    "etl": {"dataset": "movielens-100k", "max_len": 100, "min_len": 3},
    "recformer": {
        "vocab_size": 1500, "cold_fraction": 0.2, "seed": 7, "valid_rows": 150, "eval_batch_size": 128,
        "items": {"budget": {"title": 8, "genre": 6, "year": 1}},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "attention_window": 16,
                  "max_tokens": 48, "max_items": 3, "dropout": 0.0},
        "pretrain": {"epochs": 2, "steps_per_epoch": 10, "batch_size": 32, "lr": 0.003},
        "finetune": {"variant": "fix", "stage1_epochs": 2, "stage2_epochs": 1, "steps_per_epoch": 10,
                     "batch_size": 32, "lr": 0.003, "patience": 2},
    },
}


def test_tiny_recformer_learns_and_ranks_cold_items(tmp_path, capsys):
    recipe = dict(RECIPE, workdir=str(tmp_path / "w"))
    path = tmp_path / "recformer.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["preprocess", "--config", str(path)]) == 0
    assert main(["train", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "cold" in printed and "warm" in printed
    out = tmp_path / "w" / "recformer"
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("recformer.json", "model.pt", "item_matrix.npy", "tokenizer.json", "item_tokens.npz",
                 "held_out.npy", "pretrained/model.pt"):
        assert (out / name).is_file(), name
    held = np.load(out / "held_out.npy")
    assert metrics["held_out_items"] == int(held.sum()) == round(0.2 * (metrics["num_items"] - 3))
    log = metrics["log"]
    pre = [e for e in log if e["stage"] == 0]
    stage1 = [e for e in log if e["stage"] == 1]
    assert [e["epoch"] for e in pre] == [1, 2] and len(stage1) >= 1
    # pretraining learns: its MLM loss falls (the in-batch contrastive term barely moves from
    # ln(batch) in 20 steps of a model this small, so it is not what this asserts)
    assert pre[1]["mlm"] < pre[0]["mlm"]
    assert stage1[-1]["loss"] < np.log(metrics["num_items"])  # below a uniform softmax's loss
    test = metrics["test"]
    assert test["all"]["rows"] == test["warm"]["rows"] + test["cold"]["rows"] == metrics["test_rows"]
    assert test["cold"]["rows"] > 50
    # cold targets are ranked (popularity ranks every cold item last: it never saw one); this
    # budget is too small for the tiny model to rank clearly above chance (see docs/recformer.md)
    assert test["cold"]["mrr"] > 1 / (metrics["num_items"] / 2), test  # above a random rank's MRR scale
    assert metrics["encode_items_per_s"] > 0 and metrics["pretrain_tokens_per_s"] > 0
    assert 0 < metrics["reencode_share"] < 1


def test_recformer_reads_item_text_from_a_recbole_text_file(tmp_path):
    """`items.path` to a RecBole `.text` file (`item_id:token text:token_seq`, the layout the
    text-based models use), written here from the real ml-100k.item minus 40 items: the model
    is trained on that text, and exactly the items the file leaves out have no tokens."""
    import pandas as pd

    from seqrec.preprocessing.datasets import movielens_100k_dir
    from seqrec.preprocessing.token_pack import ItemTokens
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

    items = pd.read_csv(movielens_100k_dir() / "ml-100k.item", sep="\t", quoting=3, dtype=str,
                        keep_default_na=False)
    items.columns = [c.split(":")[0] for c in items.columns]
    left_out = set(items["item_id"].astype(int).to_numpy()[:40])
    kept = items[~items["item_id"].astype(int).isin(left_out)]
    text_file = tmp_path / "ml-100k.text"
    text_file.write_text("item_id:token\ttext:token_seq\n" + "".join(
        f"{i}\t{t} {g}\n" for i, t, g in zip(kept["item_id"], kept["movie_title"], kept["class"])))
    recformer = dict(RECIPE["recformer"], items={"path": str(text_file), "attributes": {"text": "text"},
                                                 "budget": 12},
                     pretrain={"epochs": 1, "steps_per_epoch": 5, "batch_size": 32, "lr": 0.003},
                     finetune={"variant": "training-only", "stage1_epochs": 1, "steps_per_epoch": 5,
                               "batch_size": 32, "lr": 0.003})
    recipe = dict(RECIPE, recformer=recformer, workdir=str(tmp_path / "w"))
    path = tmp_path / "recformer-text.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["preprocess", "--config", str(path)]) == 0
    assert main(["train", "--config", str(path)]) == 0
    out = tmp_path / "w" / "recformer"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["items"]["path"] == str(text_file)
    vocabulary = item_vocabulary(load_workflow(tmp_path / "w" / "data" / "workflow"))
    has_tokens = ItemTokens.load(out).lengths > 0
    real = vocabulary >= 0  # reserved ids have no item
    assert (has_tokens == (real & ~np.isin(vocabulary, list(left_out)))).all()
    assert metrics["test"]["all"]["rows"] == metrics["test_rows"] > 0
