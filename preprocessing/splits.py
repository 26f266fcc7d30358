"""Leave-last-out splits of grouped user sequences, computed on whole list columns at once."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from . import arrays
from .arrays import FIRST_SUFFIX, LENGTH_COLUMN, LIST_SUFFIX
from .ops import sequences_table

LEAVE_LAST_OUT_MIN_LEN = 3  # one train item, a valid target and a test target


def drop_last(lists: pa.ListArray, n: int) -> pa.ListArray:
    """Remove the last `n` elements of every list (vectorised over the offsets)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values, offsets = arrays.drop_last(lists.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0], n)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def leave_last_out(grouped: pd.DataFrame, min_len: int = 3) -> Iterator[tuple[str, pa.Table]]:
    """(split, table) for train = sequence minus its last two items, valid = minus the last,
    test = whole sequence, one split at a time: a caller that writes each before asking for the
    next holds one split's copy at most (the data can be most of the memory there is).

    The target of valid/test is the LAST element of each list; everything before it is history.
    Sequences shorter than `min_len` (3: one train item, a valid and a test target) are dropped.
    """
    min_len = max(min_len, LEAVE_LAST_OUT_MIN_LEN)
    keep = grouped[LENGTH_COLUMN].to_numpy() >= min_len
    table = sequences_table(grouped if keep.all() else grouped[keep])  # no copy when all are kept
    list_cols = [c for c in table.column_names if c.endswith(LIST_SUFFIX)]
    for name, n in (("train", 2), ("valid", 1), ("test", 0)):
        if not n:
            yield name, table
            continue
        cols = {c: table[c] for c in table.column_names}
        for c in list_cols:
            cols[c] = drop_last(table[c].combine_chunks(), n)
        cols[LENGTH_COLUMN] = pa.array(
            (table[LENGTH_COLUMN].to_numpy() - n).astype(np.int32)
        )
        yield name, pa.table(cols)


__all__ = ["drop_last", "leave_last_out"]


def window_name(start_seconds: int, window_seconds: int) -> str:
    stamp = pd.Timestamp(int(start_seconds), unit="s")
    return stamp.strftime("%Y-%m-%d" if window_seconds % 86400 == 0 else "%Y-%m-%dT%H%M")


def time_window_splits(
    grouped: pd.DataFrame,
    time_col: str,
    window_seconds: int = 86400,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, dict[str, pa.Table]]:
    """Sessions -> {window: {train, valid, test}}.

    A session belongs to the window of its FIRST interaction, so it is never cut in two. Inside a
    window, sessions are ordered by start time: the earliest go to train, the latest to test, so
    no evaluated session started before a training one of the same window.
    """
    if not 0 <= valid_fraction + test_fraction < 1:
        raise ValueError("valid_fraction + test_fraction must be in [0, 1)")
    first = grouped[time_col + FIRST_SUFFIX].to_numpy()
    window = first // window_seconds
    order = np.lexsort((first, window))
    sorted_windows = window[order]
    offsets = np.concatenate(([0], np.flatnonzero(np.diff(sorted_windows)) + 1, [len(order)]))
    counts = np.diff(offsets)
    rank = np.arange(len(order)) - np.repeat(offsets[:-1], counts)
    share = (rank + 0.5) / np.repeat(counts, counts)  # position inside the window, in (0, 1)
    split = np.where(share >= 1 - test_fraction, 2, np.where(share >= 1 - test_fraction - valid_fraction, 1, 0))
    table = sequences_table(grouped.iloc[order])
    out: dict[str, dict[str, pa.Table]] = {}
    for start, stop in zip(offsets[:-1], offsets[1:]):
        name = window_name(sorted_windows[start] * window_seconds, window_seconds)
        part = table.slice(start, stop - start)
        labels = split[start:stop]
        out[name] = {
            s: part.filter(pa.array(labels == i)) for i, s in enumerate(("train", "valid", "test"))
        }
    return out
