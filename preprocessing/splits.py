"""Leave-last-out splits of grouped user sequences, computed on whole list columns at once."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .ops import LENGTH_COLUMN, LIST_SUFFIX, keep_last_mask


def drop_last(lists: pa.ListArray, n: int) -> pa.ListArray:
    """Remove the last `n` elements of every list (vectorised over the offsets)."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    values = lists.flatten().to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    row_end = np.repeat(offsets[1:], lengths)
    keep = (row_end - np.arange(len(values))) > n
    new_lengths = np.maximum(lengths - n, 0)
    new_offsets = np.concatenate(([0], np.cumsum(new_lengths))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array(values[keep]))


def leave_last_out(grouped: pd.DataFrame, min_len: int = 3) -> dict[str, pa.Table]:
    """train = sequence minus its last two items, valid = minus the last, test = whole sequence.

    The target of valid/test is the LAST element of each list; everything before it is history.
    Sequences shorter than `min_len` (3: one train item, a valid and a test target) are dropped.
    """
    min_len = max(min_len, 3)
    table = pa.Table.from_pandas(grouped[grouped[LENGTH_COLUMN] >= min_len], preserve_index=False)
    list_cols = [c for c in table.column_names if c.endswith(LIST_SUFFIX)]
    splits = {}
    for name, n in (("train", 2), ("valid", 1), ("test", 0)):
        cols = {c: table[c] for c in table.column_names}
        for c in list_cols:
            cols[c] = drop_last(table[c].combine_chunks(), n)
        cols[LENGTH_COLUMN] = pa.array(
            (table[LENGTH_COLUMN].to_numpy() - n).astype(np.int32)
        )
        splits[name] = pa.table(cols)
    return splits


__all__ = ["drop_last", "leave_last_out", "keep_last_mask"]
