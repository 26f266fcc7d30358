"""Histories of encoded item ids -> Recformer input tensors, with whole-array numpy operations.

A row is [CLS] followed by its items' cached tokens, MOST RECENT item first, cut at `max_tokens`
tokens (the oldest items, or the tail of the last one that fits, are dropped) and at `max_items`
items. The batch is right-padded to the longest row rounded up to a multiple of the attention
window (the Longformer's requirement). An item's representation is the same packing of a
one-item history.
"""
from __future__ import annotations

import numpy as np
import torch

from seqrec.preprocessing.arrays import offsets_from_lengths, row_ids, take_rows
from seqrec.preprocessing.item_text import CLS_TOKEN, PAD_TOKEN, TYPE_CLS, ItemTokens

KEYS = ("input_ids", "token_types", "token_positions", "item_positions", "attention_mask")


def reverse_rows(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Every row's values in reverse order (same offsets)."""
    rows = row_ids(offsets)
    at = np.arange(len(values))
    return values[offsets[rows + 1] - 1 - (at - offsets[rows])]


def pack(tokens: ItemTokens, values: np.ndarray, offsets: np.ndarray, max_tokens: int, max_items: int,
         window: int) -> dict[str, np.ndarray]:
    """Ragged histories (values + offsets: encoded ids, oldest first) -> {name: [B, L]} arrays
    (see KEYS); L is a multiple of `window`."""
    values = np.asarray(values, dtype=np.int64)
    lengths = np.diff(offsets)
    newest = reverse_rows(values, offsets)
    # the most recent max_items of each row
    rank = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)  # 0 = most recent
    keep = rank < max_items
    items, entry_rank = newest[keep], rank[keep]
    entry_row = row_ids(offsets)[keep]
    flat_ids, entry_off = take_rows(tokens.ids, tokens.offsets, items)
    flat_types, _ = take_rows(tokens.types, tokens.offsets, items)
    entry_len = np.diff(entry_off)
    entry = np.repeat(np.arange(len(items)), entry_len)
    # a token's position: 1 + the tokens of the row's more recent items + its place in its item
    row_tokens = np.bincount(entry_row, weights=entry_len, minlength=len(lengths)).astype(np.int64)
    row_start = offsets_from_lengths(row_tokens)[:-1]
    token_row = entry_row[entry]
    position = 1 + np.arange(len(flat_ids)) - row_start[token_row]
    fits = position < max_tokens
    width = int(min(max_tokens, 1 + row_tokens.max(initial=0)))
    width = -(-max(width, 1) // window) * window
    B = len(lengths)
    out = {
        "input_ids": np.full((B, width), PAD_TOKEN, dtype=np.int64),
        "token_types": np.zeros((B, width), dtype=np.int64),
        "token_positions": np.zeros((B, width), dtype=np.int64),
        "item_positions": np.zeros((B, width), dtype=np.int64),
        "attention_mask": np.zeros((B, width), dtype=np.int64),
    }
    out["input_ids"][:, 0], out["token_types"][:, 0], out["attention_mask"][:, 0] = CLS_TOKEN, TYPE_CLS, 1
    r, c = token_row[fits], position[fits]
    out["input_ids"][r, c] = flat_ids[fits]
    out["token_types"][r, c] = flat_types[fits]
    out["token_positions"][r, c] = c
    out["item_positions"][r, c] = entry_rank[entry[fits]] + 1
    out["attention_mask"][r, c] = 1
    return out


def to_tensors(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def single_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item as its own one-item history (values, offsets)."""
    items = np.asarray(items, dtype=np.int64)
    return items, np.arange(len(items) + 1, dtype=np.int64)


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (fewer padded tokens per batch)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def prefix_examples(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, end) with 1 <= end < len(row): history row[:end], target row[end]."""
    lengths = np.diff(offsets)
    units = np.maximum(lengths - 1, 0)
    rows = np.repeat(np.arange(len(lengths)), units)
    ends = 1 + np.arange(int(units.sum())) - np.repeat(offsets_from_lengths(units)[:-1], units)
    return rows, ends


def gather_prefixes(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, ends: np.ndarray,
                    max_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history values, history offsets, targets) of the examples: at most the last `max_items`
    items before each end."""
    starts = offsets[rows] + np.maximum(ends - max_items, 0)
    stops = offsets[rows] + ends
    lengths = stops - starts
    new_offsets = offsets_from_lengths(lengths)
    at = np.arange(int(new_offsets[-1])) - np.repeat(new_offsets[:-1] - starts, lengths)
    return values[at], new_offsets, values[stops].astype(np.int64)
