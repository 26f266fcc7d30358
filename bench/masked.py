"""Why the masked tasks (MLM, PLM, RTD) stall or collapse, measured: short runs on real data
(MovieLens-100k leave-last-out, and the real grouped session sample shipped in the
transformers4rec 23.12.0 sdist), each candidate fix on and off, validation NDCG@10 per epoch.

    python bench/masked.py [--only NAME ...] [--epochs N] [--list]

Writes bench/results/masked.json (merged with earlier runs, keyed by experiment name). Only
validation figures are recorded: the defaults are chosen from these, never from test.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "masked.json"
sys.path.insert(0, str(Path(__file__).parent))
from bench_data import ml100k_data, t4r_data  # noqa: E402


DATASETS = {"ml-100k": ml100k_data, "t4r": t4r_data}


def run(data_dir: str, model: dict, epochs: int, lr: float, batch_size: int | None = 64,
        seed: int = 42, train: dict | None = None) -> dict:
    """Trains `epochs` epochs (no early stopping) and evaluates on valid after each one.
    batch_size None: the trainer's default rule (training/loop.py::default_batch_size)."""
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.trainer import TrainConfig, train as fit

    train = dict(train or {})
    batch_size = train.pop("batch_size", batch_size)
    cfg = TrainConfig(data_dir=data_dir, output_dir=tempfile.mkdtemp(prefix="masked-"), epochs=epochs,
                      lr=lr, batch_size=batch_size, seed=seed, patience=epochs, model=model,
                      **train)
    started = time.perf_counter()
    result = fit(cfg, progress=False)
    return {"valid_ndcg10": [round(v, 5) for v in result.valid_history],
            "loss": [round(v, 4) for v in result.losses],
            "best_valid_ndcg10": round(max(result.valid_history), 5),
            "batch_size": result.batch_size,
            "best_epoch": int(np.argmax(result.valid_history)) + 1,
            "popularity_valid_ndcg10": round(result.popularity_valid["ndcg@10"], 5),
            # the best-validation epoch's weights on test: reported, never used to choose
            "test_ndcg10": round(result.test["ndcg@10"], 5),
            "popularity_test_ndcg10": round(result.popularity_test["ndcg@10"], 5),
            "uniform_loss": round(math.log(len(item_vocabulary(load_workflow(Path(data_dir) / "workflow")))), 4),
            "seconds": round(time.perf_counter() - started, 1)}


GRID = [(lr, dropout) for lr in (1e-3, 3e-3) for dropout in (0.1, 0.3)]
SMALL = {"d_model": 64, "n_layers": 2, "n_heads": 2}
# The options as they were before these measurements (pinned: the defaults have since changed).
BASE = {"d_model": 64, "n_layers": 2, "n_heads": 2, "mask_last_prob": 0.0, "embedding_std": 0.02,
        "embedding_norm": False, "rtd_lambda": 50.0}


