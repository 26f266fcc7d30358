"""Readers: one per public raw layout, each -> the interaction schema of `..interactions`.

Every reader returns a pandas frame with a key (`session_id` or `user_id`, int64), `item_id`
(int64), `timestamp` (int64 epoch seconds, UTC) and the layout's side columns, and raises
`ReaderError` (an `InteractionError`) naming file, column, row and problem.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import pandas as pd

from seqrec.config import structure

from ..interactions import validate_interactions
from ._io import ReaderError
from .diginetica import read_diginetica
from .generic import read_generic
from .movielens import read_movielens
from .recbole import read_recbole, read_recbole_items
from .rees46 import read_rees46, uuid_to_int64
from .yoochoose import read_yoochoose

READERS = {
    "yoochoose": read_yoochoose,
    "diginetica": read_diginetica,
    "rees46": read_rees46,
    "movielens": read_movielens,
    "generic": read_generic,
    "recbole": read_recbole,
}
KEYS = {"yoochoose": "session_id", "diginetica": "session_id", "rees46": "session_id",
        "movielens": "user_id"}


@dataclass
class ReaderConfig:
    """Which reader, which file, and the reader's options (YAML: the `etl.source` mapping)."""

    format: str
    path: str
    # generic only: schema name -> the file's column (a name, or a 0-based position without a header)
    columns: dict[str, str | int] = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # e.g. event_types, time_format, sep, drop_null_ids

    @property
    def key(self) -> str:
        if self.format == "generic":
            return self.options.get("key") or (
                "session_id" if "session_id" in self.columns else "user_id")
        if self.format == "recbole":
            return self.options.get("key") or "user_id"
        return KEYS[self.format]


def reader_config(section: dict | ReaderConfig) -> ReaderConfig:
    """A YAML mapping (the recipe's `etl.source`) -> ReaderConfig, strictly (seqrec.config)."""
    return structure(ReaderConfig, section, "source")


def read_interactions(source: ReaderConfig | dict) -> pd.DataFrame:
    """Dispatch to the format's reader, then run the schema checks on its output."""
    if isinstance(source, dict):
        source = reader_config(source)
    reader = READERS.get(source.format)
    if reader is None:
        raise ReaderError(source.path, f"unknown format {source.format!r}; "
                          f"available: {sorted(READERS)}")
    if source.format == "generic":
        _check_options(reader, source, source.columns)
        frame = reader(source.path, source.columns, **source.options)
    else:
        if source.columns:
            raise ReaderError(source.path, f"'columns' is only for format 'generic', "
                              f"not {source.format!r}")
        _check_options(reader, source)
        frame = reader(source.path, **source.options)
    return validate_interactions(frame, source=source.path, key=source.key)


def _check_options(reader, source: ReaderConfig, *args) -> None:
    try:
        inspect.signature(reader).bind(source.path, *args, **source.options)
    except TypeError as err:
        raise ReaderError(source.path, f"bad options for format {source.format!r}: {err}") from err


__all__ = ["READERS", "ReaderConfig", "ReaderError", "reader_config", "read_diginetica", "read_generic",
           "read_interactions", "read_movielens", "read_recbole", "read_recbole_items", "read_rees46",
           "read_yoochoose",
           "uuid_to_int64"]
