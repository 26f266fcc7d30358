"""ETL speed: seqrec's vectorised workflow vs the stock NVTabular Groupby workflow.

Synthetic REES46-like click log (sessions, Zipf item popularity, categories, prices), written to
parquet first; each case runs in its own process and is timed end to end: read parquet, fit,
transform, write parquet. Prints a table and writes bench/results/etl.json.

    python bench/etl.py                      # 10M rows ours, 200k rows both (identity check)
    python bench/etl.py --rows 1000000 --stock-rows 100000
    python bench/etl.py --dask-rows 50000000   # + the out-of-core path on 50M rows
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).parent / "results"


def make_log(rows: int, path: Path, seed: int = 0) -> None:
    """~5 events per session, 200k items with Zipf popularity, a month of timestamps."""
    rng = np.random.default_rng(seed)
    sessions = rng.integers(0, max(rows // 5, 1), rows)
    start = 1_569_888_000 + (sessions.astype(np.int64) * 2_592_000) // max(rows // 5, 1)
    frame = pd.DataFrame({
        "session_id": sessions.astype(np.int64),
        "item_id": (rng.zipf(1.2, rows) % 200_000).astype(np.int64),
        # milliseconds: ties inside a session would make the stock output order arbitrary
        # (pandas' unstable sort) while seqrec keeps arrival order, so avoid them for the check
        "timestamp": (start + rng.integers(0, 1800, rows)) * 1000 + rng.integers(0, 1000, rows),
        "category": rng.integers(0, 1000, rows).astype(np.int64),
        "price": rng.exponential(40.0, rows).astype(np.float32),
    })
    frame.to_parquet(path, index=False)


def _ours(src: Path, out: Path, queue) -> None:
    from seqrec.preprocessing.ops import sequences_table
    from seqrec.preprocessing.workflow import build_workflow, fit_workflow, transform_frame

    t0 = time.perf_counter()
    frame = pd.read_parquet(src)
    workflow = build_workflow(out / "categories", max_len=20, key="session_id", categorical=("category",))
    fit_workflow(workflow, frame)
    grouped = transform_frame(workflow, frame)
    pq.write_table(sequences_table(grouped), out / "sessions.parquet")  # as the pipeline writes
    seconds = time.perf_counter() - t0
    queue.put((seconds, len(grouped), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _stock(src: Path, out: Path, queue) -> None:
    import nvtabular as nvt
    from merlin.io import Dataset
    from nvtabular import ops

    t0 = time.perf_counter()
    frame = pd.read_parquet(src)
    cats = ["item_id", "category"] >> ops.Categorify(out_path=str(out / "categories"))
    grouped = (cats + ["session_id", "timestamp"]) >> ops.Groupby(
        groupby_cols=["session_id"], sort_cols=["timestamp"],
        aggs={"item_id": ["list"], "category": ["list"]}, name_sep="-",
    )
    # No ListSlice here: on CPU it loops in Python over every column, session_id included, and
    # fails; the comparison truncates stock lists to the last 20 instead (stock does less work).
    workflow = nvt.Workflow(grouped)
    dataset = Dataset(frame, cpu=True)
    workflow.fit(dataset)
    result = workflow.transform(dataset).to_ddf().compute()
    result.to_parquet(out / "sessions.parquet", index=False)
    seconds = time.perf_counter() - t0
    queue.put((seconds, len(result), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _partitioned(src: Path, out: Path, queue) -> None:
    """Out of core: parquet parts -> Dask (fit streams, shuffle by session) -> parquet parts."""
    from seqrec.preprocessing.partitioned import group_partitioned
    from seqrec.preprocessing.workflow import build_workflow

    t0 = time.perf_counter()
    paths = sorted(src.glob("*.parquet"))
    workflow = build_workflow(out / "categories", max_len=20, key="session_id", categorical=("category",))
    result = group_partitioned(workflow, paths, out / "sessions", key="session_id")
    seconds = time.perf_counter() - t0
    sessions = sum(pq.ParquetFile(p).metadata.num_rows for p in result.glob("*.parquet"))
    queue.put((seconds, sessions, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_case(fn, src: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")  # a fresh process: clean peak RSS per case
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(src, out, queue))
    proc.start()
    seconds, sessions, rss_mb = queue.get()
    proc.join()
    return {"seconds": seconds, "sessions": sessions, "peak_rss_mb": rss_mb}


def same_output(a: Path, b: Path) -> bool:
    """Same sessions and the same item lists (decoded to raw ids: codes may differ by version)."""
    def decoded(folder: Path, list_col: str) -> pd.Series:  # last 20 items, raw ids
        frame = pd.read_parquet(folder / "sessions.parquet").set_index("session_id").sort_index()
        uniques = pd.read_parquet(next((folder / "categories").rglob("unique.item_id.parquet")))
        vocab = np.full(int(uniques.index.max()) + 1, -1, dtype=np.int64)
        vocab[uniques.index.to_numpy()] = uniques["item_id"].to_numpy()
        return frame[list_col].map(lambda ids: tuple(vocab[np.asarray(ids, dtype=np.int64)[-20:]]))

    ours, stock = decoded(a, "item_id-list"), decoded(b, "item_id-list")
    return ours.index.equals(stock.index) and bool((ours == stock).all())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stock-rows", type=int, default=200_000)
    parser.add_argument("--dask-rows", type=int, default=0,
                        help="also run the out-of-core Dask path on this many rows (5M-row files)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="seqrec-bench-etl-"))
    try:
        rows = []
        small, big = work / "small.parquet", work / "big.parquet"
        make_log(args.stock_rows, small)
        stock = run_case(_stock, small, work / "stock")
        ours_small = run_case(_ours, small, work / "ours-small")
        identical = same_output(work / "ours-small", work / "stock")
        rows.append(("stock NVTabular Groupby", args.stock_rows, stock))
        rows.append(("seqrec GroupSequences", args.stock_rows, ours_small))
        if args.rows != args.stock_rows:
            make_log(args.rows, big)
            rows.append(("seqrec GroupSequences", args.rows, run_case(_ours, big, work / "ours-big")))
        if args.dask_rows:
            parts = work / "parts"
            parts.mkdir()
            for i, start in enumerate(range(0, args.dask_rows, 5_000_000)):
                # same session-id range in every file: sessions are spread over files on purpose
                make_log(min(5_000_000, args.dask_rows - start), parts / f"part-{i:03d}.parquet", seed=i + 1)
            rows.append(("seqrec Dask (out of core)", args.dask_rows,
                         run_case(_partitioned, parts, work / "dask")))
        print(f"{'workflow':26s}{'rows':>12s}{'seconds':>10s}{'rows/s':>14s}{'sessions':>11s}{'peak RSS MB':>13s}")
        for name, n, r in rows:
            print(f"{name:26s}{n:12,d}{r['seconds']:10.2f}{n / r['seconds']:14,.0f}{r['sessions']:11,d}{r['peak_rss_mb']:13,.0f}")
        speedup = (args.stock_rows / ours_small["seconds"]) / (args.stock_rows / stock["seconds"])
        best = max((r for r in rows if not r[0].startswith("seqrec Dask")), key=lambda r: r[1])
        print(f"speed-up on the same {args.stock_rows:,} rows: {speedup:.1f}x; outputs identical: {identical}")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "etl.json").write_text(json.dumps({
            "machine": {"cpus": mp.cpu_count(), "python": platform.python_version()},
            "cases": [{"workflow": n, "rows": r, **res, "rows_per_s": r / res["seconds"]} for n, r, res in rows],
            "speedup_same_rows": speedup,
            "outputs_identical": identical,
            "largest_rows_per_s": best[1] / best[2]["seconds"],
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
