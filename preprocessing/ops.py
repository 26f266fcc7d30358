"""Vectorised NVTabular operators for turning interaction rows into sequences.

Stock `nvtabular.ops.Groupby` calls Python once per group (pandas `groupby.agg(list)`, ~13k rows/s
on 2 cores). `GroupSequences` sorts once and cuts the sorted columns at group offsets, so the work is
a sort plus array slicing: the same idea runs on pandas (via Arrow list arrays) and on cuDF.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from merlin.dtypes.shape import DefaultShapes
from merlin.schema import Tags
from merlin.dag.ops.stat_operator import StatOperator
from nvtabular.ops import Operator
from merlin.dag import ColumnSelector

from .arrays import (FIRST_SUFFIX, LAST_SUFFIX, LENGTH_COLUMN, LIST_SUFFIX, TIME_FEATURES,  # noqa: F401
                     clock_feature, group_offsets, group_starts, item_age, keep_last_mask,
                     offsets_from_lengths, since_previous)
from .ordering import key_time_order


def lists_from_offsets(values: np.ndarray, offsets: np.ndarray) -> pd.Series:
    """An Arrow-backed list Series (`list<...>[pyarrow]`) built from flat values + offsets.

    Not pandas' object-of-arrays form: that costs one Python object per sequence to build and
    again to write, while an Arrow list column goes to parquet (and back) without copies."""
    arrow = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
    return pd.Series(pd.arrays.ArrowExtensionArray(arrow))


def sequences_table(frame: pd.DataFrame) -> pa.Table:
    """Grouped sequences -> an Arrow table (list columns without copies), ready for parquet.

    The pandas metadata is dropped: pandas 1.5 cannot parse its own `list<...>[pyarrow]` dtype
    name back, and without it the lists read back as pandas' usual arrays."""
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def write_sequences(table: pa.Table, path) -> None:
    """Sequences to parquet. No dictionary pages: ids, times and lengths rarely repeat within a
    page, so building a dictionary costs time and then falls back to plain encoding anyway."""
    pq.write_table(table, path, use_dictionary=False)


# Neither operator declares `dependencies`: merlin would then re-read those columns from the raw
# input and align them by row position with this op's (re-ordered, filtered) rows. The key and
# time columns must be part of the selection instead.


def _require(col_selector: ColumnSelector, names) -> None:
    missing = [n for n in names if n not in col_selector.names]
    if missing:
        raise ValueError(f"columns {missing} must be selected for this operator")


