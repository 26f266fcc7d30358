"""REES46 e-commerce behaviour data (`2019-Oct.csv`, `2019-Nov.csv`, ...).

Header `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
user_session`; times look like `2019-10-01 00:00:00 UTC`; user_session is a UUID string.

The session UUID becomes an int64 WITHOUT a lookup table: its first 64 bits (16 hex digits). The
code is the same in every monthly file (a session crossing midnight of a month end keeps one id),
and a collision is checked for and reported rather than silently merging two sessions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._io import (
    CsvLayout, ReaderError, drop_null_rows, epoch_seconds, id_column, read_csv,
    require_no_nulls, side_column,
)

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
LAYOUT = CsvLayout(
    sep=",", header=True,
    names=["event_time", "event_type", "product_id", "category_id", "category_code", "brand",
           "price", "user_id", "user_session"],
    types={"event_time": pa.timestamp("s"), "product_id": pa.int64(),
           "category_id": pa.int64(), "price": pa.float64(), "user_id": pa.int64()},
    timestamp_formats=["%Y-%m-%d %H:%M:%S UTC"],  # the literal " UTC" says the zone
)

_HEX = np.full(256, 255, dtype=np.uint8)
for _digits, _base in ((b"0123456789", 0), (b"abcdef", 10), (b"ABCDEF", 10)):
    _HEX[np.frombuffer(_digits, np.uint8)] = np.arange(len(_digits), dtype=np.uint8) + _base
_UUID_HEX_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def uuid_to_int64(values, file="<memory>", column="user_session", first_line=None) -> np.ndarray:
    """8-4-4-4-12 UUID strings -> int64 of their first 64 bits; vectorised over a byte matrix."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    values = pa.array(values, type=pa.string()) if not isinstance(values, pa.Array) else values
    require_no_nulls(values, file, column, first_line, "null id")
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != 36)
    if bad.size == 0:
        offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset:values.offset + 1]
        raw = np.frombuffer(values.buffers()[2], np.uint8)
        chars = raw[offsets[0]:offsets[0] + 36 * len(values)].reshape(len(values), 36)
        nibbles = _HEX[chars[:, _UUID_HEX_POS]]
        dashes = (chars[:, [8, 13, 18, 23]] == ord("-")).all(axis=1)
        bad = np.flatnonzero((nibbles == 255).any(axis=1) | ~dashes)
    if bad.size:
        row = int(bad[0])
        raise ReaderError(file, f"not a UUID {values[row].as_py()!r}", column=column, row=row,
                          line=None if first_line is None else row + first_line)
    # two nibbles per byte, then the 8 leading bytes read as one big-endian integer
    packed = np.ascontiguousarray((nibbles[:, 0:16:2] << 4) | nibbles[:, 1:16:2])
    return packed.view(">u8").ravel().astype(np.uint64).view(np.int64)


def read_rees46(path, event_types=EVENT_TYPES, drop_null_ids: bool = False) -> pd.DataFrame:
    """session_id (from user_session), item_id (product_id), timestamp, user_id, event_type,
    category_id, category_code, brand, price; only rows whose event_type is in `event_types`."""
    table = read_csv(path, LAYOUT)
    if event_types is not None:
        table = table.filter(pc.is_in(table["event_type"], pa.array(list(event_types))))
        if table.num_rows == 0:
            raise ReaderError(path, f"no rows with event_type in {list(event_types)}",
                              column="event_type")
    if drop_null_ids:
        table = drop_null_rows(table, ["user_session", "product_id"])
    # after filtering, rows no longer match file lines: report the row among the kept rows
    line = LAYOUT.first_data_line if event_types is None and not drop_null_ids else None
    session = uuid_to_int64(table["user_session"], path, "user_session", line)
    _check_collisions(session, table["user_session"], path)
    return pd.DataFrame({
        "session_id": session,
        "item_id": id_column(table["product_id"], path, "product_id", line),
        "timestamp": epoch_seconds(table["event_time"], path, "event_time", line),
        "user_id": id_column(table["user_id"], path, "user_id", line),
        "event_type": side_column(table["event_type"]),
        "category_id": side_column(table["category_id"]),
        "category_code": side_column(table["category_code"]),
        "brand": side_column(table["brand"]),
        "price": side_column(table["price"]),
    })


def _check_collisions(codes: np.ndarray, strings, path) -> None:
    if pc.count_distinct(strings).as_py() != len(pd.unique(codes)):
        raise ReaderError(path, "two session UUIDs share their first 64 bits; "
                          "encode user_session with read_generic instead", column="user_session")
