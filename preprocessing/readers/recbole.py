"""RecBole atomic files: tab-separated text whose header cells are `name:type`.

Types: `token` (an id or a label), `float`, `token_seq` / `float_seq` (space-separated lists).
- `.inter` interactions (`user_id:token item_id:token rating:float timestamp:float`) -> the
  interaction schema, other fields kept as side columns;
- sequence files (`user_id:token item_id_list:token_seq item_id:token`, the `.train.inter` /
  `.valid.inter` / `.test.inter` of RecBole's benchmark splits) -> one sequence per key: the
  history followed by the target, `timestamp` the position in it (the files carry no times).
  Training files list every prefix of a sequence as its own row (data augmentation); those rows
  are collapsed back into the one sequence they came from, after checking they are prefixes;
- `.item` / `.text` item attributes (`item_id:token text:token_seq`) -> an item table.
Ids must be integer tokens (what RecBole's own remapped benchmark files hold).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._io import CsvLayout, ReaderError, check_file, first_line, read_csv, side_column

TYPES = ("token", "float", "token_seq", "float_seq")
HISTORY, TARGET = "item_id_list", "item_id"
FIRST_DATA_LINE = 2  # line 1 is the `name:type` header


def atomic_fields(path) -> dict[str, str]:
    """The header as {name: type}, in file order, checked against RecBole's types."""
    path = check_file(path)
    fields: dict[str, str] = {}
    for cell in first_line(path).split("\t"):
        name, _, kind = cell.partition(":")
        if kind not in TYPES:
            raise ReaderError(path, f"header cell {cell!r} is not `name:type` with a type in "
                              f"{list(TYPES)} (is this a RecBole atomic file?)")
        fields[name] = kind
    return fields


def read_atomic(path) -> tuple[pa.Table, dict[str, str]]:
    """All fields as text (column names without their `:type`), and the header's types."""
    fields = atomic_fields(path)
    cells = [f"{n}:{t}" for n, t in fields.items()]
    # RecBole does not quote: a '"' in a title is part of the title
    layout = CsvLayout(sep="\t", header=True, names=cells, quoted=False)
    table = read_csv(path, layout)
    return table.rename_columns(list(fields)), fields


def read_recbole(path, key: str = "user_id", drop_null_ids: bool = False) -> pd.DataFrame:
    """An `.inter` file -> key, item_id, timestamp (int64) + side columns; a sequence file
    (`item_id_list:token_seq`) -> one sequence per key, positions as timestamps.
    key: the field each sequence belongs to (`session_id` for session datasets)."""
    table, fields = read_atomic(path)
    missing = [c for c in (key, TARGET) if c not in fields]
    if missing:
        raise ReaderError(path, f"missing field(s) {missing}; header has {list(fields)}")
    if drop_null_ids:
        keep = pc.and_(table[key].is_valid(), table[TARGET].is_valid())
        if HISTORY in fields:
            keep = pc.and_(keep, table[HISTORY].is_valid())
        table = table.filter(keep)
    if HISTORY in fields:
        return _sequences(table, fields, key, path)
    if "timestamp" not in fields:
        raise ReaderError(path, f"no 'timestamp' field (header {list(fields)}); an interaction "
                          f"file needs one to order each {key}'s items")
    seconds = _numbers(table["timestamp"], path, "timestamp", required=True)
    out = {key: _integers(table[key], path, key), "item_id": _integers(table[TARGET], path, TARGET),
           "timestamp": np.floor(seconds).astype(np.int64)}
    for name, kind in fields.items():
        if name not in out and not kind.endswith("_seq"):
            out[name] = _field(table[name], kind, path, name)
    return pd.DataFrame(out)


def read_recbole_items(path, drop_null_ids: bool = False) -> pd.DataFrame:
    """An `.item` / `.text` file -> item_id (int64) and one column per field: `float` as float64,
    `token` as text (categorical), `token_seq` as arrays of text tokens, `float_seq` as arrays of
    floats. A `.text` file's `text` is therefore its words; `" ".join` gives the text back."""
    table, fields = read_atomic(path)
    if TARGET not in fields:
        raise ReaderError(path, f"missing field 'item_id'; header has {list(fields)}")
    if drop_null_ids:
        table = table.filter(table[TARGET].is_valid())
    items = _integers(table[TARGET], path, TARGET)
    out = {TARGET: items}
    for name, kind in fields.items():
        if name != TARGET:
            out[name] = _field(table[name], kind, path, name)
    frame = pd.DataFrame(out)
    dupes = np.flatnonzero(frame[TARGET].duplicated().to_numpy())
    if dupes.size:
        row = int(dupes[0])
        raise ReaderError(path, f"item {items[row]} listed twice ({dupes.size} repeated rows)",
                          column=TARGET, row=row, line=row + FIRST_DATA_LINE)
    return frame


