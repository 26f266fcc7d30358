"""Quality with and without side features on MovieLens-100k: the recipe
configs/ml-100k-side-features.yaml (GPT-2 CLM) trained once per variant of its `side_features`
on the same preprocessed data and seed, early stopping on valid NDCG@10.

    python bench/side_features.py [--jobs 2]

Variants run `--jobs` at a time, one torch thread each; prints a table and writes
bench/results/side_features.json (valid and test NDCG@10 / Recall@10 per variant).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "ml-100k-side-features.yaml"
TIME = ["timestamp-hour_sin", "timestamp-hour_cos", "timestamp-weekday_sin", "timestamp-weekday_cos",
        "timestamp-since_prev"]
VARIANTS = {
    "items only": None,
    "all, concat + soft one-hot (the recipe)": {},
    "all, sum + linear": {"combine": "sum", "continuous_embedding": "linear"},
    "rating + release_year, concat + linear": {"continuous": ["rating"], "log_scale": [],
                                               "continuous_embedding": "linear"},
}


def run_variant(name: str, data_dir: str, out_root: str) -> dict:
    import torch

    from seqrec.config import build, load_recipe
    from seqrec.training.trainer import TrainConfig, train

    torch.set_num_threads(1)
    section = load_recipe(RECIPE)["train"]
    model = dict(section["model"])
    override = VARIANTS[name]
    if override is None:
        model.pop("side_features")
    else:
        model["side_features"] = {**model["side_features"], **override}
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)
    cfg = build(TrainConfig, dict(section, model=model), data_dir=data_dir, output_dir=f"{out_root}/{slug}")
    started = time.perf_counter()
    result = train(cfg, progress=False)
    return {"variant": name, "side_features": model.get("side_features"), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "seconds": round(time.perf_counter() - started, 1),
            "valid": result.valid, "test": result.test}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench-side"))
    args = parser.parse_args()
    from seqrec.config import build, load_recipe
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    data_dir = f"{args.out}/data"
    if not (Path(data_dir) / "workflow").is_dir():
        run_etl(build(ETLConfig, load_recipe(RECIPE)["etl"], output_dir=data_dir), progress=False)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_variant, VARIANTS, [data_dir] * len(VARIANTS), [args.out] * len(VARIANTS)))
    print(f"{'variant':42s} {'valid ndcg@10':>13s} {'valid rec@10':>12s} {'test ndcg@10':>12s} "
          f"{'test rec@10':>11s} {'best epoch':>10s}")
    for r in rows:
        print(f"{r['variant']:42s} {r['valid']['ndcg@10']:13.4f} {r['valid']['recall@10']:12.4f} "
              f"{r['test']['ndcg@10']:12.4f} {r['test']['recall@10']:11.4f} {r['best_epoch']:>5d} of {r['epochs_run']}")
    out = ROOT / "bench" / "results" / "side_features.json"
    out.write_text(json.dumps({"machine": platform.machine(), "recipe": str(RECIPE.relative_to(ROOT)),
                               "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