class GroupSequences(Operator):
    """Group interaction rows into one time-sorted, truncated sequence per key.

    Output columns: the key, `<col>-list` for every other selected column (sorted by `sort_col`,
    ties kept in input order), `<sort_col>-first` / `-last` (of the whole sequence, before
    truncation) and `seq_length`. Sequences shorter than `min_len` or longer than
    `max_session_len` (bots, crawlers) are dropped; the others keep their LAST `max_len` items
    (the most recent history matters most).
    """

    def __init__(self, key: str, sort_col: str, max_len: int | None = None, min_len: int = 1,
                 max_session_len: int | None = None):
        super().__init__()
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.key, self.sort_col, self.max_len, self.min_len = key, sort_col, max_len, min_len
        self.max_session_len = max_session_len

    def transform(self, col_selector: ColumnSelector, df):
        _require(col_selector, [self.key, self.sort_col])
        if not isinstance(df, pd.DataFrame):  # cuDF: its groupby collect is a GPU kernel
            return self._transform_cudf(col_selector, df)
        value_cols = [c for c in col_selector.names if c != self.key]
        # One stable sort by (key, time): ties keep the order in which they arrived.
        times = df[self.sort_col].to_numpy()
        order = key_time_order(df[self.key].to_numpy(), times)
        keys = df[self.key].to_numpy()[order]
        offsets = group_offsets(keys)
        full = np.diff(offsets)
        lengths = np.minimum(full, self.max_len or np.iinfo(np.int64).max)
        groups = self._keep(lengths, full)  # filter whole groups before any list is built
        starts, ends = offsets[:-1], offsets[1:]
        rows = None  # every sorted row, unless some are cut or dropped
        if (full > lengths).any():
            rows = keep_last_mask(offsets, self.max_len)
        if not groups.all():
            rows = np.repeat(groups, full) if rows is None else rows & np.repeat(groups, full)
            starts, ends, lengths = starts[groups], ends[groups], lengths[groups]
        rows = order if rows is None else order[rows]
        new_offsets = offsets_from_lengths(lengths)
        out = pd.DataFrame({self.key: keys[starts]})
        for col in value_cols:
            out[col + LIST_SUFFIX] = lists_from_offsets(df[col].to_numpy()[rows], new_offsets)
        out[self.sort_col + FIRST_SUFFIX] = times[order[starts]]
        out[self.sort_col + LAST_SUFFIX] = times[order[ends - 1]]
        out[LENGTH_COLUMN] = lengths.astype(np.int32)
        return out

    def _keep(self, lengths, full_lengths):
        keep = np.asarray(lengths >= self.min_len)
        if self.max_session_len is not None:
            keep &= full_lengths <= self.max_session_len
        return keep

    def _transform_cudf(self, col_selector, df):
        value_cols = [c for c in col_selector.names if c != self.key]
        df = df.sort_values([self.key, self.sort_col]).reset_index(drop=True)
        gb = df.groupby(self.key, sort=True)
        bounds = gb[self.sort_col].agg(["first", "last", "count"])
        if self.max_len is not None:
            rank_from_end = gb.cumcount(ascending=False)
            df = df[rank_from_end < self.max_len]
        out = df.groupby(self.key, sort=True).agg({c: "collect" for c in value_cols})
        out.columns = [c + LIST_SUFFIX for c in value_cols]
        out[self.sort_col + FIRST_SUFFIX] = bounds["first"]
        out[self.sort_col + LAST_SUFFIX] = bounds["last"]
        out = out.reset_index()
        out[LENGTH_COLUMN] = out[value_cols[0] + LIST_SUFFIX].list.len().astype("int32")
        full = bounds["count"].reindex(out[self.key]).values
        return out[self._keep(out[LENGTH_COLUMN], full)].reset_index(drop=True)

    def column_mapping(self, col_selector):
        mapping = {self.key: [self.key]}
        for col in col_selector.names:
            if col != self.key:
                mapping[col + LIST_SUFFIX] = [col]
        mapping[self.sort_col + FIRST_SUFFIX] = [self.sort_col]
        mapping[self.sort_col + LAST_SUFFIX] = [self.sort_col]
        mapping[LENGTH_COLUMN] = [self.sort_col]
        return mapping

    def _compute_dtype(self, col_schema, input_schema):
        if col_schema.name == LENGTH_COLUMN:
            return col_schema.with_dtype(np.int32)
        return super()._compute_dtype(col_schema, input_schema)

    def _compute_shape(self, col_schema, input_schema):
        if col_schema.name.endswith(LIST_SUFFIX):
            return col_schema.with_shape((None, (0, self.max_len) if self.max_len else None))
        return col_schema.with_shape(DefaultShapes.SCALAR)

    def _compute_tags(self, col_schema, input_schema):
        if col_schema.name == LENGTH_COLUMN:  # a count, not an item id (stock Groupby gets this wrong)
            return col_schema.with_tags([])
        if col_schema.name.endswith((FIRST_SUFFIX, LAST_SUFFIX)):
            return col_schema.with_tags([Tags.TIME])
        if col_schema.name == self.key:  # what one row of the output is: a session or a user
            return col_schema.with_tags([Tags.ID, Tags.SESSION_ID if "session" in self.key else Tags.USER_ID])
        col_schema = super()._compute_tags(col_schema, input_schema)
        if col_schema.name.endswith(LIST_SUFFIX):
            return col_schema.with_tags([Tags.LIST, Tags.SEQUENCE])
        return col_schema


