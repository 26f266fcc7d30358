"""MovieLens ratings in the three GroupLens layouts, told apart by the first line.

- 100k `u.data`: `user id<TAB>item id<TAB>rating<TAB>timestamp`, no header;
- 1M / 10M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header;
- 20M / 25M / latest `ratings.csv`: header `userId,movieId,rating,timestamp`.
Timestamps are already epoch seconds.
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ._io import (
    CsvLayout, ReaderError, check_file, drop_null_rows, first_line, epoch_seconds, id_column, read_csv,
)

_TYPES = {"user_id": pa.int64(), "item_id": pa.int64(), "rating": pa.float64(),
          "timestamp": pa.int64()}
LAYOUTS = {
    "u.data": CsvLayout(sep="\t", header=False, names=list(_TYPES), types=_TYPES),
    # '::' is two one-character separators around an empty field: Arrow's reader takes ':' and
    # keeps the four real fields
    "ratings.dat": CsvLayout(
        sep=":", header=False, names=["user_id", "_1", "item_id", "_2", "rating", "_3", "timestamp"],
        types=_TYPES, include=list(_TYPES),
    ),
    "ratings.csv": CsvLayout(
        sep=",", header=True, names=["userId", "movieId", "rating", "timestamp"],
        types={"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(),
               "timestamp": pa.int64()},
    ),
}


def detect_layout(path) -> str:
    """'u.data', 'ratings.dat' or 'ratings.csv', from the file's first line."""
    path = check_file(path)
    first = first_line(path)
    if "::" in first:
        return "ratings.dat"
    if first.startswith("userId,"):
        return "ratings.csv"
    if "\t" in first:
        return "u.data"
    raise ReaderError(path, f"not a MovieLens ratings layout (first line {first.strip()!r}); "
                      "expected u.data (tab separated), ratings.dat ('::') or ratings.csv "
                      "(header userId,movieId,rating,timestamp)")


def read_movielens(path, drop_null_ids: bool = False) -> pd.DataFrame:
    """user_id, item_id, timestamp (int64 epoch seconds), rating (float32)."""
    layout = LAYOUTS[detect_layout(path)]
    table = read_csv(path, layout)
    user, item, rating, time = (layout.include or layout.names)[:4] if layout.header else (
        "user_id", "item_id", "rating", "timestamp")
    if drop_null_ids:
        table = drop_null_rows(table, [user, item])
    line = layout.first_data_line
    return pd.DataFrame({
        "user_id": id_column(table[user], path, user, line),
        "item_id": id_column(table[item], path, item, line),
        "timestamp": epoch_seconds(table[time].cast(pa.timestamp("s", tz="UTC")), path, time, line),
        "rating": table[rating].to_numpy().astype("float32"),
    })
