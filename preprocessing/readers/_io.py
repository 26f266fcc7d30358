"""Shared reading machinery: one fast typed read, and a slow diagnosis only when it fails.

Files are read with pyarrow's multi-threaded CSV reader straight into the target types. When a
value does not convert, Arrow says which value but not where, so the file is read again as text
and the first bad row is located with vectorised checks; the error then names file, column, row
and value. Nothing here loops over rows in Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ..interactions import InteractionError

NULL_VALUES = ["", "NA", "NULL", "null", "NaN", "nan"]
# `sep` values meaning "one or more spaces or tabs" (the `.dat`/`.txt` dumps aligned by hand)
WHITESPACE = ("whitespace", r"\s+")
# Arrow's reader takes one delimiter byte: multi-character and whitespace separators are rewritten
# to this control byte (never legitimate in text data) before parsing.
_UNIT_SEPARATOR = b"\x1f"


class ReaderError(InteractionError):
    """A raw file that cannot become an interaction frame: says file, column, row and problem."""

    def __init__(self, file, problem: str, column: str | None = None, row: int | None = None,
                 line: int | None = None):
        self.file, self.problem, self.column, self.row = str(file), problem, column, row
        where = f"column '{column}'" if column else ""
        if row is not None:
            where += f" row {row}" + (f" (line {line})" if line is not None else "")
        super().__init__(f"{self.file}: {where.strip() + ': ' if where.strip() else ''}{problem}")


@dataclass
class CsvLayout:
    """How one public text layout looks: separator, header, column names and target types."""

    sep: str
    names: list[str]  # the file's own column names, in file order
    header: bool
    types: dict[str, pa.DataType] = field(default_factory=dict)  # columns read as non-text
    timestamp_formats: list[str] = field(default_factory=list)  # strptime formats, else ISO 8601
    include: list[str] | None = None  # read only these (e.g. the ':' columns of '::' files)
    infer_others: bool = False  # columns not in `types`: Arrow infers (True) or keeps text
    quoted: bool = True  # False: '"' is an ordinary character (formats that never quote)

    @property
    def first_data_line(self) -> int:
        return 2 if self.header else 1


def check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "file not found")
    if not path.is_file():
        raise ReaderError(path, "not a regular file (a folder?)")
    if path.stat().st_size == 0:
        raise ReaderError(path, "empty input (0 bytes)")
    return path


def read_csv(path, layout: CsvLayout) -> pa.Table:
    """The file as an Arrow table with the layout's types; text columns stay strings."""
    path = check_file(path)
    try:
        table = _arrow_read(path, layout, layout.types)
    except pa.ArrowInvalid as err:
        _diagnose(path, layout, err)  # raises a located ReaderError
        raise ReaderError(path, f"unreadable: {err}") from err  # pragma: no cover
    except (OSError, UnicodeDecodeError) as err:
        raise ReaderError(path, f"unreadable: {err}") from err
    if table.num_rows == 0:
        raise ReaderError(path, "empty input (no data rows)")
    return table


def split_fields(line: str, sep: str) -> list[str]:
    """One text line cut into fields the way the reader cuts it (quotes stripped)."""
    cells = line.split() if sep in WHITESPACE else line.split(sep)
    return [c.strip('"') for c in cells]


def _csv_source(path: Path, sep: str):
    """(what Arrow reads, its one-byte delimiter): the path itself for a one-character separator,
    else the decompressed bytes with every separator rewritten to one control byte."""
    if len(sep) == 1 and sep not in WHITESPACE:
        return path, sep
    if not sep:
        raise ReaderError(path, "empty separator")
    with pa.input_stream(str(path)) as stream:  # decompresses .gz/.bz2 by extension
        data = stream.read()
    if _UNIT_SEPARATOR in data:
        raise ReaderError(path, "holds the control byte 0x1f, which the reader uses internally")
    if sep in WHITESPACE:
        data = re.sub(rb"(?m)^[ \t]+|[ \t]+(?=\r?$)", b"", data)
        data = re.sub(rb"[ \t]+", _UNIT_SEPARATOR, data)
    else:
        data = data.replace(sep.encode(), _UNIT_SEPARATOR)
    return pa.BufferReader(data), _UNIT_SEPARATOR.decode()


def _arrow_read(path: Path, layout: CsvLayout, types: dict) -> pa.Table:
    names = layout.names
    read = pcsv.ReadOptions(column_names=None if layout.header else names, block_size=1 << 24)
    source, delimiter = _csv_source(path, layout.sep)
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if layout.quoted else False)
    convert = pcsv.ConvertOptions(
        column_types={**({} if layout.infer_others else {c: pa.string() for c in names}), **types},
        null_values=NULL_VALUES, strings_can_be_null=True,
        timestamp_parsers=layout.timestamp_formats or None,
        include_columns=layout.include,
    )
    if layout.header:
        _check_header(path, layout)
    return pcsv.read_csv(source, read_options=read, parse_options=parse, convert_options=convert)


