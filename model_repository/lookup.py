"""The serving-time form of the saved workflow: Categorify's vocabulary + GroupSequences' truncation,
compiled to two sorted numpy arrays.

`Workflow.transform` costs ~25 ms per call (pandas + dask machinery); this does the same mapping
for a whole batch of sessions in a few vectorised numpy calls. It imports numpy only, so the
exporter copies this file into the repository and the preprocessing model needs neither the
training code nor NVTabular. tests/test_serving.py checks it equal to `encode_sessions` (the
workflow itself) on real MovieLens sequences, unknown ids and over-long sessions included.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:  # installed: seqrec.model_repository.lookup
    from ..preprocessing import arrays
except ImportError:  # copied beside the Triton model by `seqrec export`, arrays.py with it
    import arrays

PAD_ID, OOV_ID, FIRST_ITEM_ID = arrays.PAD_ID, arrays.OOV_ID, arrays.FIRST_ITEM_ID
LOOKUP_FILE = "item_lookup.npz"


class ItemLookup:
    """original item id -> encoded id, plus the workflow's `max_len` (keep the LAST max_len raw
    items of a session BEFORE unknown ids are dropped, exactly as the workflow does)."""

    def __init__(self, original_ids: np.ndarray, encoded_ids: np.ndarray, max_len: int):
        order = np.argsort(original_ids, kind="stable")
        self.keys = np.ascontiguousarray(original_ids[order], dtype=np.int64)
        self.codes = np.ascontiguousarray(encoded_ids[order], dtype=np.int64)
        self.max_len = int(max_len)  # <= 0: no truncation

    @classmethod
    def from_vocabulary(cls, vocabulary: np.ndarray, max_len: int | None) -> "ItemLookup":
        """vocabulary: encoded id -> original id, reserved ids -1 (preprocessing.item_vocabulary)."""
        original, encoded = arrays.sorted_vocabulary(vocabulary)
        return cls(original, encoded, max_len or 0)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LOOKUP_FILE
        np.savez(path, keys=self.keys, codes=self.codes, max_len=np.int64(self.max_len))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ItemLookup":
        with np.load(Path(folder) / LOOKUP_FILE) as z:
            return cls(z["keys"], z["codes"], int(z["max_len"]))

    def digest(self, h) -> None:
        """Feed what decides the encoding into a hashlib object (the export fingerprint)."""
        for array in (self.keys, self.codes, np.int64(self.max_len)):
            h.update(np.ascontiguousarray(array).tobytes())

    @property
    def num_items(self) -> int:
        return len(self.keys)

    def encode(self, values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ragged batch of raw sessions (values + offsets, oldest first) -> ragged batch of
        encoded sessions: truncated to the last max_len raw items, unknown ids dropped."""
        return self.encode_keep(values, offsets)[:2]

    def encode_keep(self, values: np.ndarray, offsets: np.ndarray):
        """encode(), plus the boolean mask of the raw positions kept (side features follow it)."""
        values = np.asarray(values, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        codes = self.encode_items(values)
        keep = codes >= FIRST_ITEM_ID
        if self.max_len > 0 and len(offsets) > 1 and np.diff(offsets).max() > self.max_len:
            keep &= arrays.keep_last_mask(offsets, self.max_len)  # only when a row is over it
        kept_before = np.zeros(len(values) + 1, dtype=np.int64)  # kept values before each position
        np.cumsum(keep, out=kept_before[1:])
        return codes[keep], kept_before[offsets], keep

    def encode_items(self, values: np.ndarray) -> np.ndarray:
        """Flat original ids -> encoded ids; unknown (negative ones included) -> OOV_ID."""
        return arrays.encode_sorted(self.keys, self.codes, values).astype(np.int64, copy=False)