class DropConsecutiveRepeats(Operator):
    """Drop an interaction that repeats the previous item of the same key (reloads, double
    clicks): sort by (key, time) once and compare each row with its predecessor."""

    def __init__(self, key: str, sort_col: str, item_col: str):
        super().__init__()
        self.key, self.sort_col, self.item_col = key, sort_col, item_col

    def transform(self, col_selector: ColumnSelector, df):
        _require(col_selector, [self.key, self.sort_col, self.item_col])
        if isinstance(df, pd.DataFrame):  # stable: ties keep their arrival order
            df = df.iloc[key_time_order(df[self.key].to_numpy(), df[self.sort_col].to_numpy())]
        else:
            df = df.sort_values([self.key, self.sort_col])
        # shift() compares with the previous row on pandas and cuDF alike
        repeat = (df[self.key] == df[self.key].shift(1)) & (df[self.item_col] == df[self.item_col].shift(1))
        return df[~repeat][col_selector.names].reset_index(drop=True)


class TimeFeatures(Operator):
    """Per-interaction time features from epoch seconds, rows kept in their order:
    hour-of-day and weekday on the unit circle (23h is next to 0h), the day index, and the seconds
    since the previous interaction of the same key (0 for the first one)."""

    def __init__(self, key: str, time_col: str):
        super().__init__()
        self.key, self.time_col = key, time_col

    def transform(self, col_selector: ColumnSelector, df):
        _require(col_selector, [self.key, self.time_col])
        seconds = df[self.time_col].to_numpy().astype(np.int64)
        keys = df[self.key].to_numpy()
        order = key_time_order(keys, seconds)  # stable: ties keep arrival order
        gap = np.empty(len(seconds), dtype=np.float32)
        gap[order] = since_previous(seconds[order], group_starts(group_offsets(keys[order]), len(seconds)))
        columns = {f"{self.time_col}-{n}": gap if n == "since_prev" else clock_feature(seconds, n)
                   for n in TIME_FEATURES}
        return type(df)(columns, index=df.index)  # same rows, same index: merlin aligns on it

    def column_mapping(self, col_selector):
        return {f"{self.time_col}-{n}": [self.time_col] for n in TIME_FEATURES}

    def _compute_dtype(self, col_schema, input_schema):
        dtype = np.int64 if col_schema.name.endswith("day_index") else np.float32
        return col_schema.with_dtype(dtype)

    def _compute_tags(self, col_schema, input_schema):
        return col_schema.with_tags([Tags.CONTINUOUS, Tags.TIME])


class ItemAge(StatOperator):
    """Seconds since the item's first interaction in the fitted data (`<time>-item_age`).

    Fit keeps each item's first timestamp (a min per item, streamed over partitions); transform
    looks it up with one searchsorted. Causal by construction: the first interaction of an item
    is never later than any interaction with it. Items the fit never saw are age 0 (new today).
    """

    def __init__(self, item_col: str, time_col: str):
        super().__init__()
        self.item_col, self.time_col = item_col, time_col
        self.items = self.first_seen = None

    def fit(self, col_selector: ColumnSelector, ddf):
        _require(col_selector, [self.item_col, self.time_col])
        return ddf.groupby(self.item_col)[self.time_col].min()

    def fit_frame(self, col_selector: ColumnSelector, df):
        """The same statistic on an in-memory frame, without Dask."""
        _require(col_selector, [self.item_col, self.time_col])
        return df.groupby(self.item_col)[self.time_col].min()

    def fit_finalize(self, first_seen) -> None:
        first_seen = first_seen.sort_index()
        self.items = first_seen.index.to_numpy().astype(np.int64)
        self.first_seen = first_seen.to_numpy().astype(np.int64)

    def clear(self) -> None:
        self.items = self.first_seen = None

    def transform(self, col_selector: ColumnSelector, df):
        age = item_age(df[self.item_col].to_numpy(), df[self.time_col].to_numpy(), self.items, self.first_seen)
        return type(df)({self.output_name: age}, index=df.index)  # merlin aligns on the index

    @property
    def output_name(self) -> str:
        return f"{self.time_col}-item_age"

    def column_mapping(self, col_selector):
        return {self.output_name: [self.item_col, self.time_col]}

    def _compute_dtype(self, col_schema, input_schema):
        return col_schema.with_dtype(np.float32)

    def _compute_tags(self, col_schema, input_schema):
        return col_schema.with_tags([Tags.CONTINUOUS, Tags.TIME])