def _check_header(path: Path, layout: CsvLayout) -> None:
    first = first_line(path)
    found = split_fields(first, layout.sep)
    wanted = layout.include or layout.names
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ReaderError(
            path, f"missing column(s) {missing} in the header; found {found} "
            f"(expected {layout.sep!r}-separated {layout.names})"
        )


def first_line(path: Path) -> str:
    try:
        with pa.input_stream(str(path)) as stream:  # handles .gz/.bz2 by extension
            head = stream.read(1 << 16)
    except OSError as err:
        raise ReaderError(path, f"unreadable: {err}") from err
    return head.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")


def _diagnose(path: Path, layout: CsvLayout, err: Exception) -> None:
    """Re-read as text and raise a ReaderError at the first value that does not convert."""
    try:
        text = _arrow_read(path, layout, {})
    except pa.ArrowInvalid as parse_err:  # a structural problem (field count, quoting)
        raise ReaderError(path, f"unparsable CSV ({parse_err})") from parse_err
    for name, typ in layout.types.items():
        values = text.column(name)
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            parsed = parse_times(values, layout.timestamp_formats or None)
            problem = "unparsable timestamp"
        else:
            parsed = pa.array(pd.to_numeric(values.to_pandas(), errors="coerce"))
            problem = "not an integer" if pa.types.is_integer(typ) else "not a number"
            if pa.types.is_integer(typ) and parsed.null_count < len(parsed):
                whole = pd.Series(parsed.to_numpy(zero_copy_only=False))
                parsed = pa.array(whole.where(whole == np.floor(whole)))
        bad = np.flatnonzero(parsed.is_null().to_numpy(zero_copy_only=False)
                             & values.is_valid().to_numpy(zero_copy_only=False))
        if bad.size:
            row = int(bad[0])
            raise ReaderError(path, f"{problem} {values[row].as_py()!r}", column=name, row=row,
                              line=row + layout.first_data_line) from err


def parse_times(values, formats: list[str] | None = None) -> pa.Array:
    """Strings -> timestamp[ns, UTC]; an unparsable value becomes null (callers report it)."""
    series = pd.Series(values.to_pandas() if hasattr(values, "to_pandas") else values)
    if formats:  # explicit strptime format(s): Arrow's C++ strptime, null on failure
        arr = pa.array(series, type=pa.string())
        out = None
        for fmt in formats:
            got = pc.strptime(arr, format=fmt, unit="s", error_is_null=True)
            out = got if out is None else pc.coalesce(out, got)
        return out.cast(pa.timestamp("s", tz="UTC")).cast(pa.timestamp("ns", tz="UTC"))
    # ISO 8601 (with or without fraction / zone): pandas' vectorised ISO parser
    parsed = pd.to_datetime(series, errors="coerce", utc=True)
    return pa.array(parsed, type=pa.timestamp("ns", tz="UTC"))


def epoch_seconds(column, file, name: str, first_line: int | None = None) -> np.ndarray:
    """Arrow timestamp/date column -> int64 seconds since 1970-01-01 UTC (floored)."""
    column = _combine(column)
    require_no_nulls(column, file, name, first_line, "null timestamp")
    if pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("s"))
    unit = column.type.unit
    ticks = column.cast(pa.timestamp(unit, tz=column.type.tz)).cast(pa.int64()).to_numpy()
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    return np.floor_divide(ticks, per_second)


def require_no_nulls(column, file, name: str, first_line: int | None, problem: str) -> None:
    column = _combine(column)
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        line = None if first_line is None else row + first_line
        raise ReaderError(file, f"{problem} ({column.null_count} in all)", column=name, row=row,
                          line=line)


def id_column(column, file, name: str, first_line: int | None = None) -> np.ndarray:
    """A non-null integer id column as int64 numpy."""
    column = _combine(column)
    if not pa.types.is_integer(column.type):
        raise ReaderError(file, f"dtype {column.type}, expected integer ids", column=name)
    require_no_nulls(column, file, name, first_line, "null id")
    return column.cast(pa.int64()).to_numpy()


def drop_null_rows(table: pa.Table, columns: list[str]) -> pa.Table:
    keep = None
    for name in columns:
        valid = table.column(name).is_valid()
        keep = valid if keep is None else pc.and_(keep, valid)
    return table.filter(keep)


def side_column(column) -> pd.Series | np.ndarray:
    """Side columns with compact pandas dtypes: text -> category, ints with nulls -> Int64."""
    column = _combine(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.dictionary_encode().to_pandas()  # pandas Categorical, nulls as NaN
    if pa.types.is_integer(column.type):
        if column.null_count:
            return pd.array(column.to_pandas(), dtype="Int64")
        return column.cast(pa.int64()).to_numpy()
    return column.to_pandas()


def _combine(column):
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
