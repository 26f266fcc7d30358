"""Wall time of `seqrec train` in 1 process against `torchrun --nproc_per_node N` (gloo, CPU) on
MovieLens-100k with the same recipe and global batch; prints a table, writes
bench/results/ddp.json.

    python bench/ddp.py                      # the demo recipe, 4 epochs, 1 vs 2 processes
    python bench/ddp.py --dropout 0          # deterministic steps: the weights agree too

Each run is a fresh command (imports, data loading and evaluation included). Early stopping is
off (patience = epochs) so the runs do the same number of steps. With dropout > 0 the runs draw
different dropout masks on rank 1, so only the quality is comparable, not the weights. A third
run (1 process, as many threads as each rank had) shows how far float summation order alone
moves the weights.
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

import torch
import yaml

# (This file is not named distributed.py: its folder comes first on sys.path and would shadow
# dask.distributed.)
ROOT = Path(__file__).resolve().parents[1]


def ensure_data(config: str) -> str:
    from seqrec.config import build, load_recipe
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    etl = build(ETLConfig, load_recipe(config).get("etl"))
    if not (Path(etl.output_dir) / "workflow").is_dir():
        run_etl(etl)
    return etl.output_dir


def run(nproc: int, recipe: Path, out: Path, threads: int) -> dict:
    launcher = (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [])
    cmd = [sys.executable, *launcher, "-m", "seqrec.cli", "train", "--config", str(recipe), "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {"processes": nproc, "threads_per_process": threads, "wall_s": round(wall, 2),
            "train_s": round(metrics["seconds"], 2), "epochs": metrics["epochs_run"],
            "final_loss": metrics["losses"][-1], "valid_ndcg@10": metrics["valid"]["ndcg@10"],
            "test_ndcg@10": metrics["test"]["ndcg@10"]}


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "ml-100k.yaml"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--dropout", type=float, help="override the recipe's dropout")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp.json"))
    args = p.parse_args()

    recipe = yaml.safe_load(Path(args.config).read_text())
    train = {**recipe["train"], "data_dir": ensure_data(args.config), "epochs": args.epochs,
             "patience": args.epochs}
    if args.dropout is not None:
        train["model"] = {**train.get("model", {}), "dropout": args.dropout}
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]  # other jobs on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump({"train": train}))
        # the same cores in total: one process with all threads, N processes sharing them
        one = run(1, path, Path(tmp) / "one", cores)
        many = run(args.nproc, path, Path(tmp) / "many", max(cores // args.nproc, 1))
        # the noise floor: one process again, with another thread count (float sums reordered)
        narrow = run(1, path, Path(tmp) / "narrow", max(cores // args.nproc, 1))
        diff = max_weight_difference(Path(tmp) / "one", Path(tmp) / "many")
        noise = max_weight_difference(Path(tmp) / "one", Path(tmp) / "narrow")
    print(f"{'processes':>9s}{'threads':>8s}{'wall s':>8s}{'train s':>8s}{'loss':>8s}{'valid ndcg@10':>14s}{'test ndcg@10':>13s}")
    for r in (one, many, narrow):
        print(f"{r['processes']:9d}{r['threads_per_process']:8d}{r['wall_s']:8.1f}{r['train_s']:8.1f}"
              f"{r['final_loss']:8.3f}{r['valid_ndcg@10']:14.4f}{r['test_ndcg@10']:13.4f}")
    print(f"largest weight difference of the best checkpoints: {args.nproc} processes vs 1: {diff:.2e}; "
          f"1 process with {one['threads_per_process']} vs {narrow['threads_per_process']} threads: {noise:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": {"cpus": cores, "platform": platform.platform(), "torch": torch.__version__,
                    "load_average_before": load},
        "recipe": train, "runs": [one, many, narrow], "max_weight_difference": diff,
        "max_weight_difference_1_process_other_threads": noise,
    }, indent=2))


if __name__ == "__main__":
    main()
