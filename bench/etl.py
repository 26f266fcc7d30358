"""ETL speed: seqrec's workflow vs Polars (the CPU reference) and the stock NVTabular workflow.

Synthetic REES46-like click log (sessions, Zipf item popularity, categories, prices), written to
parquet first; each case runs in its own process and is timed end to end on the same work: read
parquet, encode item and category ids, sort by (session, time), group, keep the last 20, write
parquet. Polars is a reference only (not a seqrec dependency): without it installed the case is
skipped and the table says so. Prints a table and writes bench/results/etl.json.

    python bench/etl.py                      # 10M rows seqrec + Polars, 2M rows stock (identity)
    python bench/etl.py --rows 1000000 --stock-rows 200000
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
        # milliseconds: few ties inside a session (a handful per million rows); stock orders tied
        # rows arbitrarily (pandas' unstable sort), so they are compared as sets with stock
        "timestamp": (start + rng.integers(0, 1800, rows)) * 1000 + rng.integers(0, 1000, rows),
        "category": rng.integers(0, 1000, rows).astype(np.int64),
        "price": rng.exponential(40.0, rows).astype(np.float32),
    })
    frame.to_parquet(path, index=False)


def _ours(src: Path, out: Path, queue) -> None:
    from seqrec.preprocessing.ops import sequences_table, write_sequences
    from seqrec.preprocessing.readers.generic import read_generic
    from seqrec.preprocessing.workflow import build_workflow, fit_workflow, transform_frame

    t0 = time.perf_counter()
    # the pipeline's reader: the columns the workflow uses, read by pyarrow
    frame = read_generic(src, {c: c for c in ("session_id", "item_id", "timestamp", "category")})
    workflow = build_workflow(out / "categories", max_len=20, key="session_id", categorical=("category",))
    fit_workflow(workflow, frame)
    grouped = transform_frame(workflow, frame)
    write_sequences(sequences_table(grouped), out / "sessions.parquet")  # as the pipeline writes
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
        aggs={"item_id": ["list"], "category": ["list"], "timestamp": ["list"]}, name_sep="-",
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


def _polars(src: Path, out: Path, queue) -> None:
    """The same work in Polars: ids encoded through a sorted vocabulary (codes from 3, as
    Categorify's), one sort by (session, time), the last 20 of each group, parquet out."""
    import polars as pl

    t0 = time.perf_counter()
    frame = pl.read_parquet(src)
    vocabularies = {}
    for col in ("item_id", "category"):
        values = frame[col].unique().sort()
        vocabularies[col] = pl.DataFrame({col: values, f"{col}_code": pl.int_range(3, 3 + len(values), eager=True)})
        frame = frame.join(vocabularies[col], on=col, how="left", maintain_order="left")
    grouped = (frame.sort(["session_id", "timestamp"], maintain_order=True)
               .group_by("session_id", maintain_order=True)
               .agg(pl.col("item_id_code").tail(20).alias("item_id-list"),
                    pl.col("category_code").tail(20).alias("category-list"),
                    pl.col("timestamp").tail(20).alias("timestamp-list"),
                    pl.col("timestamp").first().alias("timestamp-first"),
                    pl.col("timestamp").last().alias("timestamp-last"),
                    pl.len().clip(upper_bound=20).cast(pl.Int32).alias("seq_length")))
    grouped.write_parquet(out / "sessions.parquet")
    vocabularies["item_id"].write_parquet(out / "items.parquet")
    seconds = time.perf_counter() - t0
    queue.put((seconds, len(grouped), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def polars_version() -> str | None:
    try:
        import polars
    except ImportError:
        return None
    return polars.__version__


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


def _preprocess_dask(src: Path, out: Path, queue) -> None:
    """What `seqrec preprocess` runs with `etl.engine: dask` (threaded scheduler, in this
    process): read, fit, shuffle and group the parts, read the sequences back, filter, split
    (leave-last-out), write."""
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    t0 = time.perf_counter()
    cfg = ETLConfig(source={"format": "generic", "path": str(src),
                            "columns": {c: c for c in ("session_id", "item_id", "timestamp", "category")}},
                    output_dir=str(out / "etl"), engine="dask", categorical=["category"], history_cap=20,
                    max_len=20)
    result = run_etl(cfg, progress=False)
    seconds = time.perf_counter() - t0
    queue.put((seconds, result.sequences_in, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_case(fn, src: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")  # a fresh process: clean peak RSS per case
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(src, out, queue))
    proc.start()
    seconds, sessions, rss_mb = queue.get()
    proc.join()
    return {"seconds": seconds, "sessions": sessions, "peak_rss_mb": rss_mb}


def decoded(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session, timestamp, raw item id) of the last 20 items of every session, flat, sessions
    in id order and each session's items in list order (codes differ between tools)."""
    from seqrec.preprocessing.arrays import keep_last_mask, row_ids

    table = pq.read_table(folder / "sessions.parquet", columns=["session_id", "item_id-list", "timestamp-list"])
    table = table.sort_by("session_id")
    items, times = (table.column(c).combine_chunks() for c in ("item_id-list", "timestamp-list"))
    offsets = items.offsets.to_numpy().astype(np.int64)
    keep = keep_last_mask(offsets, 20)  # stock keeps whole lists (it has no ListSlice here)
    sessions = table.column("session_id").to_numpy()[row_ids(offsets)][keep]
    codes = items.flatten().to_numpy()[keep]
    if (folder / "items.parquet").exists():  # Polars: its own vocabulary table
        vocabulary = pd.read_parquet(folder / "items.parquet")
        known, ids = vocabulary["item_id_code"].to_numpy(), vocabulary["item_id"].to_numpy()
    else:  # Categorify's unique-value file: the index is the code
        uniques = pd.read_parquet(next((folder / "categories").rglob("unique.item_id.parquet")))
        known, ids = uniques.index.to_numpy(), uniques["item_id"].to_numpy()
    vocab = np.full(int(known.max()) + 1, -1, dtype=np.int64)
    vocab[known] = ids
    return sessions, times.flatten().to_numpy()[keep], vocab[codes]


def same_output(a: Path, b: Path, ties_ordered: bool = True) -> bool:
    """Same sessions and the same item lists, in raw ids. ties_ordered=False: items with the same
    (session, timestamp) may come in any order (stock Groupby sorts with pandas' unstable sort,
    so its order of tied rows is arbitrary; seqrec and Polars keep arrival order)."""
    ours, other = decoded(a), decoded(b)
    if not ties_ordered:  # compare each tie group as a set: order by (session, time, item)
        ours, other = ([x[np.lexsort((c[2], c[1], c[0]))] for x in c] for c in (ours, other))
    return all(np.array_equal(x, y) for x, y in zip(ours, other))


def tied_rows(src: Path) -> int:
    """Rows sharing (session, timestamp) with another row: where a stable sort is needed."""
    frame = pd.read_parquet(src, columns=["session_id", "timestamp"])
    return int(frame.duplicated(keep=False).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stock-rows", type=int, default=2_000_000)
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
        identical = same_output(work / "ours-small", work / "stock", ties_ordered=False)
        ties = tied_rows(small)
        rows.append(("stock NVTabular Groupby", args.stock_rows, stock))
        rows.append(("seqrec GroupSequences", args.stock_rows, ours_small))
        polars, versus_polars = polars_version(), None
        if args.rows != args.stock_rows:
            make_log(args.rows, big)
            ours_big = run_case(_ours, big, work / "ours-big")
            rows.append(("seqrec GroupSequences", args.rows, ours_big))
        else:
            big, ours_big = small, ours_small
        if polars:
            reference = run_case(_polars, big, work / "polars")
            rows.append((f"Polars {polars} (reference)", args.rows, reference))
            ours_dir = work / ("ours-big" if big != small else "ours-small")
            versus_polars = {
                "polars": polars,
                "speed_ratio": reference["seconds"] / ours_big["seconds"],  # > 1: seqrec faster
                "rss_ratio": ours_big["peak_rss_mb"] / reference["peak_rss_mb"],
                "outputs_identical": same_output(ours_dir, work / "polars"),
            }
        else:
            print("Polars is not installed: the reference case is skipped "
                  "(pip install polars to compare; it is not a seqrec dependency)")
        if args.dask_rows:
            parts = work / "parts"
            parts.mkdir()
            for i, start in enumerate(range(0, args.dask_rows, 5_000_000)):
                # same session-id range in every file: sessions are spread over files on purpose
                make_log(min(5_000_000, args.dask_rows - start), parts / f"part-{i:03d}.parquet", seed=i + 1)
            rows.append(("seqrec Dask (out of core)", args.dask_rows,
                         run_case(_partitioned, parts, work / "dask")))
            rows.append(("seqrec preprocess, Dask", args.dask_rows,
                         run_case(_preprocess_dask, parts, work / "dask-preprocess")))
        print(f"{'workflow':26s}{'rows':>12s}{'seconds':>10s}{'rows/s':>14s}{'sessions':>11s}{'peak RSS MB':>13s}")
        for name, n, r in rows:
            print(f"{name:26s}{n:12,d}{r['seconds']:10.2f}{n / r['seconds']:14,.0f}{r['sessions']:11,d}{r['peak_rss_mb']:13,.0f}")
        speedup = (args.stock_rows / ours_small["seconds"]) / (args.stock_rows / stock["seconds"])
        best = max((r for r in rows if r[0] == "seqrec GroupSequences"), key=lambda r: r[1])
        print(f"vs stock NVTabular on the same {args.stock_rows:,} rows: {speedup:.1f}x faster; "
              f"outputs identical: {identical} (the order of the {ties} rows with tied timestamps "
              "aside, which stock leaves arbitrary)")
        if versus_polars:
            print(f"vs Polars on the same {args.rows:,} rows: speed {versus_polars['speed_ratio']:.2f}x "
                  f"(> 1: seqrec faster), peak RSS {versus_polars['rss_ratio']:.2f}x Polars'; "
                  f"outputs identical: {versus_polars['outputs_identical']}")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "etl.json").write_text(json.dumps({
            "machine": {"cpus": mp.cpu_count(), "python": platform.python_version()},
            "cases": [{"workflow": n, "rows": r, **res, "rows_per_s": r / res["seconds"]} for n, r, res in rows],
            "speedup_same_rows": speedup,
            "outputs_identical": identical,
            "stock_tied_rows": ties,  # compared as sets: stock orders tied rows arbitrarily
            "versus_polars": versus_polars or "polars not installed: reference case skipped",
            "largest_rows_per_s": best[1] / best[2]["seconds"],
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
