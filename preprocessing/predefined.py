"""Predefined splits: the dataset says which sessions are train, valid and test.

The vocabulary (and every other fitted statistic) comes from the training split only. In valid
and test, an item the training split never had cannot be recommended nor embedded, so, as in
Cornac's `exclude_unknowns` protocol: unknown items are dropped from histories, and a session
whose target (its last item) is unknown, or that keeps fewer than 2 known items, is skipped.
Every skipped session and dropped item is counted in the summary.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .interactions import InteractionError
from .arrays import group_offsets

SPLITS = ("train", "valid", "test")
MIN_KNOWN = 2  # a history item and a target
UNKNOWN_TARGET = "unknown target (not in the training split's vocabulary)"
FEW_KNOWN = f"fewer than {MIN_KNOWN} known items"
UNKNOWN_ITEMS = "unknown items dropped from histories"


def split_by_column(frame: pd.DataFrame, column: str, source: str) -> dict[str, pd.DataFrame]:
    """One frame with a split column (values train / valid / test) -> one frame per split,
    without that column."""
    if column not in frame.columns:
        raise InteractionError(f"{source}: split_column {column!r} not among the columns "
                               f"{list(frame.columns)} (map it in the source's columns)")
    labels = frame[column].astype(str).to_numpy()
    odd = sorted(set(np.unique(labels)) - set(SPLITS))
    if odd:
        first = int(np.flatnonzero(~np.isin(labels, SPLITS))[0])
        raise InteractionError(f"{source}: column {column!r} holds {odd} (first at row {first}); "
                               f"expected only {list(SPLITS)}")
    rest = frame.drop(columns=[column])
    return {s: rest[labels == s].reset_index(drop=True) for s in SPLITS}


def check_splits(frames: dict[str, pd.DataFrame], source: str) -> None:
    missing = [s for s in SPLITS if s not in frames or len(frames[s]) == 0]
    if missing:
        raise InteractionError(f"{source}: predefined split without {missing} interactions; "
                               f"it needs train, valid and test")
    columns = {s: list(f.columns) for s, f in frames.items()}
    if len({tuple(c) for c in columns.values()}) != 1:
        raise InteractionError(f"{source}: the splits have different columns {columns}")


def exclude_unknowns(frame: pd.DataFrame, known: np.ndarray, key: str, time_col: str
                     ) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """Raw valid/test rows -> the rows to keep, sessions skipped by reason, items dropped.

    known: per row, whether its item is in the training vocabulary. A session's target is its
    last row in (time, input) order, the order the workflow sorts by."""
    order = np.lexsort((frame[time_col].to_numpy(), frame[key].to_numpy()))
    offsets = group_offsets(frame[key].to_numpy()[order])
    lengths = np.diff(offsets)
    known_sorted = known[order]
    target_known = known_sorted[offsets[1:] - 1] if len(order) else np.zeros(0, dtype=bool)
    known_count = np.add.reduceat(known_sorted, offsets[:-1]) if len(order) else np.zeros(0, int)
    unknown_target = ~target_known
    few = target_known & (known_count < MIN_KNOWN)
    kept = ~(unknown_target | few)
    keep_rows = np.zeros(len(frame), dtype=bool)
    keep_rows[order] = np.repeat(kept, lengths) & known_sorted
    skipped = {UNKNOWN_TARGET: int(unknown_target.sum()), FEW_KNOWN: int(few.sum())}
    dropped = {UNKNOWN_ITEMS: int((np.repeat(kept, lengths) & ~known_sorted).sum())}
    return frame[keep_rows].reset_index(drop=True), skipped, dropped
