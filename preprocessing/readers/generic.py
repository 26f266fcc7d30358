"""Any CSV or parquet file of interactions, given which of its columns is which.

`columns` maps the schema's names to the file's: {"session_id": "sid", "item_id": "sku",
"timestamp": "ts", "price": "price"}. It must name a key (session_id or user_id), item_id and
timestamp; every other entry is kept as a side column under its schema name. A text file without
a header row (`header: false`) names its columns by 0-based position: {"user_id": 0, ...}.
Text files may use any separator ('\t', ';', '::', 'whitespace' for runs of spaces/tabs) and be
gzip/bz2 compressed (by extension).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._io import (
    CsvLayout, ReaderError, check_file, drop_null_rows, epoch_seconds, first_line, id_column,
    parse_times, read_csv, require_no_nulls, side_column, split_fields,
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


def read_generic(path, columns: dict[str, str | int], time_format: str | None = None,
                 key: str | None = None, sep: str = ",", drop_null_ids: bool = False,
                 header: bool = True) -> pd.DataFrame:
    """time_format: None (numbers are epoch seconds, text is ISO 8601, datetimes as they are),
    a unit ('s', 'ms', 'us', 'ns') for numbers, or a strptime format such as '%d/%m/%Y %H:%M'.
    header: False for a text file without a header row; `columns` then gives positions."""
    key = key_of(columns, key)
    path = Path(path)
    if path.is_dir():
        _require_files(path)
    else:
        check_file(path)
    if str(path).endswith(PARQUET_SUFFIXES) or path.is_dir():
        if not header:
            raise ReaderError(path, "header: false is for text files; parquet has column names")
        table, line = _read_parquet(path, list(columns.values())), None
    else:
        columns = _text_columns(path, columns, sep, header)
        names = _positional_names(path, sep) if not header else list(columns.values())
        layout = CsvLayout(sep=sep, header=header, names=names,
                           types={columns[key]: pa.int64(), columns["item_id"]: pa.int64()},
                           infer_others=True,
                           include=list(dict.fromkeys(columns.values())))
        layout.types[columns["timestamp"]] = pa.string()
        table, line = read_csv(path, layout), layout.first_data_line
    ids = [columns[key], columns["item_id"]]
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
    return pd.DataFrame(out, copy=False)  # the arrays as read: no consolidating copy


def _text_columns(path: Path, columns: dict, sep: str, header: bool) -> dict[str, str]:
    """The mapping with the names the CSV reader will use: positions become '0', '1', ..."""
    positional = {n: c for n, c in columns.items() if isinstance(c, int) and not isinstance(c, bool)}
    if header and positional:
        raise ReaderError(path, f"columns {sorted(positional)} are given by position; set "
                          "header: false for a file without a header row (or name them)")
    if not header:
        named = sorted(set(columns) - set(positional))
        if named:
            raise ReaderError(path, f"header: false, so columns are 0-based positions; got names "
                              f"for {named}: {({n: columns[n] for n in named})}")
        fields = len(split_fields(first_line(path), sep))
        beyond = {n: c for n, c in positional.items() if not 0 <= c < fields}
        if beyond:
            raise ReaderError(path, f"column position(s) {beyond} outside the {fields} "
                              f"{sep!r}-separated field(s) of the first line")
    return {n: str(c) for n, c in columns.items()}


def _positional_names(path: Path, sep: str) -> list[str]:
    return [str(i) for i in range(len(split_fields(first_line(path), sep)))]


def _require_files(folder: Path) -> None:
    if not any(p.is_file() and not p.name.startswith((".", "_")) for p in folder.rglob("*")):
        raise ReaderError(folder, "empty folder: no data files in it")


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
        # Without a format, a column of mostly numbers holds epoch numbers: its odd value out is
        # the one to report, not the first number (which no date parser reads).
        if time_format in UNITS or (time_format is None and numbers.notna().mean() > 0.5):
            _first_bad(numbers.isna().to_numpy(), column, path, name, line,
                       "not an epoch number")
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
        values = column.to_numpy()
        if per_second == 1 and pa.types.is_integer(column.type):  # seconds already: no pass
            return values.astype(np.int64, copy=False)
        return np.floor_divide(values, per_second).astype(np.int64)
    raise ReaderError(path, f"dtype {column.type}, expected epoch numbers, datetimes or text",
                      column=name)


def _first_bad(bad_mask: np.ndarray, text, path, name, line, problem) -> None:
    bad = np.flatnonzero(bad_mask)
    if bad.size:
        row = int(bad[0])
        raise ReaderError(path, f"{problem} {text[row].as_py()!r}", column=name, row=row,
                          line=None if line is None else row + line)