# Candidate fixes, each alone on top of the baseline: (model options, train options).
VARIANTS = {
    "mask-last-0.2": ({"mask_last_prob": 0.2}, {}),
    "mask-last-0.5": ({"mask_last_prob": 0.5}, {}),
    "mask-last-1.0": ({"mask_last_prob": 1.0}, {}),
    "mask-last-1.0-lr3e-3": ({"mask_last_prob": 1.0}, {"lr": 3e-3}),
    "lr3e-3": ({}, {"lr": 3e-3}),
    "rtd-lambda-1-mask-last-1.0": ({"rtd_lambda": 1.0, "mask_last_prob": 1.0}, {}),
    "emb-norm-mask-last-1.0": ({"embedding_norm": True, "mask_last_prob": 1.0}, {}),
    "emb-norm-mask-last-0.5": ({"embedding_norm": True, "mask_last_prob": 0.5}, {}),
    "warmup-100": ({}, {"warmup_steps": 100}),
    "warmup-100-linear": ({}, {"warmup_steps": 100, "lr_decay": "linear"}),
    "emb-std-0.125": ({"embedding_std": 0.125}, {}),
    "emb-norm": ({"embedding_norm": True}, {}),
    "mask-prob-0.1": ({"mask_prob": 0.1}, {}),
    "mask-prob-0.4": ({"mask_prob": 0.4}, {}),
    "smooth-0.1": ({"label_smoothing": 0.1}, {}),
    "rtd-lambda-1": ({"rtd_lambda": 1.0}, {}),
    "rtd-lambda-10": ({"rtd_lambda": 10.0}, {}),
    "positions-end": ({"positions": "end"}, {}),
    "mask-last-1.0-positions-end": ({"mask_last_prob": 1.0, "positions": "end"}, {}),
    "mask-last-1.0-mask-prob-0.05": ({"mask_last_prob": 1.0, "mask_prob": 0.05}, {}),
    "mask-last-1.0-batch-64": ({"mask_last_prob": 1.0}, {"batch_size": 64}),
    "mask-last-1.0-batch-16": ({"mask_last_prob": 1.0}, {"batch_size": 16}),
}


# Candidates together, per task, across the grid (explicit, so the runs stay comparable whatever
# the defaults): "fixed" for PLM is what became its default; the MLM / RTD combinations were
# measured and not kept.
FIXED = {
    "mlm": ("combined", {"mask_last_prob": 1.0, "embedding_std": 0.125}),
    "plm": ("fixed", {"embedding_norm": True}),
    "rtd": ("combined", {"mask_last_prob": 1.0, "embedding_std": 0.125, "rtd_lambda": 1.0}),
}


