"""Thin gRPC client for the served `seqrec` ensemble.

Imports only numpy and tritonclient.grpc (never torch, NVTabular, pandas or other seqrec
modules), so an application can depend on `seqrec[client]` alone.

Tensor contract (the exported ensemble, max_batch_size 0):
  input   item_ids      INT64 [n]  one session's ORIGINAL item ids, oldest first
  outputs top_item_ids  INT64 [k]  original item ids, best first
          top_scores    FP32  [k]
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

__all__ = ["RecommenderClient", "Recommendation", "RecommendationError", "format_table"]

INPUT_NAME = "item_ids"
OUTPUT_IDS = "top_item_ids"
OUTPUT_SCORES = "top_scores"


class RecommendationError(Exception):
    """The server rejected or failed a request (the message carries the server's message)."""


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[int]
    scores: list[float]
    latency_ms: float  # wall time of recommend(), retries included: what the caller waited


def _first_non_integer(values: Sequence) -> int:
    """Index of the first element that is not an int (bool excluded), or -1.
    Error path only: a loop is fine here, it just names the offending value."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return i
    return -1


def _to_int64(item_ids: Sequence[int]) -> np.ndarray:
    """Validate and convert ids to a 1-D int64 array without a per-element loop when they are
    already integers (the common case). Floats are rejected, not truncated: 12.7 is a bug."""
    arr = np.asarray(item_ids)
    if arr.ndim != 1:
        raise ValueError(f"item_ids must be a flat sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)  # let the server decide what an empty session means
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"item id {int(arr.max())} does not fit in INT64")
        return np.asarray(arr, dtype=np.int64)
    # The original elements (not arr.tolist(): numpy already turned [1, 2.5] into floats).
    values = arr.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids)
    bad = _first_non_integer(values)
    if bad >= 0:
        raise ValueError(f"item id {values[bad]!r} (position {bad}) is not an integer")
    # Only Python ints remain (object dtype): they may still overflow INT64.
    big = next((v for v in values if not -2**63 <= v < 2**63), None)
    if big is not None:
        raise ValueError(f"item id {big} does not fit in INT64")
    return np.asarray(values, dtype=np.int64)


class RecommenderClient:
    """Blocking client: one request = one session, answered with the top-k next items."""

    def __init__(self, url: str = "127.0.0.1:8001", model_name: str = "seqrec",
                 timeout_s: float = 10.0, retries: int = 3):
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.retries = retries
        self._client = grpcclient.InferenceServerClient(url=url, verbose=False)
        # Requested outputs never change: build them once, not per request.
        self._outputs = [grpcclient.InferRequestedOutput(OUTPUT_IDS),
                         grpcclient.InferRequestedOutput(OUTPUT_SCORES)]

    def recommend(self, item_ids: Sequence[int]) -> Recommendation:
        t0 = time.perf_counter()
        ids = _to_int64(item_ids)
        inp = grpcclient.InferInput(INPUT_NAME, [ids.shape[0]], "INT64")
        inp.set_data_from_numpy(ids)
        result = self._call(lambda: self._client.infer(
            self.model_name, [inp], outputs=self._outputs, client_timeout=self.timeout_s))
        top_ids = result.as_numpy(OUTPUT_IDS)
        top_scores = result.as_numpy(OUTPUT_SCORES)
        if top_ids is None or top_scores is None or top_ids.shape != top_scores.shape:
            raise RecommendationError(
                f"model {self.model_name!r} returned malformed outputs "
                f"({OUTPUT_IDS}={None if top_ids is None else top_ids.shape}, "
                f"{OUTPUT_SCORES}={None if top_scores is None else top_scores.shape})")
        return Recommendation(item_ids=top_ids.astype(np.int64).tolist(),
                              scores=top_scores.astype(np.float32).tolist(),
                              latency_ms=(time.perf_counter() - t0) * 1000.0)

    def _call(self, fn):
        """Run fn, retrying only while the server is UNAVAILABLE (restarting, not yet bound)."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except InferenceServerException as e:
                if "UNAVAILABLE" in str(e.status() or "") and attempt < self.retries:
                    time.sleep(0.05 * 2 ** attempt)
                    continue
                raise RecommendationError(
                    f"{self.model_name!r} at {self.url}: {e.message() or e}"
                    f" [{e.status()}]") from e

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=self.timeout_s)
                        and self._client.is_model_ready(self.model_name,
                                                        client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until server and model are ready; raise TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.model_name!r} at {self.url} "
                                   f"not ready after {timeout_s:.0f}s")
            time.sleep(0.2)
        return True

    def model_metadata(self) -> dict:
        return self._call(lambda: self._client.get_model_metadata(
            self.model_name, as_json=True, client_timeout=self.timeout_s))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_table(rec: Recommendation, titles: dict[int, str] | None = None) -> str:
    """Printable top-k table: rank, item id, score, title (blank when unknown)."""
    titles = titles or {}
    id_w = max([len("item_id")] + [len(str(i)) for i in rec.item_ids])
    lines = [f"{'rank':>4}  {'item_id':>{id_w}}  {'score':>10}  title"]
    lines += [f"{r:>4}  {i:>{id_w}}  {s:>10.4f}  {titles.get(i, '')}".rstrip()
              for r, (i, s) in enumerate(zip(rec.item_ids, rec.scores), start=1)]
    return "\n".join(lines)
