"""The served text model (Recformer) on MovieLens-100k: item encoding (items/s, the whole catalogue
through the item encoder, as `seqrec export` and `seqrec items add` do) and the real
tritonserver's answers to real held-out histories: p50/p99 latency at concurrency 1 and
requests/s at concurrency 16 (bench/loadgen.py's load loop).

The model is configs/recformer-ml-100k-small.yaml's size (the one bench/recformer.py reports),
trained only a few steps: speed does not depend on how well it ranks.

    python bench/recformer_serving.py [--workdir DIR] [--requests N]

Writes bench/results/recformer_serving.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "recformer_serving.json"
RECIPE = ROOT / "configs" / "recformer-ml-100k-small.yaml"
# speed only: the smallest training that leaves a complete run behind
SHORT = {"pretrain": {"epochs": 0},
         "finetune": {"stage1_epochs": 1, "stage2_epochs": 0, "steps_per_epoch": 2}, "valid_rows": 50}


def trained(workdir: Path):
    import yaml

    from seqrec.config import resolve_paths, section
    from seqrec.preprocessing.pipeline import run_etl
    from seqrec.training.recformer.train import train_recformer

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["workdir"] = str(workdir)
    for key, value in SHORT.items():
        recipe["recformer"][key] = {**recipe["recformer"].get(key, {}), **value} if isinstance(value, dict) else value
    recipe = resolve_paths(recipe)  # every path under the workdir
    etl = section(recipe, "etl")
    if not (Path(etl.output_dir) / "test.parquet").is_file():
        run_etl(etl)
    rcfg = section(recipe, "recformer")
    if not (Path(rcfg.output_dir) / "model.pt").is_file():
        train_recformer(rcfg, progress=False)
    return recipe, rcfg


def encoding_speed(rcfg, repeats: int = 3) -> dict:
    import torch

    from seqrec.preprocessing.token_pack import ItemTokens
    from seqrec.training.recformer.model import load_recformer
    from seqrec.training.recformer.train import encode_items

    out = Path(rcfg.output_dir)
    model, tokens = load_recformer(out, dropout=0.0).eval(), ItemTokens.load(out)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode_items(model, tokens, rcfg.encode_batch_size)
        seconds.append(time.perf_counter() - t0)
    return {"items": tokens.num_items, "seconds_median": float(np.median(seconds)),
            "items_per_s": tokens.num_items / float(np.median(seconds)), "torch_threads": torch.get_num_threads()}


def served(repo: Path, data_dir: Path, n: int) -> dict:
    from loadgen import drive, percentiles, workload

    from seqrec.model_repository.server import TritonServer

    requests = workload(data_dir, n, bad_share=0.0)
    out = {}
    with TritonServer(repo) as srv:
        for concurrency in (1, 16):
            asyncio.run(drive(srv.grpc_url, requests[:16], concurrency, lambda *a: None))  # warm-up
            latencies = []

            def record(i, answer, t0, t1):
                if isinstance(answer, Exception):
                    raise answer
                latencies.append((t1 - t0) * 1000)

            seconds = asyncio.run(drive(srv.grpc_url, requests, concurrency, record))
            out[f"concurrency_{concurrency}"] = {
                "requests": n, "seconds": round(seconds, 3), "requests_per_s": round(n / seconds, 2),
                **percentiles(np.array(latencies))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="reuse a run here (default: a temporary folder)")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recformer-serving-"))
    t0 = time.perf_counter()
    recipe, rcfg = trained(workdir)
    encode = encoding_speed(rcfg)

    from seqrec.model_repository.export import ExportConfig
    from seqrec.model_repository.text_export import export_text_repository

    repo = workdir / "model_repository"
    t = time.perf_counter()
    export_text_repository(ExportConfig(repository=str(repo), top_k=10), rcfg)
    export_seconds = time.perf_counter() - t
    serving = served(repo, Path(rcfg.data_dir), args.requests)
    m = rcfg.model
    result = {
        "model": {"recipe": str(RECIPE.relative_to(ROOT)), "d_model": m.d_model, "n_layers": m.n_layers,
                  "max_tokens": m.max_tokens, "max_items": m.max_items, "attention_window": m.attention_window},
        "machine": {"cpus": os.cpu_count(), "note": "a 2-core machine shared with other work"},
        "item_encoding": encode, "export_seconds": round(export_seconds, 1), "served": serving,
        "seconds": round(time.perf_counter() - t0, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"item encoding  {encode['items_per_s']:,.0f} items/s ({encode['items']:,} items, "
          f"{encode['torch_threads']} torch threads)")
    for name, s in serving.items():
        print(f"{name:16s} p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms  {s['requests_per_s']:.1f} requests/s")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
