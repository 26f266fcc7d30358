"""The serving-time form of the saved workflow's side-feature steps, for models trained with side
features: raw per-interaction values in, the `<col>-list` values of the session parquet out.

  categorical  Categorify's vocabulary (sorted arrays, unknown -> OOV code 2, as the workflow)
  continuous   FillMissing(0) [-> Clip(0) -> log(x + 1)] -> (x - mean) / std with the saved
               statistics of the workflow's Normalize
  time         TimeFeatures from the raw `timestamp` (hour / weekday on the unit circle, seconds
               since the previous interaction of the session, 0 for the first)
  item_age     ItemAge: seconds since the item's first interaction in the fitted data (the
               fitted first-seen times are in the npz; unseen items are 0)

numpy only (copied into the repository beside lookup.py, like it). tests/test_side_features.py
checks it equal to the workflow's own output on real MovieLens sequences.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # installed: seqrec.model_repository.side_lookup
    from ..preprocessing import arrays
except ImportError:  # copied beside the Triton model by `seqrec export`, arrays.py with it
    import arrays

SIDE_FILE = "side_lookup.npz"


class SideLookup:
    """spec: {"inputs": [[name, "INT64" | "FP32"], ...], "categorical": [{column, source}],
    "continuous": [{column, source, kind: "normalize" | "time", ...}]}, in the model's order."""

    def __init__(self, spec: dict, arrays: dict[str, np.ndarray]):
        self.spec = spec
        self.arrays = arrays

    @property
    def inputs(self) -> list[tuple[str, str]]:
        """Raw request tensors: (name, Triton data type without TYPE_)."""
        return [tuple(x) for x in self.spec["inputs"]]

    @property
    def n_categorical(self) -> int:
        return len(self.spec["categorical"])

    @property
    def n_continuous(self) -> int:
        return len(self.spec["continuous"])

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SIDE_FILE
        np.savez(path, spec=np.array(json.dumps(self.spec)), **self.arrays)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "SideLookup | None":
        path = Path(folder) / SIDE_FILE
        if not path.is_file():
            return None  # an item-only model
        with np.load(path) as z:
            return cls(json.loads(str(z["spec"])), {k: z[k] for k in z.files if k != "spec"})

    def digest(self, h) -> None:
        """Feed what decides the side features into a hashlib object (the export fingerprint)."""
        h.update(json.dumps(self.spec, sort_keys=True).encode())
        for name in sorted(self.arrays):
            h.update(name.encode() + np.ascontiguousarray(self.arrays[name]).tobytes())

    def row_errors(self, raw: dict[str, np.ndarray], lengths: np.ndarray) -> dict[int, str]:
        """{row: message} for rows whose raw inputs ([B, L] each, cut at `lengths`) are unusable;
        the other rows are fine (a bad row does not spoil its request)."""
        errors: dict[int, str] = {}
        for name in sorted({c["source"] for c in self.spec["continuous"] if c["kind"] == "time"}):  # item_age: no order
            if name in raw:
                t = raw[name]
                later = np.arange(1, t.shape[1]) < lengths[:, None]
                for r in np.flatnonzero(((np.diff(t, axis=1) < 0) & later).any(axis=1)):
                    errors.setdefault(int(r), f"'{name}' decreases in row {r}: send each "
                                              "session's interactions oldest first, with their times")
        return errors

    def encode(self, raw: dict[str, np.ndarray], offsets: np.ndarray,
               items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flat raw values per input (aligned with the flat raw `items`, rows at `offsets`) ->
        categorical codes [N, C] int64 and continuous values [N, F] float32, per raw position."""
        n = int(offsets[-1])
        cats = np.zeros((n, self.n_categorical), dtype=np.int64)
        for j, col in enumerate(self.spec["categorical"]):
            keys, codes = self.arrays[f"cat{j}_keys"], self.arrays[f"cat{j}_codes"]
            values = raw[col["source"]]
            if keys.dtype.kind == "U":  # a text column: BYTES on the wire
                values = as_text(values)
            cats[:, j] = arrays.encode_sorted(keys, codes, values)
        conts = np.zeros((n, self.n_continuous), dtype=np.float32)
        for j, col in enumerate(self.spec["continuous"]):
            if col["kind"] == "time":
                conts[:, j] = time_feature(raw[col["source"]], offsets, col["feature"])
            elif col["kind"] == "item_age":
                conts[:, j] = arrays.item_age(items, raw[col["source"]], self.arrays[f"age{col['index']}_items"],
                                              self.arrays[f"age{col['index']}_first"])
            else:
                conts[:, j] = normalize(raw[col["source"]], col)
        return cats, conts


def normalize(values: np.ndarray, col: dict) -> np.ndarray:
    """The workflow's FillMissing -> [Clip(0) -> LogOp] -> Normalize, with its arithmetic."""
    x = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    if col["log"]:
        x = arrays.clip_log(x, col["log_dtype"])
    return arrays.standardise(x, col["mean"], col["std"]).astype(col["dtype"])


def time_feature(seconds: np.ndarray, offsets: np.ndarray, name: str) -> np.ndarray:
    """preprocessing.ops.TimeFeatures for rows already in time order (checked by `row_errors`)."""
    if name == "since_prev":
        return arrays.since_previous(seconds, arrays.group_starts(offsets, len(seconds)))
    return arrays.clock_feature(seconds, name).astype(np.float32)


def as_text(values) -> np.ndarray:
    """BYTES tensor values (an object array of UTF-8 bytes) -> a numpy str array."""
    values = np.asarray(values)
    if values.dtype.kind == "U":
        return values
    if values.dtype.kind in "OS":
        return np.char.decode(values.astype("S"), "utf-8")
    return values.astype(str)
