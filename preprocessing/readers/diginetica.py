"""DIGINETICA (CIKM Cup 2016, track 2) `train-item-views.csv`.

Header `sessionId;userId;itemId;timeframe;eventdate`, ';' separated. userId is `NA` for anonymous
sessions. eventdate is the session's day (`2016-05-09`); timeframe is the time since the session's
first query in milliseconds, so an event's time is eventdate + timeframe. The day carries no time
zone; it is read as UTC midnight.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ._io import (
    CsvLayout, ReaderError, drop_null_rows, epoch_seconds, id_column, read_csv, side_column,
)

LAYOUT = CsvLayout(
    sep=";", header=True, names=["sessionId", "userId", "itemId", "timeframe", "eventdate"],
    types={"sessionId": pa.int64(), "userId": pa.int64(), "itemId": pa.int64(),
           "timeframe": pa.int64(), "eventdate": pa.date32()},
)


def read_diginetica(path, drop_null_ids: bool = False) -> pd.DataFrame:
    """session_id, item_id, timestamp (eventdate + timeframe, epoch seconds), timeframe (ms),
    user_id (nullable Int64)."""
    table = read_csv(path, LAYOUT)
    if drop_null_ids:
        table = drop_null_rows(table, ["sessionId", "itemId"])
    line = LAYOUT.first_data_line
    timeframe = id_column(table["timeframe"], path, "timeframe", line)
    if (timeframe < 0).any():
        row = int(np.flatnonzero(timeframe < 0)[0])
        raise ReaderError(path, f"negative timeframe {timeframe[row]}", column="timeframe",
                          row=row, line=row + line)
    day = epoch_seconds(table["eventdate"], path, "eventdate", line)
    return pd.DataFrame({
        "session_id": id_column(table["sessionId"], path, "sessionId", line),
        "item_id": id_column(table["itemId"], path, "itemId", line),
        "timestamp": day + timeframe // 1000,
        "timeframe": timeframe,
        "user_id": side_column(table["userId"]),
    })
