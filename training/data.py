"""Sequences as columns: parquet list columns read as flat values + offsets (`Ragged`), cut and
padded with whole-array operations (preprocessing.arrays); no Python object per sequence."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from seqrec.preprocessing import arrays
from seqrec.preprocessing.arrays import ITEM_LIST, PAD_ID


@dataclass(frozen=True)
class Ragged:
    """Rows of one list column: row r is values[offsets[r]:offsets[r + 1]] (Arrow's layout).
    offsets: int64 [rows + 1], starting at 0."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray | pa.Array) -> "Ragged":
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        offsets = column.offsets.to_numpy().astype(np.int64)
        values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        return cls(values.to_numpy(zero_copy_only=False), offsets - offsets[0])

    @classmethod
    def from_lists(cls, lists: Sequence[np.ndarray], dtype=None) -> "Ragged":
        """From per-row arrays (the form callers of recommend() hold)."""
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        if lengths.sum():
            values = np.concatenate([np.asarray(x) for x in lists])
        else:
            values = np.zeros(0, dtype=dtype or np.int64)
        return cls(values if dtype is None else values.astype(dtype, copy=False),
                   arrays.offsets_from_lengths(lengths))

    @classmethod
    def concat(cls, parts: Sequence["Ragged"]) -> "Ragged":
        """The rows of every part, one after the other."""
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(np.concatenate([p.values for p in parts]), arrays.offsets_from_lengths(lengths))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, index):
        """One row (an array view), or a Ragged for a slice."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            stop = max(stop, start)
            a, b = self.offsets[start], self.offsets[stop]
            return Ragged(self.values[a:b], self.offsets[start:stop + 1] - a)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.values[self.offsets[index]:self.offsets[index + 1]]

    def __iter__(self) -> Iterable[np.ndarray]:  # for tools and tests, not the batch paths
        return (self[i] for i in range(len(self)))

    def take(self, rows) -> "Ragged":
        return Ragged(*arrays.take_rows(self.values, self.offsets, np.asarray(rows, dtype=np.int64)))

    def drop_last(self, n: int = 1) -> "Ragged":
        return Ragged(*arrays.drop_last(self.values, self.offsets, n))

    def last(self) -> np.ndarray:
        return arrays.last_values(self.values, self.offsets)

    def pad(self, max_len: int | None = None, dtype=np.int64, pad_value=PAD_ID) -> np.ndarray:
        return arrays.pad(self.values, self.offsets, max_len, pad_value, dtype)


Rows = Union[Ragged, Sequence[np.ndarray]]


def as_ragged(rows: Rows) -> Ragged:
    return rows if isinstance(rows, Ragged) else Ragged.from_lists(rows)


def read_columns(path: str | Path, columns: Sequence[str]) -> dict[str, Ragged]:
    """List columns of a sequences parquet file, each as values + offsets (no per-row objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `seqrec preprocess` first")
    table = pq.read_table(path, columns=list(columns))
    return {c: Ragged.from_arrow(table[c]) for c in columns}


def keep_rows(columns: dict[str, Ragged], rows: np.ndarray) -> dict[str, Ragged]:
    """The same rows of every column."""
    return {c: r.take(rows) for c, r in columns.items()}


def pad_right(lists: Rows, max_len: int | None = None, dtype=np.int64) -> torch.Tensor:
    """Stack rows into [B, T] (int64, or `dtype` for side-feature values), keeping the LAST
    max_len items, padding on the right."""
    return torch.from_numpy(as_ragged(lists).pad(max_len, dtype))


def split_history_target(lists: Rows, positions: np.ndarray | None = None) -> tuple[Ragged, np.ndarray]:
    """Eval rows -> (histories, targets). The target is the last element, or row[positions[i]];
    the history is everything BEFORE the target and nothing else (what the model may see)."""
    rows = as_ragged(lists)
    if positions is None:
        return rows.drop_last(1), rows.last().astype(np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    bad = np.flatnonzero((positions < 0) | (positions >= rows.lengths))
    if bad.size:
        raise ValueError(f"position {positions[bad[0]]} is outside row {bad[0]} of length {rows.lengths[bad[0]]}")
    targets = rows.values[rows.offsets[:-1] + positions].astype(np.int64)
    within = np.arange(len(rows.values)) - np.repeat(rows.offsets[:-1], rows.lengths)
    keep = within < np.repeat(positions, rows.lengths)
    return Ragged(rows.values[keep], arrays.offsets_from_lengths(positions)), targets


def sliding_windows(lengths: np.ndarray, span: int, stride: int, min_items: int = 2
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of at most `span` consecutive items over rows of `lengths`, laid from the END of
    each row every `stride` items: (row, start, end) int64, row-local, [start, end) holds
    end - start items. The most recent window is always full (or the whole row); only the
    oldest one may be short. Windows of fewer than `min_items` are left out (nothing to learn
    from one item). stride = span - 1 overlaps consecutive windows by one item: the first item
    of a window is an input only, so every later item is a target in exactly one window."""
    if not 1 <= stride <= span:
        raise ValueError(f"stride {stride} must lie in [1, span={span}]")
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.where(lengths > 0, 1 + -(-np.maximum(lengths - span, 0) // stride), 0)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    ends = lengths[rows] - k * stride
    starts = np.maximum(ends - span, 0)
    keep = ends - starts >= min_items
    return rows[keep], starts[keep], ends[keep]


def target_windows(lengths: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window per target: for every item t >= 1 of every row, the window of at most `span`
    items ending with it, [max(0, t + 1 - span), t + 1) (row, start, end), oldest first."""
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.maximum(lengths - 1, 0)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    ends = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) + 2
    return rows, np.maximum(ends - span, 0), ends


def gather_windows(values: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor,
                   pad_value=PAD_ID) -> torch.Tensor:
    """values[starts[b]:starts[b] + lengths[b]] for every b, as one right-padded [B, W, ...]
    batch (W the longest window): one index into the flat values, nothing copied per window."""
    width = int(lengths.max()) if len(lengths) else 1
    at = starts[:, None] + torch.arange(width)[None]
    keep = torch.arange(width)[None] < lengths[:, None]
    batch = values[at.clamp(max=max(len(values) - 1, 0))]
    mask = keep.reshape(*keep.shape, *([1] * (batch.dim() - 2)))
    return batch.masked_fill(~mask, pad_value)