def _sequences(table: pa.Table, fields: dict, key: str, path) -> pd.DataFrame:
    keys = _integers(table[key], path, key)
    targets = _integers(table[TARGET], path, TARGET)
    offsets, flat = _split(table[HISTORY], path, HISTORY)
    history = _parse_ints(flat, offsets, path, HISTORY)
    lengths = np.diff(offsets)
    # rows of one key ordered by history length: augmented prefixes of one sequence then read
    # shortest first, and each row's target extends the sequence by one. Once the file caps the
    # history, lengths tie; ties follow the direction the key's rows take in the file (benchmark
    # scripts write the longest prefix first)
    position = np.arange(len(keys))
    order = np.lexsort((position, lengths, keys))
    sorted_keys = keys[order]
    first = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.concatenate((starts[1:], [len(order)])) - 1
    backwards = order[ends] < order[starts]  # the longest row comes before the shortest
    direction = np.where(backwards[group], -1, 1)
    order = order[np.lexsort((direction * position[order], lengths[order], sorted_keys))]
    _check_prefixes(order, first, lengths, offsets, history, targets, keys, path)
    heads = order[first]  # each key's shortest row: its history opens the sequence
    head_len = lengths[heads]
    n_targets = np.bincount(group, minlength=len(heads))
    total = head_len + n_targets
    seq_offsets = np.concatenate(([0], np.cumsum(total)))
    # where each head's history and each target land in the flat output
    out = np.empty(int(seq_offsets[-1]), dtype=np.int64)
    head_rows = np.repeat(np.arange(len(heads)), head_len)
    within = np.arange(len(head_rows)) - np.repeat(np.cumsum(head_len) - head_len, head_len)
    out[seq_offsets[head_rows] + within] = history[np.repeat(offsets[heads], head_len) + within]
    rank = np.arange(len(order)) - np.repeat(np.flatnonzero(first), n_targets)
    out[seq_offsets[group] + head_len[group] + rank] = targets[order]
    position = np.arange(len(out)) - np.repeat(seq_offsets[:-1], total)
    return pd.DataFrame({key: np.repeat(keys[heads], total), "item_id": out,
                         "timestamp": position.astype(np.int64)})


def _check_prefixes(order, first, lengths, offsets, history, targets, keys, path) -> None:
    """Each later row of a key must be the previous row plus its target: its history ends with
    the previous row's target and is one longer (or as long, once the file's cap is reached)."""
    later = np.flatnonzero(~first)
    if not later.size:
        return
    row, prev = order[later], order[later - 1]
    grown = lengths[row] - lengths[prev]
    last = np.full(len(row), -1, dtype=np.int64)
    has = lengths[row] > 0
    last[has] = history[offsets[row[has] + 1] - 1]
    bad = np.flatnonzero(((grown != 1) & (grown != 0)) | (last != targets[prev]))
    if bad.size:
        r, p = int(row[bad[0]]), int(prev[bad[0]])
        raise ReaderError(
            path, f"rows of {keys[r]} are not prefixes of one sequence: line "
            f"{r + FIRST_DATA_LINE} does not extend line {p + FIRST_DATA_LINE} by its target "
            f"{targets[p]}; a sequence file holds one sequence per key (with every prefix of it "
            "in a training file)", column=HISTORY, row=r, line=r + FIRST_DATA_LINE)


def _field(column, kind: str, path, name: str):
    if kind == "float":
        return _numbers(column, path, name)
    if kind == "token":
        return side_column(column)
    offsets, flat = _split(column, path, name)
    if kind == "float_seq":
        flat = pa.array(_parse(flat, offsets, path, name, "not a number"), type=pa.float64())
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat)
    return lists.to_pandas()  # one numpy array per row: an item table is small and printable


def _split(column, path, name: str) -> tuple[np.ndarray, pa.Array]:
    """A space-separated text column -> (offsets, flat tokens); empty or missing -> []."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lists = pc.split_pattern(column.fill_null(""), " ")
    flat = lists.flatten()
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lists)), lists.value_lengths().to_numpy())
    counts = np.bincount(rows[keep], minlength=len(lists))
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64), flat.filter(pa.array(keep))


def _parse(flat: pa.Array, offsets, path, name, problem) -> np.ndarray:
    values = pd.to_numeric(flat.to_pandas(), errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy())
    if bad.size:
        row = int(np.searchsorted(offsets, bad[0], side="right") - 1)
        raise ReaderError(path, f"{problem} {flat[int(bad[0])].as_py()!r}", column=name, row=row,
                          line=row + FIRST_DATA_LINE)
    return values.to_numpy()


def _parse_ints(flat, offsets, path, name) -> np.ndarray:
    values = _parse(flat, offsets, path, name, "not an integer token")
    whole = values == np.floor(values)
    if not whole.all():
        bad = int(np.flatnonzero(~whole)[0])
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise ReaderError(path, f"not an integer token {flat[bad].as_py()!r}", column=name,
                          row=row, line=row + FIRST_DATA_LINE)
    return values.astype(np.int64)


def _integers(column, path, name: str) -> np.ndarray:
    """A `token` id field -> int64; a missing or non-integer token is named with its row."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    missing = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
    if missing.size:
        row = int(missing[0])
        raise ReaderError(path, f"missing id ({missing.size} in all)", column=name, row=row,
                          line=row + FIRST_DATA_LINE)
    return _parse_ints(column, np.arange(len(column) + 1), path, name)


def _numbers(column, path, name: str, required: bool = False) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = pd.to_numeric(column.to_pandas(), errors="coerce")
    given = column.is_valid().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(values.isna().to_numpy() & (given | required))
    if bad.size:
        row = int(bad[0])
        problem = f"not a number {column[row].as_py()!r}" if given[row] else "missing value"
        raise ReaderError(path, problem, column=name, row=row, line=row + FIRST_DATA_LINE)
    return values.to_numpy(dtype=np.float64)