def experiments() -> dict[str, dict]:
    """name -> (dataset, model options, lr, epochs)."""
    exps = {}
    for data in ("ml-100k", "t4r"):
        for backbone, task in (("bert", "mlm"), ("xlnet", "plm"), ("electra", "rtd"), ("xlnet", "mlm")):
            for variant, (model, train) in VARIANTS.items():
                if variant.startswith("rtd") != (task == "rtd") and variant.startswith("rtd"):
                    continue
                train = dict(train)
                lr = train.pop("lr", 1e-3)
                exps[f"{data}/{backbone}-{task}/lr{lr:g}-do0.1/{variant}"] = dict(
                    data=data, lr=lr, train=train, model={**BASE, "backbone": backbone, "task": task,
                                                            "dropout": 0.1, **model})
    for data in ("ml-100k", "t4r"):
        for backbone, task in (("bert", "mlm"), ("xlnet", "plm"), ("electra", "rtd")):
            for lr, dropout in GRID:
                exps[f"{data}/{backbone}-{task}/lr{lr:g}-do{dropout}/baseline"] = dict(
                    data=data, lr=lr, model={**BASE, "backbone": backbone, "task": task,
                                             "dropout": dropout})
    # single fixes at a second grid point
    for lr, dropout, variant in ((3e-3, 0.3, "mask-last-1.0"), (3e-3, 0.3, "baseline"), (3e-3, 0.3, "emb-std-0.125")):
        exps[f"t4r/bert-mlm/lr{lr:g}-do{dropout}/{variant}"] = dict(
            data="t4r", lr=lr, model={**BASE, "backbone": "bert", "task": "mlm", "dropout": dropout,
                                      **VARIANTS.get(variant, ({}, {}))[0]})
    for lr, dropout in GRID[1:]:
        exps[f"t4r/electra-rtd/lr{lr:g}-do{dropout}/rtd-lambda-1"] = dict(
            data="t4r", lr=lr, model={**BASE, "backbone": "electra", "task": "rtd", "dropout": dropout,
                                      "rtd_lambda": 1.0})
    # the kept fixes together, across the grid (FIXED: per task)
    for data, backbone, task in (("ml-100k", "bert", "mlm"), ("t4r", "bert", "mlm"), ("t4r", "xlnet", "plm"),
                                 ("t4r", "electra", "rtd"), ("ml-100k", "electra", "rtd"), ("ml-100k", "xlnet", "plm")):
        for lr, dropout in GRID:
            label, options = FIXED[task]
            exps[f"{data}/{backbone}-{task}/lr{lr:g}-do{dropout}/{label}"] = dict(
                data=data, lr=lr, model={**BASE, "backbone": backbone, "task": task, "dropout": dropout,
                                         **options})
    # the shipped defaults (no pinned options) on MovieLens, 10 epochs: the batch size against the
    # grid (the stall is a shortage of optimizer steps), then RTD's discriminator weight
    # (RTD pins its discriminator weight: its default changed with these runs)
    for backbone, task in (("bert", "mlm"), ("xlnet", "plm")):
        for lr, dropout in GRID:
            for batch in (16, 64):
                exps[f"ml-100k/{backbone}-{task}/lr{lr:g}-do{dropout}/defaults-batch-{batch}"] = dict(
                    data="ml-100k", lr=lr, epochs=10, train={"batch_size": batch},
                    model={**SMALL, "backbone": backbone, "task": task, "dropout": dropout})
    for lam in (1.0, 10.0, 50.0):
        for batch in (16, 64):
            exps[f"ml-100k/electra-rtd/lr0.001-do0.1/rtd-lambda-{lam:g}-batch-{batch}"] = dict(
                data="ml-100k", lr=1e-3, epochs=10, train={"batch_size": batch},
                model={**SMALL, "backbone": "electra", "task": "rtd", "dropout": 0.1, "rtd_lambda": lam})
    # RTD's generator is an MLM: the last item always masked (MLM's default) on top of lambda 1
    for batch in (16, 64):
        exps[f"ml-100k/electra-rtd/lr0.001-do0.1/rtd-lambda-1-mask-last-1.0-batch-{batch}"] = dict(
            data="ml-100k", lr=1e-3, epochs=10, train={"batch_size": batch},
            model={**SMALL, "backbone": "electra", "task": "rtd", "dropout": 0.1, "rtd_lambda": 1.0,
                   "mask_last_prob": 1.0})
    # the causal reference on the same harness: how fast a next-item task learns here
    for data in ("ml-100k", "t4r"):
        exps[f"{data}/gpt2-clm/lr0.001-do0.1/reference"] = dict(
            data=data, lr=1e-3, model={**BASE, "backbone": "gpt2", "task": "clm", "dropout": 0.1})
    return exps


def table(results: dict) -> str:
    """Best valid NDCG@10 (and its epoch) over the first `epochs` epochs, x popularity."""
    rows = ["| dataset / combo / grid point | variant | epochs | best valid NDCG@10 (epoch) | x popularity |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        data, combo, point, variant = name.split("/")
        rows.append(f"| {data} {combo} {point} | {variant} | {r['epochs']} | {r['best_valid_ndcg10']:.4f} "
                    f"({r['best_epoch']}) | {r['best_valid_ndcg10'] / r['popularity_valid_ndcg10']:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="substrings of experiment names")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the recorded runs as markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exps = experiments()
    if args.only:
        exps = {n: e for n, e in exps.items() if any(s in n for s in args.only)}
    if args.list:
        print("\n".join(exps))
        return
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name, exp in exps.items():
        epochs = args.epochs or exp.get("epochs", 20)
        out = run(DATASETS[exp["data"]](), exp["model"], epochs, exp["lr"], train=exp.get("train"))
        results[name] = {**exp, "epochs": epochs, **out}
        print(f"{name:60s} best {out['best_valid_ndcg10']:.4f}@{out['best_epoch']:<3d} pop "
              f"{out['popularity_valid_ndcg10']:.4f} loss {out['loss'][0]:.2f}->{out['loss'][-1]:.2f} "
              f"(uniform {out['uniform_loss']:.2f}) {out['seconds']:.0f}s", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=1))


if __name__ == "__main__":
    sys.exit(main())
