"""The ranker trained through the command line on real MovieLens-100k ratings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import seqrec_cli

pytestmark = pytest.mark.slow


def test_rank_cli_trains_a_ranker_clearly_better_than_chance(tmp_path, etl):
    out = tmp_path / "ranker"
    recipe = {"rank": {"data_dir": etl.output_dir, "output_dir": str(out), "epochs": 1, "batch_size": 512,
                       "lr": 0.002, "train_eval_examples": 2000, "eval_batch_size": 2048,
                       "labels": {"max_history": 10},
                       "init": {"strategy": "sparse_freeze", "pretrain": {"epochs": 1, "batch_size": 512, "lr": 0.005}},
                       "model": {"d_model": 16, "n_layers": 1, "n_heads": 2}}}
    path = tmp_path / "ranker.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = seqrec_cli("rank", "--config", str(path), timeout=300)  # two shared cores
    assert "test" in run.stdout and "sparse_freeze" in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.58 and metrics["test"]["gauc"] > 0.55
    assert metrics["test"]["logloss"] < 0.69  # better than a constant 0.5
    assert sorted(metrics["frozen"]) == ["category_embedding.weight", "item_embedding.weight"]
    assert metrics["pretrain_losses"] and metrics["examples"]["test"] > 10_000
    assert {"ranker.pt", "generative.pt", "metrics.json"} <= {p.name for p in out.iterdir()}
    # a strategy the ranker does not know: exit 2, the dotted path named, no traceback
    recipe["rank"]["init"]["strategy"] = "half"
    path.write_text(yaml.safe_dump(recipe))
    bad = seqrec_cli("rank", "--config", str(path), check=False)
    assert bad.returncode == 2 and "rank.init.strategy: 'half'" in bad.stderr and "Traceback" not in bad.stderr
