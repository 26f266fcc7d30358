"""The one interaction schema every reader produces, and its checks.

An interaction frame has a session-or-user id, an item id and a timestamp (int64 seconds); the
checks name the source, the column and the problem so a bad file is easy to fix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from seqrec.errors import SeqrecError

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")


class InteractionError(SeqrecError, ValueError):
    """Raised for input that cannot become an interaction frame."""


def validate_interactions(
    frame: pd.DataFrame, source: str, columns: tuple[str, ...] | None = None, key: str = "user_id"
) -> pd.DataFrame:
    """Check columns, nulls and integer dtypes; return the frame with int64 columns.

    `key` names the sequence key (`user_id` or `session_id`); `columns`, when given, replaces
    the checked set (key, item_id, timestamp) altogether.
    """
    if columns is None:
        columns = (key,) + REQUIRED_COLUMNS[1:]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InteractionError(
            f"{source}: missing column(s) {missing}; found {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise InteractionError(f"{source}: no interactions (empty input)")
    out = frame.copy()
    for col in columns:
        values = out[col]
        nulls = int(values.isna().sum())
        if nulls:
            first = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise InteractionError(
                f"{source}: column '{col}' has {nulls} null or non-numeric value(s) "
                f"(first at row {first})"
            )
        if not pd.api.types.is_numeric_dtype(values):
            raise InteractionError(f"{source}: column '{col}' has dtype {values.dtype}, expected integers")
        as_int = values.astype(np.int64)
        if not np.array_equal(as_int.to_numpy(), values.to_numpy()):
            raise InteractionError(f"{source}: column '{col}' holds non-integer numbers")
        out[col] = as_int
    return out
