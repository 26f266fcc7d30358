"""The cold-start split: a seeded share of the catalogue is held out of ALL training (tokenizer,
pretraining, fine-tuning); evaluation rows are then told apart by whether their target is held
out (cold) or not (warm)."""
from __future__ import annotations

import numpy as np

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, offsets_from_lengths, row_ids

from ..data import Ragged, as_ragged


def cold_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """Bool [num_items]: the held-out items, round(fraction * real items) of them (reserved ids
    never)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"cold_fraction {fraction}: must be in [0, 1)")
    real = np.arange(FIRST_ITEM_ID, num_items)
    picked = np.random.default_rng(seed).choice(real, size=int(round(fraction * len(real))), replace=False)
    mask = np.zeros(num_items, dtype=bool)
    mask[picked] = True
    return mask


def drop_items(rows, held_out: np.ndarray, min_len: int = 2) -> Ragged:
    """The rows without any held-out item; rows left shorter than `min_len` are dropped."""
    rows = as_ragged(rows)
    keep = ~held_out[rows.values.astype(np.int64)]
    lengths = np.bincount(row_ids(rows.offsets)[keep], minlength=len(rows))
    kept = Ragged(rows.values[keep], offsets_from_lengths(lengths))
    return kept.take(np.flatnonzero(lengths >= min_len))


def split_targets(rows, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(warm row indices, cold row indices) by each row's last item."""
    cold = held_out[as_ragged(rows).last().astype(np.int64)]
    return np.flatnonzero(~cold), np.flatnonzero(cold)
