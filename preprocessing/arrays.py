"""The array rules shared by the ETL, training and the served models, written once.

numpy and the standard library only: the exporter copies this file beside the Triton models
(next to lookup.py and side_lookup.py), which then need neither NVTabular nor the training code.

Ragged batches are (values, offsets): row r is values[offsets[r]:offsets[r + 1]], offsets int64
of length rows + 1 starting at 0. Padded batches are [B, T], real items first (right-padded).
"""
from __future__ import annotations

import numpy as np

# Categorify (NVTabular 23.8) reserves 0 for padding, 1 for nulls and 2 for out-of-vocabulary
# values (one OOV bucket); real items start at 3.
PAD_ID, NULL_ID, OOV_ID, FIRST_ITEM_ID = 0, 1, 2, 3

# Column names of the interaction frame and of the grouped sequences.
ITEM_COL, KEY_COL, TIME_COL = "item_id", "user_id", "timestamp"
LIST_SUFFIX = "-list"
FIRST_SUFFIX, LAST_SUFFIX = "-first", "-last"
LENGTH_COLUMN = "seq_length"


def list_column(name: str) -> str:
    """The grouped list column of a per-interaction column (`item_id` -> `item_id-list`)."""
    return name + LIST_SUFFIX


ITEM_LIST = list_column(ITEM_COL)


# --- values + offsets --------------------------------------------------------------------------

def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """[B] row lengths -> [B + 1] int64 offsets."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def group_offsets(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of each run of equal keys in a sorted key array, plus the end."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate(([0], change, [n])).astype(np.int64)


def row_ids(offsets: np.ndarray) -> np.ndarray:
    """The row of every flat value: [N] int64."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def group_starts(offsets: np.ndarray, n: int | None = None) -> np.ndarray:
    """Boolean [N] mask of the first value of every (non-empty) row."""
    n = int(offsets[-1]) if n is None else n
    first = np.zeros(n, dtype=bool)
    starts = offsets[:-1]
    first[starts[starts < n]] = True
    return first


