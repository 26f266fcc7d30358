"""Histories of encoded item ids -> Recformer input tensors, with whole-array numpy operations.
The packing itself (most recent item first, token and item budgets, window padding) is
preprocessing/token_pack.py's, shared with the served preprocessing step.
"""
from __future__ import annotations

import numpy as np
import torch

from seqrec.preprocessing.arrays import offsets_from_lengths
from seqrec.preprocessing.token_pack import KEYS, pack, reverse_rows  # noqa: F401 (re-exported)


def to_tensors(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def single_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item as its own one-item history (values, offsets)."""
    items = np.asarray(items, dtype=np.int64)
    return items, np.arange(len(items) + 1, dtype=np.int64)


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (fewer padded tokens per batch)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def prefix_examples(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, end) with 1 <= end < len(row): history row[:end], target row[end]."""
    lengths = np.diff(offsets)
    units = np.maximum(lengths - 1, 0)
    rows = np.repeat(np.arange(len(lengths)), units)
    ends = 1 + np.arange(int(units.sum())) - np.repeat(offsets_from_lengths(units)[:-1], units)
    return rows, ends


def gather_prefixes(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, ends: np.ndarray,
                    max_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history values, history offsets, targets) of the examples: at most the last `max_items`
    items before each end."""
    starts = offsets[rows] + np.maximum(ends - max_items, 0)
    stops = offsets[rows] + ends
    lengths = stops - starts
    new_offsets = offsets_from_lengths(lengths)
    at = np.arange(int(new_offsets[-1])) - np.repeat(new_offsets[:-1] - starts, lengths)
    return values[at], new_offsets, values[stops].astype(np.int64)
