"""Real datasets the benchmarks share, written once by seqrec's own ETL into a cache folder:
MovieLens-100k leave-last-out (inside the recbole wheel) and the grouped session sample shipped in
the transformers4rec 23.12.0 sdist (a session split); and a synthetic YOOCHOOSE-like click log
with daily windows (written here, read by seqrec's YOOCHOOSE reader)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

DATA_CACHE = Path(tempfile.gettempdir()) / "seqrec-bench-data"


def ml100k_data(max_len: int = 50, cache: Path = DATA_CACHE) -> str:
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = cache / f"ml-100k-{max_len}"
    if not out.is_dir():
        run_etl(ETLConfig(output_dir=str(out), max_len=max_len), progress=False)
    return str(out)


def t4r_data(cache: Path = DATA_CACHE) -> str:
    """Session split: the whole week is one window; its latest 10% / 10% sessions are valid /
    test, the rest train."""
    from seqrec.preprocessing.datasets import read_transformers4rec_sessions
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = cache / "t4r-sample"
    if not out.is_dir():
        result = run_etl(ETLConfig(output_dir=str(out), key="session_id", split="time-window",
                                   window_seconds=86400 * 28, min_len=2, max_len=20),
                         interactions=read_transformers4rec_sessions(), progress=False)
        (window,) = result.windows
        # the trainer reads the workflow beside the splits
        (out / window / "workflow").symlink_to(out / "workflow", target_is_directory=True)
    (window,) = [p for p in out.iterdir() if p.is_dir() and (p / "train.parquet").is_file()]
    return str(window)


# ---------------------------------------------------------------------------- synthetic daily clicks

SYNTHETIC_START = np.datetime64("2014-04-01T00:00:00", "s")


def synthetic_clicks(interactions: int = 1_120_000, days: int = 7, items: int = 20_000, categories: int = 300,
                     seed: int = 0) -> pd.DataFrame:
    """A YOOCHOOSE-like click log with structure a sequence model can learn and a baseline
    cannot: sessions (1 + geometric length: 2 to 40 clicks, mean ~4.6) walk from an item to one of its
    few fixed successors (55%), to a popular item of its category (25%) or to an item popular
    that day (20%). Popularity is Zipf-like, a different 2% of items trends each day (x20), and 30%
    of the catalogue is released on a later day (never clicked before it). Columns: session_id,
    timestamp (int64 epoch seconds), item_id (original ids, not 0-based), category (text)."""
    rng = np.random.default_rng(seed)
    weight = rng.permutation(1.0 / np.arange(1, items + 1) ** 0.9)
    category = rng.integers(0, categories, items)
    release = np.where(rng.random(items) < 0.7, 0, rng.integers(1, days, items))

    # category-popular draws: cumulative weights in category order, one range per category
    by_category = np.argsort(category, kind="stable")
    cumulative = np.cumsum(weight[by_category])
    bounds = np.searchsorted(category[by_category], np.arange(categories + 1))
    low = np.where(bounds[:-1] > 0, cumulative[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    high = cumulative[np.maximum(bounds[1:] - 1, 0)]

    def in_category(cats: np.ndarray) -> np.ndarray:
        u = low[cats] + rng.random(len(cats)) * (high[cats] - low[cats])
        return by_category[np.minimum(np.searchsorted(cumulative, u), items - 1)]

    successors = in_category(np.repeat(category, 4)).reshape(items, 4)  # fixed, per item
    day_weight = np.stack([weight * (release <= d) * np.where(rng.random(items) < 0.02, 20.0, 1.0)
                           for d in range(days)])
    day_cumulative = np.cumsum(day_weight, axis=1)

    def day_popular(day: np.ndarray) -> np.ndarray:
        out = np.empty(len(day), dtype=np.int64)
        for d in range(days):  # one searchsorted per day
            pick = np.flatnonzero(day == d)
            u = rng.random(len(pick)) * day_cumulative[d, -1]
            out[pick] = np.minimum(np.searchsorted(day_cumulative[d], u), items - 1)
        return out

    lengths = np.minimum(1 + rng.geometric(0.28, int(interactions / 4.2) + 1), 40)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), interactions) + 1]
    sessions = len(lengths)
    day = rng.integers(0, days, sessions)
    clicks = np.empty((sessions, int(lengths.max())), dtype=np.int64)
    clicks[:, 0] = day_popular(day)
    for position in range(1, clicks.shape[1]):  # one vectorised step per position, not per session
        live = np.flatnonzero(lengths > position)
        prev, how = clicks[live, position - 1], rng.random(len(live))
        nxt = successors[prev, rng.integers(0, 4, len(live))]
        nxt = np.where(how < 0.55, nxt, in_category(category[prev]))
        popular = (how >= 0.8) | (release[nxt] > day[live])  # unreleased items are never clicked
        nxt[popular] = day_popular(day[live[popular]])
        clicks[live, position] = nxt
    row = np.repeat(np.arange(sessions), lengths)
    within = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = day * 86_400 + rng.integers(0, 82_800, sessions)
    gaps = rng.exponential(60.0, len(row)).astype(np.int64) * (within > 0)
    seconds = np.repeat(start, lengths) + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
    item = clicks[row, within]
    return pd.DataFrame({
        "session_id": (row + 1).astype(np.int64),
        "timestamp": SYNTHETIC_START.astype(np.int64) + seconds,
        "item_id": (214_500_000 + item).astype(np.int64),
        "category": category[item].astype(str),
    })


def write_yoochoose(frame: pd.DataFrame, path: Path) -> None:
    """The log as YOOCHOOSE's `yoochoose-clicks.dat` (no header; ISO 8601 UTC with milliseconds)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    stamps = np.char.add(np.datetime_as_string(frame["timestamp"].to_numpy().astype("datetime64[s]"), unit="ms"), "Z")
    table = pa.table({"s": frame["session_id"].to_numpy(), "t": stamps, "i": frame["item_id"].to_numpy(),
                      "c": frame["category"].to_numpy()})
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def daily_data(interactions: int = 1_120_000, days: int = 7, cache: Path = DATA_CACHE) -> str:
    """The synthetic log written as yoochoose-clicks.dat and read by seqrec's YOOCHOOSE reader;
    daily time windows (a session belongs to the day it starts), sessions of >= 2 clicks, the
    last 20 of each kept. Returns the ETL folder (one sub-folder per day)."""
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = cache / f"synthetic-daily-{interactions}-{days}"
    if not (out / "workflow").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        clicks = cache / f"synthetic-daily-{interactions}-{days}.dat"
        write_yoochoose(synthetic_clicks(interactions, days), clicks)
        run_etl(ETLConfig(output_dir=str(out), key="session_id", split="time-window", window_seconds=86400,
                          min_len=2, max_len=20, source={"format": "yoochoose", "path": str(clicks)}),
                progress=False)
    return str(out)
