"""Ragged id lists -> right-padded tensors."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from seqrec.preprocessing.workflow import PAD_ID


def pad_right(lists: Sequence[np.ndarray], max_len: int | None = None, dtype=np.int64) -> torch.Tensor:
    """Stack lists into [B, T] (int64, or `dtype` for side-feature values), keeping the LAST
    max_len items, padding on the right."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    width = int(lengths.max()) if len(lengths) else 0
    out = np.full((len(lists), max(width, 1)), PAD_ID, dtype=dtype)
    if width:
        # Flatten the kept tails once and scatter them with one fancy-index assignment.
        tails = np.concatenate([np.asarray(x, dtype=dtype)[len(x) - n:] for x, n in zip(lists, lengths)])
        rows = np.repeat(np.arange(len(lists)), lengths)
        cols = np.arange(len(tails)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = tails
    return torch.from_numpy(out)


def split_history_target(lists: Sequence[np.ndarray], positions: np.ndarray | None = None
                         ) -> tuple[list[np.ndarray], np.ndarray]:
    """Eval rows -> (histories, targets). The target is the last element, or row[positions[i]];
    the history is everything BEFORE the target and nothing else (what the model may see)."""
    if positions is None:
        positions = np.fromiter((len(x) - 1 for x in lists), dtype=np.int64, count=len(lists))
    histories = [np.asarray(x[:p]) for x, p in zip(lists, positions)]
    targets = np.fromiter((x[p] for x, p in zip(lists, positions)), dtype=np.int64, count=len(lists))
    return histories, targets


def gather_units(matrix: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Training examples matrix[row, :end] as one right-padded batch, trimmed to its longest row.
    Prefixes are index pairs into one padded matrix: nothing is copied per prefix beforehand."""
    width = int(ends.max())
    batch = matrix[rows, :width]
    keep = torch.arange(width)[None] < ends[:, None]
    return batch.masked_fill(~keep, PAD_ID)
