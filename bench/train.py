"""Training-step speed: ms per step, sequences/s and peak RSS for the Transformers4Rec reference
setting (XLNet, d_model 64, 2 layers, 2 heads, seq 20, batch 256, 4,922 items, MLM, 2 CPU
threads; Transformers4Rec 23.12 measured 328 ms/step here) plus GPT-2 CLM and CLM-last.
Two data cases at scale (1M sessions, 100k items by default): `data-loading` (one epoch's data
path: parquet list column -> values + offsets -> padded matrix -> every batch gathered, no
model) and `evaluation` (the popularity baseline with and without seen items over all sessions,
and the model's evaluation on --model-sessions of them), each with its peak RSS.

    python bench/train.py [--steps 30] [--threads 2]
    python bench/train.py --data [--sessions 1000000] [--eval-items 100000] [--model-sessions 20000]

Each case runs in its own process (so peak RSS is that case's); prints a table and writes
bench/results/train.json (step cases) or bench/results/train_data.json (--data). Sequences are synthetic (Zipf-distributed item ids): only speed is
measured here, quality is measured by the tests and `seqrec train`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    {"name": "xlnet-mlm", "backbone": "xlnet", "task": "mlm"},
    {"name": "gpt2-clm", "backbone": "gpt2", "task": "clm"},
    {"name": "gpt2-clm-last", "backbone": "gpt2", "task": "clm-last"},
    {"name": "xlnet-plm", "backbone": "xlnet", "task": "plm"},
    {"name": "electra-rtd", "backbone": "electra", "task": "rtd"},
]
DATA_CASES = [{"name": "data-loading"}, {"name": "evaluation"}]
TARGET_MS = 160.0  # the target for xlnet-mlm
RSS_LIMIT_MB = 4096.0  # the evaluation case's peak-memory target
T4R_MS = 328.0


def run_case(case: dict, steps: int, threads: int, items: int, seq: int, batch: int,
             precision: str = "fp32") -> dict:
    import numpy as np
    import torch

    from seqrec.preprocessing.arrays import FIRST_ITEM_ID
    from seqrec.training.data import Ragged
    from seqrec.training.loop import training_units
    from seqrec.training.model import ModelConfig, SequenceRecommender

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_seq = batch * 8
    ids = (rng.zipf(1.2, size=(n_seq, seq)) % items) + FIRST_ITEM_ID
    rows = Ragged.from_lists(list(ids.astype(np.int64)))
    cfg = ModelConfig(num_items=items + FIRST_ITEM_ID, max_len=seq + 1, backbone=case["backbone"],
                      task=case["task"], d_model=64, n_layers=2, n_heads=2, dropout=0.1)
    model = SequenceRecommender(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    examples = training_units(model, rows, cfg.max_len)
    order = torch.randperm(len(examples))

    # bf16: autocast of the step, as `train.precision: bf16` runs it (parameters stay fp32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(i):
        pick = order[(i * batch) % len(order):][:batch]
        with autocast:
            loss = model.loss(examples.batch(pick)[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(3):  # warm-up (allocator, first-call paths)
        step(i)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i + 3)
        times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    return {**case, "ms_per_step": round(ms, 1), "ms_per_step_mean": round(1000 * float(np.mean(times)), 1),
            "ms_per_step_min": round(1000 * float(np.min(times)), 1),
            "sequences_per_s": round(batch / (ms / 1000), 0),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
            "steps": steps, "threads": threads, "batch": batch, "seq_len": seq, "items": items,
            "d_model": 64, "layers": 2, "heads": 2, "precision": precision}


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)


def synthetic_sessions(n: int, items: int, seed: int = 0):
    """n sessions of 2..20 Zipf-distributed encoded ids, as values + offsets."""
    import numpy as np

    from seqrec.preprocessing.arrays import FIRST_ITEM_ID, offsets_from_lengths
    from seqrec.training.data import Ragged

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 21, size=n)
    values = (rng.zipf(1.2, size=int(lengths.sum())) % items) + FIRST_ITEM_ID
    return Ragged(values.astype(np.int64), offsets_from_lengths(lengths))


def run_data_loading(sessions: int, items: int, batch: int, seq: int, threads: int) -> dict:
    import tempfile

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from seqrec.preprocessing.arrays import ITEM_LIST
    from seqrec.training.data import read_columns
    from seqrec.training.loop import training_units
    from seqrec.training.model import ModelConfig, SequenceRecommender

    torch.set_num_threads(threads)
    rows = synthetic_sessions(sessions, items)
    column = pa.ListArray.from_arrays(pa.array(rows.offsets.astype(np.int32)), pa.array(rows.values))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/train.parquet"
        pq.write_table(pa.table({ITEM_LIST: column}), path)
        del rows, column
        rss_before = _rss_mb()
        t0 = time.perf_counter()
        read = read_columns(path, [ITEM_LIST])[ITEM_LIST]
        t1 = time.perf_counter()
        model = SequenceRecommender(ModelConfig(num_items=items + 3, max_len=seq, d_model=8, n_layers=1, n_heads=1))
        t2 = time.perf_counter()
        examples = training_units(model, read, seq)
        t3 = time.perf_counter()
        order = torch.randperm(len(examples))
        for i in range(0, len(order), batch):
            examples.batch(order[i:i + batch])
        t4 = time.perf_counter()
        rss = _rss_mb()
        t5 = time.perf_counter()
        per_row = list(pd.read_parquet(path, columns=[ITEM_LIST])[ITEM_LIST])  # one object per row
        t6 = time.perf_counter()
    return {"name": "data-loading", "sessions": sessions, "items": items, "batch": batch, "seq_len": seq,
            "values": int(read.offsets[-1]), "read_values_offsets_s": round(t1 - t0, 3),
            "pad_matrix_s": round(t3 - t2, 3), "gather_all_batches_s": round(t4 - t3, 3),
            "epoch_data_s": round((t1 - t0) + (t4 - t2), 3), "batches": -(-len(order) // batch),
            "peak_rss_mb": rss, "rss_before_read_mb": rss_before, "threads": threads,
            "reference_pandas_rows_read_s": round(t6 - t5, 3), "reference_rows": len(per_row)}


def run_evaluation(sessions: int, items: int, model_sessions: int, threads: int) -> dict:
    import numpy as np
    import torch

    from seqrec.training.evaluation import evaluate, evaluate_popularity
    from seqrec.training.model import ModelConfig, SequenceRecommender

    torch.set_num_threads(threads)
    num_items = items + 3
    train, test = synthetic_sessions(sessions, items, seed=1), synthetic_sessions(sessions, items, seed=2)
    t0 = time.perf_counter()
    both = evaluate_popularity(train, test, num_items)  # both seen policies in one pass
    plain, unseen = both["seen_kept"], both["seen_excluded"]
    t1 = time.perf_counter()
    torch.manual_seed(0)
    model = SequenceRecommender(ModelConfig(num_items=num_items, max_len=20, d_model=16, n_layers=1, n_heads=1))
    part = test[:model_sessions]
    t3 = time.perf_counter()
    scored = evaluate(model, part, batch_size=256, exclude_seen=True)
    t4 = time.perf_counter()
    return {"name": "evaluation", "sessions": sessions, "items": items, "values": int(test.offsets[-1]),
            "popularity_both_policies_s": round(t1 - t0, 3),
            "popularity_ndcg@10": round(plain["ndcg@10"], 5), "popularity_exclude_seen_ndcg@10": round(unseen["ndcg@10"], 5),
            "model_sessions": len(part), "model_exclude_seen_s": round(t4 - t3, 3),
            "model_sessions_per_s": round(len(part) / (t4 - t3), 0), "model_ndcg@10": round(scored["ndcg@10"], 5),
            "dense_seen_matrix_gb": round(sessions * num_items / 1e9, 1),  # what a [sessions, items] bool costs
            "peak_rss_mb": _rss_mb(), "rss_limit_mb": RSS_LIMIT_MB, "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--items", type=int, default=4922)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sessions", type=int, default=1_000_000)  # data cases
    p.add_argument("--eval-items", type=int, default=100_000)
    p.add_argument("--model-sessions", type=int, default=20_000)
    p.add_argument("--data", action="store_true",
                   help="run the data cases instead (data loading, evaluation) -> bench/results/train_data.json")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="step cases: autocast")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = p.parse_args()
    if args.case == "data-loading":
        print(json.dumps(run_data_loading(args.sessions, args.eval_items, args.batch, args.seq, args.threads)))
        return
    if args.case == "evaluation":
        print(json.dumps(run_evaluation(args.sessions, args.eval_items, args.model_sessions, args.threads)))
        return
    if args.case:
        case = next(c for c in CASES if c["name"] == args.case)
        print(json.dumps(run_case(case, args.steps, args.threads, args.items, args.seq, args.batch,
                                  args.precision)))
        return
    machine = {"cpu_threads": args.threads, "load_average_1min": round(os.getloadavg()[0], 2),
               "python": platform.python_version(), "processor": platform.processor() or platform.machine()}
    if args.data:
        data = []
        for case in DATA_CASES:
            cmd = [sys.executable, __file__, "--case", case["name"], "--sessions", str(args.sessions),
                   "--eval-items", str(args.eval_items), "--model-sessions", str(args.model_sessions),
                   "--threads", str(args.threads), "--seq", str(args.seq), "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            data.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(data[-1]), flush=True)
        ev = next(r for r in data if r["name"] == "evaluation")
        print(f"\nevaluation of {ev['sessions']:,} sessions x {ev['items']:,} items: peak RSS "
              f"{ev['peak_rss_mb']:.0f} MB (limit {RSS_LIMIT_MB:.0f}) -> "
              f"{'OK' if ev['peak_rss_mb'] <= RSS_LIMIT_MB else 'MISSED'}")
        out = Path(args.out).with_name("train_data.json")
        out.write_text(json.dumps({"machine": machine, "rss_limit_mb": RSS_LIMIT_MB,
                                   **{r["name"]: r for r in data}}, indent=2))
        print(f"wrote {out}")
        return
    results = []
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case["name"], "--steps", str(args.steps),
               "--threads", str(args.threads), "--items", str(args.items), "--seq", str(args.seq),
               "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['name']:15s} {r['ms_per_step']:9.1f} ms/step (min {r['ms_per_step_min']:7.1f}) "
              f"{r['sequences_per_s']:9.0f} seq/s "
              f"{r['peak_rss_mb']:7.0f} MB peak RSS", flush=True)
    xl = next(r for r in results if r["name"] == "xlnet-mlm")
    print(f"\nxlnet-mlm: {xl['ms_per_step']} ms/step (target <= {TARGET_MS:.0f}; Transformers4Rec 23.12: "
          f"{T4R_MS:.0f}) -> {'OK' if xl['ms_per_step'] <= TARGET_MS else 'MISSED'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": machine,
        "target_ms_xlnet_mlm": TARGET_MS, "transformers4rec_23_12_ms": T4R_MS, "results": results,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
