"""Scaling study of the ranker's five initialisation strategies on MovieLens-100k ratings.

For every size (d_model, n_layers) and seed: one generative pretraining of that size on the
training users' sequences, then one ranker per strategy, all with the same data, steps and
learning-rate schedule. Test AUC / GAUC / log loss on the held-out users, AUC on a fixed sample
of training examples (the train-test gap), and per strategy the power law
AUC = a - b * x^-c (x = dense parameters) fitted to the mean test AUC over seeds, with its R^2.

    python bench/scaling.py                      # needs `seqrec preprocess` (artifacts/ml-100k/data)
    python bench/scaling.py --budget-minutes 25  # stops adding sizes when the next would overrun
    python bench/scaling.py --append --sizes 32x2  # adds sizes to an earlier run's JSON

One torch thread: the study is sized for two shared CPU cores. Writes bench/results/scaling.json
(after every size, so a stopped run keeps what it measured) and docs/figures/scaling.png.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from seqrec.training.ranker.labels import LabelConfig
from seqrec.training.ranker.model import RankerModelConfig
from seqrec.training.ranker.strategies import STRATEGIES
from seqrec.training.ranker.trainer import (InitConfig, PretrainConfig, RankConfig, evaluate_ranker, fit,
                                            load_movielens, pretrain)
from seqrec.training.ranker.model import dense_parameter_count

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(16, 2), (32, 2), (64, 2), (96, 3), (128, 4)]  # (d_model, n_layers), cheapest first


def power_law(x, a, b, c):
    return a - b * np.power(x, -c)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> dict | None:
    """AUC = a - b * x^-c by least squares (scipy curve_fit); None with fewer than 4 sizes
    (3 parameters through 3 points is no fit)."""
    from scipy.optimize import curve_fit

    if len(x) < 4:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, b, c), _ = curve_fit(power_law, x, y, p0=(float(y.max()) + 0.01, 0.5, 0.3), maxfev=20000)
    except RuntimeError:
        return None
    pred = power_law(x, a, b, c)
    ss_res, ss_tot = float(np.sum((y - pred) ** 2)), float(np.sum((y - y.mean()) ** 2))
    # c > 3: the law is flat from the second size on, i.e. no trend a power law describes
    return {"a": float(a), "b": float(b), "c": float(c), "r2": 1 - ss_res / ss_tot if ss_tot else float("nan"),
            "degenerate": bool(c > 3)}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for strategy in STRATEGIES:
        rows = [r for r in runs if r["strategy"] == strategy]
        sizes = sorted({r["dense_parameters"] for r in rows})
        per_size = []
        for x in sizes:
            at = [r for r in rows if r["dense_parameters"] == x]
            test = np.array([r["test"]["auc"] for r in at])
            gap = np.array([r["train"]["auc"] - r["test"]["auc"] for r in at])
            per_size.append({"dense_parameters": x, "d_model": at[0]["d_model"], "n_layers": at[0]["n_layers"],
                             "seeds": len(at), "test_auc": float(test.mean()), "test_auc_std": float(test.std()),
                             "test_gauc": float(np.mean([r["test"]["gauc"] for r in at])),
                             "test_logloss": float(np.mean([r["test"]["logloss"] for r in at])),
                             "train_auc": float(np.mean([r["train"]["auc"] for r in at])),
                             "gap": float(gap.mean())})
        x = np.array([p["dense_parameters"] for p in per_size], dtype=float)
        y = np.array([p["test_auc"] for p in per_size])
        out[strategy] = {"sizes": per_size, "fit": fit_power_law(x, y) if len(x) else None,
                         "best_size": int(x[np.argmax(y)]) if len(x) else None,
                         "largest_minus_smallest": float(y[-1] - y[0]) if len(x) else None}
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for strategy, s in summary.items():
        x = np.array([p["dense_parameters"] for p in s["sizes"]], dtype=float)
        if not len(x):
            continue
        y = np.array([p["test_auc"] for p in s["sizes"]])
        err = np.array([p["test_auc_std"] for p in s["sizes"]])
        line = ax1.errorbar(x, y, yerr=err, marker="o", capsize=3, label=strategy)
        if s["fit"] and not s["fit"]["degenerate"]:
            grid = np.geomspace(x.min(), x.max(), 100)
            f = s["fit"]
            ax1.plot(grid, power_law(grid, f["a"], f["b"], f["c"]), "--", color=line[0].get_color(), alpha=0.6)
        ax2.plot(x, [p["gap"] for p in s["sizes"]], marker="o", label=strategy)
    for ax, title in ((ax1, "test AUC (mean ± std over seeds; dashed: power-law fit)"),
                      (ax2, "train AUC - test AUC")):
        ax.set_xscale("log")
        ax.set_xlabel("dense parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="artifacts/ml-100k/data")
    ap.add_argument("--budget-minutes", type=float, default=25.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(f"{d}x{n}" for d, n in SIZES), help="d_modelxn_layers,...")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--max-history", type=int, default=10)
    ap.add_argument("--train-examples", type=int, default=20_000)
    ap.add_argument("--test-examples", type=int, default=10_000)
    ap.add_argument("--append", action="store_true",
                    help="keep the runs already in --out (same setup) and add the sizes it lacks")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "scaling.png"))
    ap.add_argument("--plot-only", action="store_true",
                    help="recompute the summary in --out and redraw the figure, train nothing")
    args = ap.parse_args(argv)
    if args.plot_only:  # the summary recomputed from the runs, and the figure redrawn
        saved = json.loads(Path(args.out).read_text())
        saved["summary"] = summarise(saved["runs"])
        Path(args.out).write_text(json.dumps(saved, indent=2))
        plot(saved["summary"], Path(args.figure))
        return 0
    torch.set_num_threads(1)
    started = time.perf_counter()
    labels = LabelConfig(max_history=args.max_history)
    data = load_movielens(args.data_dir, labels)
    rng = np.random.default_rng(0)  # one fixed subsample for every run
    data.train = data.train.take(np.sort(rng.permutation(len(data.train))[: args.train_examples]))
    data.test = data.test.take(np.sort(rng.permutation(len(data.test))[: args.test_examples]))
    base = RankConfig(data_dir=args.data_dir, epochs=args.epochs, batch_size=256, lr=2e-3, lr_decay="cosine",
                      train_eval_examples=5000, labels=labels,
                      init=InitConfig(pretrain=PretrainConfig(epochs=args.pretrain_epochs, batch_size=128)))
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    runs, size_seconds, stopped, spent = [], [], None, 0.0
    if args.append and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text())
        runs, size_seconds, spent = previous["runs"], previous["size_seconds"], previous["seconds"]
        have = {(r["d_model"], r["n_layers"]) for r in runs}
        sizes = [s for s in sizes if s not in have]
    budget = args.budget_minutes * 60

    def write(done: bool):
        summary = summarise(runs)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "setup": {"dataset": "movielens-100k ratings (>= 4 positive)", "protocol": labels.protocol,
                      "max_history": args.max_history, "train_examples": len(data.train),
                      "test_examples": len(data.test), "test_users_quantile": labels.test_quantile,
                      "epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs, "batch_size": base.batch_size,
                      "lr": base.lr, "lr_decay": base.lr_decay, "seeds": args.seeds, "torch_threads": 1,
                      "budget_minutes": args.budget_minutes, "pretrain": asdict(base.init.pretrain)},
            "complete": done, "stopped": stopped, "seconds": spent + time.perf_counter() - started,
            "size_seconds": size_seconds, "summary": summary, "runs": runs}, indent=2))
        return summary

    for i, (d, n_layers) in enumerate(sizes):
        elapsed = time.perf_counter() - started
        # a size costs about (dense params ratio)^0.5 of the one before on one core (measured)
        if size_seconds and i:
            prev = size_seconds[-1]
            ratio = (d * d * n_layers) / (sizes[i - 1][0] ** 2 * sizes[i - 1][1])
            if elapsed + prev * ratio ** 0.5 > budget:
                stopped = f"next size {d}x{n_layers} projected past the {args.budget_minutes:g}-minute budget"
                break
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            cfg = replace(base, seed=seed, model=RankerModelConfig(d_model=d, n_layers=n_layers, n_heads=2,
                                                                   dropout=0.1))
            t = time.perf_counter()
            source, pre_losses = pretrain(cfg, data, torch.device("cpu"))
            pre_s = time.perf_counter() - t
            for strategy in STRATEGIES:
                t = time.perf_counter()
                run_cfg = replace(cfg, init=replace(cfg.init, strategy=strategy))
                model, fitted = fit(run_cfg, data, None if strategy == "none" else source, torch.device("cpu"))
                train_m, test_m = evaluate_ranker(run_cfg, model, data)
                runs.append({"d_model": d, "n_layers": n_layers, "seed": seed, "strategy": strategy,
                             "dense_parameters": dense_parameter_count(model), "train": train_m, "test": test_m,
                             "losses": fitted["losses"], "pretrain_losses": pre_losses,
                             "pretrain_seconds": pre_s, "seconds": time.perf_counter() - t})
                print(f"{d:4d}x{n_layers} seed {seed} {strategy:14s} dense {runs[-1]['dense_parameters']:>9,d} "
                      f"train auc {train_m['auc']:.4f} test auc {test_m['auc']:.4f} gauc {test_m['gauc']:.4f} "
                      f"({runs[-1]['seconds']:.0f} s)", flush=True)
        size_seconds.append(time.perf_counter() - t0)
        write(False)
    summary = write(True)
    plot(summary, Path(args.figure))
    print(f"\n{'strategy':15s}" + "".join(f"{p['dense_parameters']:>10,d}" for p in summary["none"]["sizes"])
          + "   fit a, b, c (R^2)")
    for strategy, s in summary.items():
        f = s["fit"]
        law = f"{f['a']:.4f}, {f['b']:.4f}, {f['c']:.3f} ({f['r2']:.3f})" if f else "-"
        print(f"{strategy:15s}" + "".join(f"{p['test_auc']:10.4f}" for p in s["sizes"]) + f"   {law}")
    print(f"total {time.perf_counter() - started:.0f} s; {stopped or 'all sizes run'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
