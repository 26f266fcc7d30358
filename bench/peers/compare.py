"""seqrec, Transformers4Rec 23.12 and Cornac 3.0.1 side by side: the same splits, the same
tuning grid and budget, one evaluation (bench/peers/protocol.py), one table.

    bench/peers/setup_envs.sh                     # the peers' virtualenvs, once
    python bench/peers/compare.py [--datasets ml-100k t4r daily] [--libraries ...] [--combos ...]
                                  [--lr 1e-3 3e-3] [--dropout 0.1] [--epochs 20] [--patience 3]
                                  [--epochs-per-day 1]    # the daily dataset: train day t, test t+1

Each library runs each combo it supports at every grid point in its own process (its own
virtualenv for the peers); the grid point kept per library x combo is the best on validation
NDCG@10 (seen items kept), and test is read only for that point. Results merge into
bench/results/peers.json keyed by dataset / library / combo / grid point, so runs can be split:
each run is merged into the file as it stands when the run ends (two compare.py processes do not
overwrite each other's results), and a runner's own output can be merged afterwards:

    python bench/peers/run_cornac.py --splits S --combo C --lr L --dropout D ... --out run.json
    python bench/peers/compare.py --merge run.json --datasets ml-100k --libraries cornac
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "peers.json"
FIGURE = ROOT / "docs" / "figures" / "peers.png"
sys.path[:0] = [str(HERE)]
from splits import BUILDERS, WINDOWS, build  # noqa: E402

VENVS = Path(os.environ.get("SEQREC_PEERS_VENVS", ROOT / ".venv-peers"))
RUNNERS = {
    "seqrec": (Path(sys.executable), HERE / "run_seqrec.py"),
    "transformers4rec": (VENVS / "transformers4rec" / "bin" / "python", HERE / "run_transformers4rec.py"),
    "cornac": (VENVS / "cornac" / "bin" / "python", HERE / "run_cornac.py"),
}
# what each library can run (None: the combo is not in the library)
SUPPORT = {
    "seqrec": {"gpt2-clm", "gpt2-clm-last", "bert-clm-last", "bert-mlm", "xlnet-mlm", "xlnet-plm",
               "electra-rtd", "llama-clm"},
    "transformers4rec": {"gpt2-clm", "bert-mlm", "xlnet-mlm", "xlnet-plm", "electra-rtd"},
    "cornac": {"gpt2-clm", "gpt2-clm-last", "bert-clm-last", "bert-mlm", "xlnet-mlm", "xlnet-plm",
               "electra-rtd"},
}
WHY_NOT = {
    ("transformers4rec", "gpt2-clm-last"): "no last-position (prefix) CLM in Transformers4Rec",
    ("transformers4rec", "bert-clm-last"): "no last-position (prefix) CLM in Transformers4Rec",
    ("transformers4rec", "llama-clm"): "no Llama backbone in Transformers4Rec 23.12",
    ("cornac", "llama-clm"): "TransformerRec has bert / gpt2 / xlnet / electra backbones only",
}
INCREMENTAL = {"daily"}  # datasets of daily windows: train on day t, evaluate on day t+1 (epochs = per day)
COMBOS = ["gpt2-clm", "gpt2-clm-last", "bert-mlm", "xlnet-plm", "electra-rtd"]


def epochs_for(dataset: str, args) -> int:
    """Epochs per run: per day on a daily dataset."""
    return args.epochs_per_day if dataset in INCREMENTAL else args.epochs


def grid_key(lr: float, dropout: float) -> str:
    return f"lr{lr:g}-do{dropout:g}"


def run_one(library: str, combo: str, splits: Path, lr: float, dropout: float, args) -> dict:
    python, script = RUNNERS[library]
    if not python.exists():
        raise SystemExit(f"{python} missing: run bench/peers/setup_envs.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [str(python), str(script), "--splits", str(splits), "--combo", combo, "--lr", str(lr),
               "--dropout", str(dropout),
               "--epochs", str(epochs_for(splits.stem, args)), "--patience", str(args.patience),
               "--max-seconds", str(args.max_seconds), "--max-len", str(WINDOWS[splits.stem]), "--threads", str(args.threads), "--out", str(out)]
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed",
                    "seconds": time.perf_counter() - started}
        result = json.loads(out.read_text())
        result["wall_seconds"] = time.perf_counter() - started
        return result


def best_points(runs: dict) -> dict:
    """Per dataset / library / combo: the grid point best on validation NDCG@10 (seen kept)."""
    out = {}
    for dataset, libraries in runs.items():
        for library, combos in libraries.items():
            for combo, points in combos.items():
                good = {k: v for k, v in points.items() if "valid" in v}
                if not good:
                    continue
                key = max(good, key=lambda k: good[k]["valid"]["kept"]["ndcg@10"])
                out.setdefault(dataset, {}).setdefault(library, {})[combo] = {
                    "grid_point": key, "valid": good[key]["valid"], "test": good[key]["test"],
                    "best_epoch": good[key].get("best_epoch"), "epochs_run": good[key].get("epochs_run"),
                    "seconds_per_epoch": good[key].get("seconds_per_epoch")}
    return out


def record(dataset: str, library: str, result: dict, meta: dict | None = None) -> dict:
    """Merge one run (a runner's output: its config names the combo and grid point) into
    peers.json as the file stands now, recompute the best points, write it whole (a temporary
    file renamed over it) and redraw the figure. meta: the grid and machine of a compare.py run."""
    cfg = result.get("config") or {}
    if not {"combo", "lr", "dropout"} <= set(cfg):
        raise SystemExit("a run to merge needs its config (combo, lr, dropout): not a runner's output")
    combo, key = cfg["combo"], grid_key(float(cfg["lr"]), float(cfg["dropout"]))
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    report["runs"].setdefault(dataset, {}).setdefault(library, {}).setdefault(combo, {})[key] = result
    report["best"] = best_points(report["runs"])
    report["not_run"] = [f"{lib} {c}: {why}" for (lib, c), why in WHY_NOT.items()]
    meta = dict(meta or {})
    if "grid" in meta and "grid" in report:  # the grid is what every run so far has covered
        meta["grid"] = {**meta["grid"], **{axis: sorted(set(report["grid"].get(axis, [])) | set(meta["grid"][axis]))
                                           for axis in ("lr", "dropout")}}
    report.update(meta)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(RESULTS)
    plot(report, FIGURE)
    return report


def plot(report: dict, path: Path = FIGURE) -> None:
    """Test NDCG@10 (seen kept) per dataset: a group of bars per combo, one bar per library."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = report["best"]
    fig, axes = plt.subplots(1, len(best), figsize=(6 * len(best), 4), squeeze=False)
    libraries = list(RUNNERS)
    for ax, (dataset, by_library) in zip(axes[0], best.items()):
        combos = sorted({c for combos in by_library.values() for c in combos})
        width = 0.8 / len(libraries)
        for i, library in enumerate(libraries):
            values = [by_library.get(library, {}).get(c, {}).get("test", {}).get("kept", {}).get("ndcg@10", 0.0)
                      for c in combos]
            ax.bar([x + i * width for x in range(len(combos))], values, width, label=library)
        ax.set_xticks([x + width * (len(libraries) - 1) / 2 for x in range(len(combos))], combos,
                      rotation=30, ha="right")
        ax.set_title(f"{dataset}: test NDCG@10 (seen kept)")
    axes[0][0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--libraries", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    p.add_argument("--combos", nargs="+", default=COMBOS)
    p.add_argument("--lr", nargs="+", type=float, default=[1e-3, 3e-3])
    p.add_argument("--dropout", nargs="+", type=float, default=[0.1])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--epochs-per-day", type=int, default=1, help="daily windows: epochs on each day")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=240.0, help="training wall-clock cap per run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--splits-dir", default=str(Path(tempfile.gettempdir()) / "seqrec-peers-splits"))
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the JSON")
    p.add_argument("--merge", metavar="RUN_JSON",
                   help="merge a runner's output (run_*.py --out) into peers.json and stop")
    args = p.parse_args()

    if args.plot_only:
        return plot(json.loads(RESULTS.read_text()))
    if args.merge:
        if len(args.datasets) != 1 or len(args.libraries) != 1:
            raise SystemExit("--merge needs exactly one --datasets and one --libraries (the run's)")
        result = json.loads(Path(args.merge).read_text())
        report = record(args.datasets[0], args.libraries[0], result)
        point = report["runs"][args.datasets[0]][args.libraries[0]][result["config"]["combo"]]
        print(f"merged {args.merge}: {len(point)} grid point(s) of {result['config']['combo']} "
              f"({args.datasets[0]}, {args.libraries[0]})")
        return None
    for dataset in args.datasets:
        splits = build(dataset, Path(args.splits_dir))
        for combo in args.combos:
            for library in args.libraries:
                if combo not in SUPPORT[library]:
                    continue
                for lr in args.lr:
                    for dropout in args.dropout:
                        result = run_one(library, combo, splits, lr, dropout, args)
                        result.setdefault("config", {}).update(combo=combo, lr=lr, dropout=dropout)
                        shown = result.get("valid", {}).get("kept", {}).get("ndcg@10", float("nan"))
                        print(f"{dataset:8} {library:17} {combo:14} {grid_key(lr, dropout):14} "
                              f"valid ndcg@10 {shown:.4f}  {result.get('error', '')}", flush=True)
                        grid_name = "daily_grid" if dataset in INCREMENTAL else "grid"  # its own budget
                        record(dataset, library, result, meta={
                            grid_name: {"lr": args.lr, "dropout": args.dropout,
                                        "epochs": epochs_for(dataset, args),
                                     "patience": args.patience, "max_seconds": args.max_seconds,
                                     "d_model": 64, "layers": 2, "heads": 2, "max_len": WINDOWS,
                                     "batch_size": 64, "threads": args.threads},
                            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                        "load_average": list(os.getloadavg())}})  # after every run


if __name__ == "__main__":
    main()
