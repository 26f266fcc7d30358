"""YOOCHOOSE (RecSys Challenge 2015) `yoochoose-clicks.dat`.

No header, comma separated: session_id, ISO 8601 UTC time with milliseconds
(`2014-04-07T10:51:09.277Z`), item_id, category. The category is text: "0" (unknown), "S" (a
special offer), "1".."12" or a brand id of 8-10 digits, so it stays a categorical column.
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ._io import CsvLayout, drop_null_rows, epoch_seconds, id_column, read_csv, side_column

LAYOUT = CsvLayout(
    sep=",", header=False, names=["session_id", "timestamp", "item_id", "category"],
    types={"session_id": pa.int64(), "item_id": pa.int64(),
           "timestamp": pa.timestamp("ms", tz="UTC")},  # Arrow's ISO 8601 parser
)


def read_yoochoose(path, drop_null_ids: bool = False) -> pd.DataFrame:
    """session_id, item_id, timestamp (int64 epoch seconds), category (categorical)."""
    table = read_csv(path, LAYOUT)
    if drop_null_ids:
        table = drop_null_rows(table, ["session_id", "item_id"])
    line = LAYOUT.first_data_line
    return pd.DataFrame({
        "session_id": id_column(table["session_id"], path, "session_id", line),
        "item_id": id_column(table["item_id"], path, "item_id", line),
        "timestamp": epoch_seconds(table["timestamp"], path, "timestamp", line),
        "category": side_column(table["category"]),
    })
