"""Any CSV or parquet file of interactions, given which of its columns is which.

`columns` maps the schema's names to the file's: {"session_id": "sid", "item_id": "sku",
"timestamp": "ts", "price": "price"}. It must name a key (session_id or user_id), item_id and
timestamp; every other entry is kept as a side column under its schema name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._io import (
    CsvLayout, ReaderError, check_file, drop_null_rows, epoch_seconds, id_column, parse_times,
    read_csv, require_no_nulls, side_column,
)

UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
PARQUET_SUFFIXES = (".parquet", ".pq")


def key_of(columns: dict[str, str], key: str | None = None) -> str:
    if key is None:
        key = "session_id" if "session_id" in columns else "user_id"
    missing = [c for c in (key, "item_id", "timestamp") if c not in columns]
    if missing:
        raise ReaderError("column mapping", f"missing {missing}; it must map {key!r}, 'item_id' "
                          f"and 'timestamp' to the file's columns, got {columns}")
    return key


def read_generic(path, columns: dict[str, str], time_format: str | None = None,
                 key: str | None = None, sep: str = ",", drop_null_ids: bool = False
                 ) -> pd.DataFrame:
    """time_format: None (numbers are epoch seconds, text is ISO 8601, datetimes as they are),
    a unit ('s', 'ms', 'us', 'ns') for numbers, or a strptime format such as '%d/%m/%Y %H:%M'."""
    key = key_of(columns, key)
    path = check_file(path) if not Path(path).is_dir() else Path(path)
    ids = [columns[key], columns["item_id"]]
    if str(path).endswith(PARQUET_SUFFIXES) or path.is_dir():
        table, line = _read_parquet(path, list(columns.values())), None
    else:
        layout = CsvLayout(sep=sep, header=True, names=list(columns.values()),
                           types={c: pa.int64() for c in ids}, infer_others=True,
                           include=list(dict.fromkeys(columns.values())))
        layout.types[columns["timestamp"]] = pa.string()
        table, line = read_csv(path, layout), 2
    if drop_null_ids:
        table, line = drop_null_rows(table, ids), None
    out = {
        key: id_column(table[columns[key]], path, columns[key], line),
        "item_id": id_column(table[columns["item_id"]], path, columns["item_id"], line),
        "timestamp": _epoch(table[columns["timestamp"]], time_format, path, columns["timestamp"],
                            line),
    }
    for name, source in columns.items():
        if name not in out:
            out[name] = side_column(table[source])
    return pd.DataFrame(out)


def _read_parquet(path: Path, wanted: list[str]) -> pa.Table:
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise ReaderError(path, f"missing column(s) {missing}; found {schema.names}")
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    except (OSError, pa.ArrowException) as err:
        raise ReaderError(path, f"unreadable parquet ({err})") from err
    if table.num_rows == 0:
        raise ReaderError(path, "empty input (no data rows)")
    return table


def _epoch(column, time_format, path, name, line) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    require_no_nulls(column, path, name, line, "null timestamp")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return epoch_seconds(column, path, name, line)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        numbers = pd.to_numeric(column.to_pandas(), errors="coerce")
        if time_format in UNITS or (time_format is None and numbers.notna().all()):
            _first_bad(numbers.isna().to_numpy(), column, path, name, line, "not a number")
            column = pa.array(numbers)
        else:
            parsed = parse_times(column, [time_format] if time_format else None)
            _first_bad(parsed.is_null().to_numpy(zero_copy_only=False), column, path, name, line,
                       "unparsable timestamp")
            return epoch_seconds(parsed, path, name, line)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        per_second = UNITS.get(time_format or "s")
        if per_second is None:
            raise ReaderError(path, f"numeric times but time_format {time_format!r}; use one of "
                              f"{list(UNITS)}", column=name)
        return np.floor_divide(column.to_numpy(), per_second).astype(np.int64)
    raise ReaderError(path, f"dtype {column.type}, expected epoch numbers, datetimes or text",
                      column=name)


def _first_bad(bad_mask: np.ndarray, text, path, name, line, problem) -> None:
    bad = np.flatnonzero(bad_mask)
    if bad.size:
        row = int(bad[0])
        raise ReaderError(path, f"{problem} {text[row].as_py()!r}", column=name, row=row,
                          line=None if line is None else row + line)
