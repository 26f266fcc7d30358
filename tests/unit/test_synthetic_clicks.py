"""The synthetic YOOCHOOSE-like log of the daily benchmark (bench/bench_data.py): its shape, and
that seqrec's YOOCHOOSE reader reads it back exactly."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_data import synthetic_clicks, write_yoochoose  # noqa: E402

from seqrec.preprocessing.readers.yoochoose import read_yoochoose


def test_sessions_days_and_releases():
    frame = synthetic_clicks(interactions=30_000, days=4, items=2_000, categories=40, seed=1)
    assert 30_000 <= len(frame) < 30_100
    lengths = frame.groupby("session_id").size()
    assert lengths.min() >= 2 and lengths.max() <= 40
    starts = frame.groupby("session_id")["timestamp"].min()
    day = (starts - starts.min()) // 86_400
    assert sorted(day.unique()) == [0, 1, 2, 3]
    first_day = frame.assign(day=frame["session_id"].map(day)).groupby("item_id")["day"].min()
    assert (first_day > 0).mean() > 0.05  # part of the catalogue is released later
    assert (frame.groupby("session_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing)).all()


def test_yoochoose_file_reads_back(tmp_path):
    frame = synthetic_clicks(interactions=5_000, days=2, items=500, categories=10, seed=2)
    path = tmp_path / "yoochoose-clicks.dat"
    write_yoochoose(frame, path)
    back = read_yoochoose(path)
    for column in ("session_id", "item_id", "timestamp"):
        np.testing.assert_array_equal(back[column].to_numpy(), frame[column].to_numpy())
    assert back["category"].astype(str).tolist() == frame["category"].tolist()
