"""The sequence filters of the ETL, each returning what it dropped and why (for the summary).

Every dropped sequence is counted under one reason, the first that applies, so the counts of a
split add up to the sequences it lost; interactions cut from kept sequences are counted apart.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .arrays import LENGTH_COLUMN


def min_length_reason(min_len: int, needed: int, why: str) -> tuple[int, str]:
    """(the length actually required, how the summary names it): a split that needs longer
    sequences than `min_len` raises it, and says so."""
    if needed > min_len:
        return needed, f"shorter than {needed} items (min_len={min_len} raised: {why})"
    return min_len, f"shorter than min_len={min_len}"


def length_filter(grouped: pd.DataFrame, raw_lengths: np.ndarray | None, min_len: int, needed: int,
                  why: str, max_session_len: int | None, prefix: str = ""
                  ) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """Drop grouped sequences that are too short (after repeat removal and truncation) or whose
    raw interaction count exceeds `max_session_len` (bots, crawlers).

    raw_lengths: interactions per grouped row in the input, aligned with `grouped` (needed only
    with a `max_session_len`).
    Returns the kept rows, the dropped counts by reason, and the mask of kept rows."""
    required, short_reason = min_length_reason(min_len, needed, why)
    short = grouped[LENGTH_COLUMN].to_numpy() < required
    long = np.zeros(len(grouped), dtype=bool)
    if max_session_len is not None:
        if raw_lengths is None:
            raise ValueError("max_session_len needs the raw lengths")
        long = raw_lengths > max_session_len
    reasons = {prefix + short_reason: int(short.sum()),
               f"{prefix}longer than max_session_len={max_session_len}": int((long & ~short).sum())}
    keep = ~(short | long)
    return grouped[keep].reset_index(drop=True), reasons, keep


def raw_lengths(counts: pd.Series, grouped: pd.DataFrame, key: str) -> np.ndarray:
    """Interactions of each grouped key in the raw input (before repeats and truncation), from
    the per-key counts of the input (`frame[key].value_counts()`, or its Dask equivalent)."""
    return counts.reindex(grouped[key]).to_numpy()


def cut_interactions(raw_kept: int, kept: pd.DataFrame, history_cap: int | None, remove_repeats: bool,
                     prefix: str = "") -> dict[str, int]:
    """Interactions of the KEPT sequences (`raw_kept` of them in the input) that are not in their
    lists: older than the last `history_cap` (and consecutive repeats, when removed, which the
    workflow does not count apart)."""
    cut = raw_kept - int(kept[LENGTH_COLUMN].sum())
    what = f"older than the last history_cap={history_cap}"
    if remove_repeats:
        what = f"consecutive repeats or {what}"
    return {f"{prefix}{what}": cut}