def take_rows(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ragged batch of rows `rows` (any order, repeats allowed), gathered in one index."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, lengths = offsets[:-1][rows], np.diff(offsets)[rows]
    new_offsets = offsets_from_lengths(lengths)
    at = np.arange(int(new_offsets[-1]), dtype=np.int64) - np.repeat(new_offsets[:-1] - starts, lengths)
    return values[at], new_offsets


# --- truncation (keep the last max_len) --------------------------------------------------------

def keep_last_mask(offsets: np.ndarray, max_len: int | None) -> np.ndarray:
    """Boolean mask of the flat values keeping the last `max_len` of every row (the most recent
    history matters most); None or <= 0: keep everything."""
    n = int(offsets[-1])
    if max_len is None or max_len <= 0:
        return np.ones(n, dtype=bool)
    row_end = np.repeat(offsets[1:], np.diff(offsets))  # end offset of each value's row
    return (row_end - np.arange(n)) <= max_len


def keep_last(values: np.ndarray, offsets: np.ndarray, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The last `max_len` values of every row (values + offsets)."""
    lengths = np.diff(offsets)
    if max_len is None or max_len <= 0:
        return values, offsets
    return values[keep_last_mask(offsets, max_len)], offsets_from_lengths(np.minimum(lengths, max_len))


def drop_last(values: np.ndarray, offsets: np.ndarray, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every row without its last `n` values (rows shorter than n become empty)."""
    lengths = np.diff(offsets)
    row_end = np.repeat(offsets[1:], lengths)
    keep = (row_end - np.arange(int(offsets[-1]))) > n
    return values[keep], offsets_from_lengths(np.maximum(lengths - n, 0))


def last_values(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The last value of every row (rows must not be empty)."""
    lengths = np.diff(offsets)
    if (lengths == 0).any():
        raise ValueError(f"row {int(np.flatnonzero(lengths == 0)[0])} is empty: it has no last value")
    return values[offsets[1:] - 1]


# --- ragged <-> padded -------------------------------------------------------------------------

def pad(values: np.ndarray, offsets: np.ndarray, max_len: int | None = None, pad_value=PAD_ID,
        dtype=None, min_width: int = 1) -> np.ndarray:
    """Ragged -> right-padded [B, T, ...] keeping the LAST max_len values of every row; T is the
    longest kept row (at least `min_width`). Trailing value dims (e.g. [N, C]) are kept."""
    values = np.asarray(values)
    values, offsets = keep_last(values, np.asarray(offsets, dtype=np.int64), max_len)
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), min_width)
    out = np.full((len(lengths), width, *values.shape[1:]), pad_value, dtype=dtype or values.dtype)
    mask = np.arange(width) < lengths[:, None]
    out[mask] = values  # row-major order of the mask is the flat order of the values
    return out


def unpad(padded: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, T, ...] + real lengths [B] -> (values, offsets)."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    mask = np.arange(padded.shape[1]) < lengths[:, None]
    return padded[mask], offsets_from_lengths(lengths)


def padded_lengths(padded: np.ndarray, pad_value=PAD_ID) -> np.ndarray:
    """Real lengths of right-padded rows of ids."""
    return (padded != pad_value).sum(axis=1)


# --- id -> code --------------------------------------------------------------------------------

def find_sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of every value in the sorted `keys` (position clipped into range)."""
    if len(keys) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(keys, values)  # 0..len(keys): only the top needs clipping
    np.minimum(pos, len(keys) - 1, out=pos)
    return pos, keys[pos] == values


def encode_sorted(keys: np.ndarray, codes: np.ndarray, values: np.ndarray, missing=OOV_ID) -> np.ndarray:
    """Raw values -> codes through sorted `keys` and their `codes`; unknown values -> `missing`."""
    pos, hit = find_sorted(keys, values)
    if len(keys) == 0:
        return np.full(len(values), missing, dtype=np.asarray(codes).dtype)
    return np.where(hit, codes[pos], missing)


def sorted_vocabulary(vocabulary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encoded id -> original id (reserved ids -1) -> (sorted original ids, their encoded ids)."""
    encoded = np.arange(FIRST_ITEM_ID, len(vocabulary), dtype=np.int64)
    original = np.asarray(vocabulary[FIRST_ITEM_ID:], dtype=np.int64)
    order = np.argsort(original, kind="stable")
    return original[order], encoded[order]


# --- time features -----------------------------------------------------------------------------

TIME_FEATURES = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "day_index", "since_prev")
DAY = 86400


def clock_feature(seconds: np.ndarray, name: str) -> np.ndarray:
    """One of hour_sin/cos, weekday_sin/cos (float32, on the unit circle: 23h is next to 0h) or
    day_index (int64) from epoch seconds."""
    seconds = np.asarray(seconds, dtype=np.int64)
    if name == "day_index":
        return seconds // DAY
    if name.startswith("hour"):
        angle = 2 * np.pi * ((seconds % DAY) / 3600.0) / 24
    else:
        weekday = ((seconds // DAY) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        angle = 2 * np.pi * weekday / 7
    return (np.sin(angle) if name.endswith("sin") else np.cos(angle)).astype(np.float32)


def since_previous(seconds: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Seconds since the previous value (float32) for values in time order within their groups;
    `first` marks each group's first value, which gets 0."""
    seconds = np.asarray(seconds, dtype=np.int64)
    gap = np.zeros(len(seconds), dtype=np.float32)
    gap[1:] = np.where(first[1:], 0, np.diff(seconds))
    return gap


def item_age(items: np.ndarray, seconds: np.ndarray, known: np.ndarray, first_seen: np.ndarray) -> np.ndarray:
    """Seconds since each item's first interaction (`known`: sorted raw ids, `first_seen`: their
    first times); items never seen are age 0 (new today). float32."""
    items, seconds = np.asarray(items, dtype=np.int64), np.asarray(seconds, dtype=np.int64)
    age = np.zeros(len(items), dtype=np.float32)
    pos, seen = find_sorted(known, items)
    age[seen] = np.maximum(seconds[seen] - first_seen[pos[seen]], 0)
    return age


# --- normalisation -----------------------------------------------------------------------------

def clip_log(values: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The workflow's Clip(0) -> LogOp: log(max(x, 0) + 1), computed as NVTabular's LogOp does
    (log of x + 1 in `dtype`, not log1p: the served values must equal the stored ones bit for bit)."""
    return np.log(np.clip(np.asarray(values), 0, None).astype(dtype) + 1)


def standardise(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x - mean) / std, or x - mean for a constant column (std 0), as NVTabular's Normalize."""
    x = values - mean
    return x / std if std > 0 else x
