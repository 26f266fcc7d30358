"""`torchrun --nproc_per_node 2` (gloo, CPU) against one process with the same global batch, on
real MovieLens-100k: the same weights and metrics up to float summation order, and only rank 0
writes files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.evaluation import POLICIES
from seqrec.training.model import SequenceRecommender
from seqrec.training.run_log import LOG_DIR
from seqrec.training.trainer import STATE_FILE, TrainConfig, train

pytestmark = pytest.mark.slow

# Deterministic inside a step (CLM, dropout 0): the runs can be compared number for number.
# patience 1: where validation NDCG@10 falls (it depends on the CPU's float rounding: on some
# machines it never does in 3 epochs) the ranks must agree to stop early, on the same epoch.
TRAIN = dict(epochs=3, batch_size=64, lr=0.002, patience=1, seed=42,
             model={"backbone": "gpt2", "task": "clm", "d_model": 16, "n_layers": 1, "n_heads": 2,
                    "dropout": 0.0})
# With side features each rank gathers them with its slice and evaluation shards them with the
# histories.
SIDE = {**TRAIN, "model": {**TRAIN["model"], "side_features": {"categorical": ["release_year"],
                                                               "continuous": ["rating"]}}}


@pytest.fixture(scope="module")
def side_etl(tmp_path_factory, ml100k):
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = tmp_path_factory.mktemp("ddp_etl") / "data"
    return run_etl(ETLConfig(output_dir=str(out), max_len=50, categorical=["release_year"],
                             continuous=["rating"]), interactions=ml100k, progress=False)


# Loaded by every process of the torchrun job (PYTHONPATH): records each file a rank opens for
# writing, creates, renames or removes under the watched folder, through Python's audit hooks.
AUDIT = """
import atexit, os, sys
if "RANK" in os.environ and "SEQREC_AUDIT" in os.environ:
    _watch, _log = os.environ["SEQREC_AUDIT_WATCH"], []
    _write = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (mode and set(mode) & set("wax+")) or (flags or 0) & _write:
                _log.append(f"{event} {path}")
        elif event == "os.rename":
            _log.append(f"{event} {args[0]} -> {args[1]}")
        elif event in ("os.mkdir", "os.remove"):
            _log.append(f"{event} {args[0]}")

    sys.addaudithook(_hook)
    atexit.register(lambda: open(os.path.join(os.environ["SEQREC_AUDIT"], "rank" + os.environ["RANK"]),
                                 "w").write("\\n".join(x for x in _log if _watch in x)))
"""


def torchrun(config: Path, output_dir: Path, audit: Path) -> subprocess.CompletedProcess:
    hook = audit / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(textwrap.dedent(AUDIT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "SEQREC_AUDIT": str(audit), "SEQREC_AUDIT_WATCH": str(output_dir)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seqrec.cli", "train", "--config", str(config), "--output-dir", str(output_dir)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("variant", ["items", "side-features"])
def test_torchrun_two_processes_equal_one(variant, etl, side_etl, tmp_path):
    etl, recipe = (etl, TRAIN) if variant == "items" else (side_etl, SIDE)
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"train": {"data_dir": etl.output_dir, **recipe}}))
    ddp_dir, audit = tmp_path / "ddp", tmp_path / "audit"
    run = torchrun(config, ddp_dir, audit)
    assert run.returncode == 0, run.stderr[-3000:]
    one = train(TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path / "one"), **recipe),
                progress=False)

    two = json.loads((ddp_dir / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["epochs_run"] == one.epochs_run
    assert two["best_epoch"] == one.best_epoch
    assert two["losses"] == pytest.approx(one.losses, rel=1e-6)
    for split in ("valid", "test"):
        assert two[split].keys() == getattr(one, split).keys()
        for name, value in getattr(one, split).items():
            if isinstance(value, float) or name in POLICIES:  # both policies: summed over the shards
                assert two[split][name] == pytest.approx(value, abs=1e-4), (split, name)
            elif name == "by_history_length":
                for bucket, part in value.items():
                    assert two[split][name][bucket]["sessions"] == part["sessions"]
                    for policy in POLICIES:
                        assert two[split][name][bucket][policy] == pytest.approx(part[policy], abs=1e-4)
            else:
                assert two[split][name] == value, (split, name)
    # the last epoch's weights (trainer_state) and the best epoch's (model.pt)
    for name in (STATE_FILE, "model.pt"):
        a = torch.load(tmp_path / "one" / name, weights_only=False)
        b = torch.load(ddp_dir / name, weights_only=False)
        a, b = (a["model"], b["model"]) if name == STATE_FILE else (a, b)
        assert a.keys() == b.keys()
        for key in a:
            x, y = b[key], a[key]
            if key.endswith("attn.c_attn.bias"):
                # GPT-2's key bias has no gradient (softmax ignores a per-query constant): AdamW
                # turns the float noise of its zero gradient into lr-sized steps, so only the
                # query and value thirds are compared
                third = x.numel() // 3
                x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
            torch.testing.assert_close(x, y, atol=1e-4, rtol=0, msg=f"{name} {key}")
    # training moved the weights far beyond the tolerance: the equality is not that of two
    # untouched initialisations
    torch.manual_seed(recipe["seed"])
    fresh = SequenceRecommender(load_checkpoint(tmp_path / "one").cfg).state_dict()
    assert max((fresh[k] - a[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-2

    # only rank 0 wrote (and printed); rank 1 touched nothing in the output folder
    written = (audit / "rank0").read_text().splitlines()
    assert {"model.pt", "config.json", "metrics.json", STATE_FILE} <= {Path(w).name for w in written}, written
    assert (audit / "rank1").read_text() == ""
    assert run.stdout.count("checkpoint:") == 1
    assert {p.name for p in ddp_dir.iterdir()} == {"config.json", "model.pt", "metrics.json", STATE_FILE, LOG_DIR}
