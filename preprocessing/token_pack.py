"""Item tokens and their packing into Recformer input rows, numpy only: training (batching.py)
and the served preprocessing step (copied beside it by `seqrec export`, with arrays.py) pack
histories with this one function, so the served order and truncation are training's.

A row is [CLS] followed by its items' cached tokens, MOST RECENT item first, cut at `max_tokens`
tokens (the oldest items, or the tail of the last one that fits, are dropped) and at `max_items`
items. The batch is right-padded to the longest row rounded up to a multiple of the attention
window (the Longformer's requirement). An item's representation is the same packing of a
one-item history.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # installed: seqrec.preprocessing.token_pack
    from .arrays import offsets_from_lengths, row_ids, take_rows
except ImportError:  # copied beside the Triton model by `seqrec export`, arrays.py with it
    from arrays import offsets_from_lengths, row_ids, take_rows  # type: ignore[no-redef]

# special tokens, in id order: the tokenizer is trained with them first, so these ids hold
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = range(len(SPECIAL_TOKENS))
# token types: padding, the sequence's [CLS], an attribute's key, an attribute's value
TYPE_PAD, TYPE_CLS, TYPE_KEY, TYPE_VALUE = 0, 1, 2, 3
NUM_TOKEN_TYPES = 4
TOKENS_FILE = "item_tokens.npz"
# the packed arrays, [B, L] int64 each (the model's input names)
KEYS = ("input_ids", "token_types", "token_positions", "item_positions", "attention_mask")


@dataclass(frozen=True)
class ItemTokens:
    """The catalogue's tokens: item e's are ids[offsets[e]:offsets[e + 1]] (types alike), for
    every encoded id 0..num_items-1 (reserved ids and items without text: no tokens)."""

    ids: np.ndarray  # int32
    types: np.ndarray  # int8: TYPE_KEY / TYPE_VALUE
    offsets: np.ndarray  # int64 [num_items + 1]

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, folder: str | Path) -> None:
        np.savez(Path(folder) / TOKENS_FILE, ids=self.ids, types=self.types, offsets=self.offsets)

    @classmethod
    def load(cls, folder: str | Path) -> "ItemTokens":
        with np.load(Path(folder) / TOKENS_FILE) as data:
            return cls(data["ids"], data["types"], data["offsets"])

    def extend(self, more: "ItemTokens") -> "ItemTokens":
        """These items followed by `more`'s items num_items.. (their tokens; `more` covers the
        whole new catalogue, with no tokens for the items already here)."""
        n = self.num_items
        if more.num_items < n or more.offsets[n] != 0:
            raise ValueError(f"the added tokens must start at item {n} with no tokens before it")
        return ItemTokens(np.concatenate([self.ids, more.ids]), np.concatenate([self.types, more.types]),
                          np.concatenate([self.offsets, self.offsets[-1] + more.offsets[n + 1:]]))

    def digest(self, h) -> None:
        """Feed the tokens into a hashlib object (the export fingerprint)."""
        for array in (self.ids, self.types, self.offsets):
            h.update(np.ascontiguousarray(array).tobytes())


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
    offsets = np.asarray(offsets, dtype=np.int64)
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
    out = {key: np.zeros((B, width), dtype=np.int64) for key in KEYS}
    out["input_ids"][:] = PAD_TOKEN
    out["input_ids"][:, 0], out["token_types"][:, 0], out["attention_mask"][:, 0] = CLS_TOKEN, TYPE_CLS, 1
    r, c = token_row[fits], position[fits]
    out["input_ids"][r, c] = flat_ids[fits]
    out["token_types"][r, c] = flat_types[fits]
    out["token_positions"][r, c] = c
    out["item_positions"][r, c] = entry_rank[entry[fits]] + 1
    out["attention_mask"][r, c] = 1
    return out
