"""Reader throughput on generated files in each public layout (default 1M rows each).

    .venv/bin/python bench/readers.py [--rows 1000000]

Prints a table and writes bench/results/readers.json. The baseline row is the obvious pandas
route for YOOCHOOSE (read_csv, then to_datetime with the explicit format).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from generators import write_diginetica, write_movielens, write_rees46, write_yoochoose  # noqa: E402

from seqrec.preprocessing.readers import (  # noqa: E402
    read_diginetica, read_movielens, read_rees46, read_yoochoose,
)


def pandas_baseline(path):
    frame = pd.read_csv(path, header=None, names=["session_id", "ts", "item_id", "category"],
                        dtype={"category": str})
    frame["timestamp"] = pd.to_datetime(frame.pop("ts"), format="%Y-%m-%dT%H:%M:%S.%fZ")
    return frame


def best_of(fn, path, repeat=2):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ratings = pd.DataFrame({"user_id": range(n), "item_id": range(n), "rating": 4,
                                "timestamp": range(881250949, 881250949 + n)})
        cases = [
            ("yoochoose-clicks.dat", write_yoochoose, read_yoochoose),
            ("train-item-views.csv", write_diginetica, read_diginetica),
            ("2019-Oct.csv", write_rees46, read_rees46),
            ("u.data", lambda p, n: write_movielens(p, ratings, "u.data"), read_movielens),
            ("ratings.dat", lambda p, n: write_movielens(p, ratings, "ratings.dat"), read_movielens),
            ("ratings.csv", lambda p, n: write_movielens(p, ratings, "ratings.csv"), read_movielens),
            ("yoochoose-clicks.dat (pandas baseline)", None, pandas_baseline),
        ]
        rows = []
        for name, write, read in cases:
            path = tmp / name.split(" ")[0]
            if write is not None:
                write(path, n=n)
            seconds = best_of(read, path)
            rows.append({"layout": name, "rows": n, "mb": round(path.stat().st_size / 1e6, 1),
                         "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)})
    print(f"{'layout':40s} {'MB':>7s} {'seconds':>8s} {'rows/s':>12s}")
    for r in rows:
        print(f"{r['layout']:40s} {r['mb']:7.1f} {r['seconds']:8.3f} {r['rows_per_s']:12,d}")
    out = ROOT / "bench" / "results" / "readers.json"
    out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                               f"{__import__('os').cpu_count()} cores", "results": rows}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
