"""One Transformers4Rec 23.12 training-step timing, in its virtualenv, on the same synthetic
batches as bench/train.py's step cases (Zipf-distributed ids, full-length sequences): median ms
per step after a warm-up; prints one JSON line."""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from run_transformers4rec import ITEMS, build

FIRST_ITEM_ID = 3  # seqrec's reserved ids, so both libraries see the same id range


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--combo", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--items", type=int, default=4922)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = (rng.zipf(1.2, size=(args.batch * 8, args.seq)) % args.items) + FIRST_ITEM_ID
    matrix = torch.from_numpy(ids.astype(np.int64))
    spec = argparse.Namespace(combo=args.combo, max_len=args.seq, d_model=64, heads=2, layers=2, dropout=0.1)
    model, _ = build(spec, args.items + FIRST_ITEM_ID)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = torch.randperm(len(matrix))

    def step(i):
        pick = order[(i * args.batch) % len(order):][:args.batch]
        loss = model({ITEMS: matrix[pick]}, training=True)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step(i + 3)
        times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    print(json.dumps({"name": args.combo, "ms_per_step": round(ms, 1),
                      "sequences_per_s": round(args.batch / (ms / 1000), 0),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)}))


if __name__ == "__main__":
    main()
