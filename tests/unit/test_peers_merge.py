"""bench/peers/compare.py: runs merge into peers.json as it stands, so split or parallel runs
keep each other's results, and a runner's own output merges afterwards."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "peers"))
import compare  # noqa: E402


def run(combo, lr, valid, test):
    metrics = lambda v: {"kept": {"ndcg@10": v}, "excluded": {"ndcg@10": v}}  # noqa: E731
    return {"config": {"combo": combo, "lr": lr, "dropout": 0.1}, "valid": metrics(valid),
            "test": metrics(test), "epochs_run": 3}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "RESULTS", tmp_path / "peers.json")
    monkeypatch.setattr(compare, "FIGURE", tmp_path / "peers.png")
    return tmp_path / "peers.json"


def test_runs_recorded_by_two_writers_both_survive_and_the_best_is_chosen_on_valid(results):
    compare.record("ml-100k", "cornac", run("bert-clm-last", 1e-3, 0.05, 0.04))
    # another process wrote in between: the file on disk, not a stale copy, is merged into
    on_disk = json.loads(results.read_text())
    on_disk["runs"]["ml-100k"]["seqrec"] = {"gpt2-clm": {"lr0.001-do0.1": run("gpt2-clm", 1e-3, 0.06, 0.05)}}
    results.write_text(json.dumps(on_disk))
    report = compare.record("ml-100k", "cornac", run("bert-clm-last", 3e-3, 0.07, 0.01))
    assert set(report["runs"]["ml-100k"]) == {"cornac", "seqrec"}
    assert set(report["runs"]["ml-100k"]["cornac"]["bert-clm-last"]) == {"lr0.001-do0.1", "lr0.003-do0.1"}
    best = report["best"]["ml-100k"]["cornac"]["bert-clm-last"]
    assert best["grid_point"] == "lr0.003-do0.1" and best["test"]["kept"]["ndcg@10"] == 0.01
    assert (results.parent / "peers.png").is_file() and not results.with_suffix(".json.tmp").exists()


def test_merge_from_the_command_line_and_a_file_that_is_not_a_run(results, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run.json"
    out.write_text(json.dumps(run("gpt2-clm-last", 1e-3, 0.07, 0.06)))
    monkeypatch.setattr(sys, "argv", ["compare.py", "--merge", str(out), "--datasets", "ml-100k",
                                      "--libraries", "cornac"])
    compare.main()
    assert "merged" in capsys.readouterr().out
    assert json.loads(results.read_text())["best"]["ml-100k"]["cornac"]["gpt2-clm-last"]["grid_point"] == "lr0.001-do0.1"
    out.write_text(json.dumps({"valid": {}}))
    with pytest.raises(SystemExit, match="needs its config"):
        compare.main()
    monkeypatch.setattr(sys, "argv", ["compare.py", "--merge", str(out)])
    with pytest.raises(SystemExit, match="exactly one"):
        compare.main()


def test_the_recorded_grid_is_every_point_run_so_far(results):
    grid = {"lr": [1e-3], "dropout": [0.1], "epochs": 15}
    compare.record("t4r", "seqrec", run("gpt2-clm", 1e-3, 0.1, 0.1), meta={"grid": grid})
    report = compare.record("t4r", "seqrec", run("gpt2-clm", 3e-3, 0.2, 0.1),
                            meta={"grid": {**grid, "lr": [3e-3], "dropout": [0.1, 0.3]}})
    assert report["grid"]["lr"] == [1e-3, 3e-3] and report["grid"]["dropout"] == [0.1, 0.3]
