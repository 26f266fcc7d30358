"""Thin gRPC clients (blocking and asyncio) for the served `seqrec` ensemble.

Imports only numpy and tritonclient.grpc (never torch, NVTabular, pandas or other seqrec
modules), so an application can depend on `seqrec[client]` alone.

The tensors it sends and reads are declared in contract.py (names, types, shapes, meaning,
limits). A request-level problem (missing item_ids, bad k, shapes that disagree, a request over
the size limits) fails the whole request with INVALID_ARGUMENT; a bad row gets its own message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .connection import TLS, RetryPolicy, Retrying, channel_args

__all__ = ["RecommenderClient", "AsyncRecommenderClient", "Recommendation", "RecommendationError",
           "format_table", "build_inputs", "canary_inputs"]

from . import contract as C

INPUT_NAME = C.ITEM_IDS.name
OUTPUT_IDS = C.TOP_ITEM_IDS.name
OUTPUT_SCORES = C.TOP_SCORES.name
OUTPUT_ERRORS = C.ROW_ERRORS.name  # absent from repositories exported before per-row answers
OUTPUT_RANKER = C.RANKER_SCORES.name  # two-stage exports only
ERROR_MODES = ("raise", "return")


class RecommendationError(Exception):
    """The server rejected or failed a request, or one row of it (the message carries the
    server's message; `row` is the row's index in the request, None for the whole request)."""

    def __init__(self, message: str, row: int | None = None):
        super().__init__(message)
        self.row = row


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[int]
    scores: list[float]
    latency_ms: float  # wall time of recommend(), retries included: what the caller waited
    # A two-stage export's ranker probabilities (the order of item_ids; `scores` are then the
    # retrieval scores); None from a single-stage one.
    ranker_scores: list[float] | None = None


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


EXCLUDE_PAD = np.iinfo(np.int64).min  # never a catalogue id, so excluding it is a no-op


def _padded(rows: list[np.ndarray], pad, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), int(lengths.max(initial=0))), pad, dtype=dtype)
    mask = np.arange(out.shape[1]) < lengths[:, None]
    if rows and mask.any():
        out[mask] = np.concatenate(rows)
    return out, lengths


def _feature_tensor(name: str, rows, lengths: np.ndarray, dtype: str | None) -> np.ndarray:
    """One side feature, one value per item of each session, right-padded like item_ids."""
    if len(rows) != len(lengths):
        raise ValueError(f"feature {name!r} has {len(rows)} rows for {len(lengths)} sessions")
    arrays = [np.asarray(r) for r in rows]
    for i, (a, n) in enumerate(zip(arrays, lengths)):
        if a.ndim != 1 or len(a) != n:
            raise ValueError(f"feature {name!r} row {i} has {a.size} values for {n} item ids")
    if dtype is None:  # the server did not say: integers as INT64, text as BYTES, else FP32
        kinds = {a.dtype.kind for a in arrays}
        dtype = "INT64" if kinds <= set("iub") else "BYTES" if kinds & set("USO") else "FP32"
    if dtype == "BYTES":  # text values (e.g. a brand), UTF-8 encoded; padding is b""
        # plain Python bytes (astype(object)): tritonclient writes np.bytes_ as "b'...'"
        return _padded([np.char.encode(a.astype(str), "utf-8").astype(object) for a in arrays],
                       b"", object)[0]
    if dtype == "INT64":
        for a in arrays:
            if a.dtype.kind == "f" and (a != np.round(a)).any():
                raise ValueError(f"feature {name!r} takes integers (INT64), got {a[a != np.round(a)][0]}")
    np_dtype = np.int64 if dtype == "INT64" else np.float32
    return _padded([a.astype(np_dtype) for a in arrays], 0, np_dtype)[0]


def build_inputs(sessions: Sequence[Sequence[int]], k: int | None = None,
                 exclude: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 features: dict | None = None, dtypes: dict[str, str] | None = None,
                 ) -> list[grpcclient.InferInput]:
    """The request tensors for a batch of sessions (shared by the sync and asyncio clients).
    `exclude` is one id list for every session, or one list per session. `features`: side
    feature name -> one value list per session, aligned with its item ids; `dtypes` (name ->
    INT64 / FP32, from the model's metadata) decides each tensor's type."""
    if len(sessions) == 0:
        raise ValueError("no sessions to send")
    rows = [_to_int64(s) for s in sessions]
    items, lengths = _padded(rows, 0)
    tensors = [(C.ITEM_IDS, items)]
    if (lengths != items.shape[1]).any():  # all rows full: `lengths` is not needed
        tensors.append((C.LENGTHS, lengths[:, None]))
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        tensors.append((C.K, np.full((len(rows), 1), k, dtype=np.int64)))
    if exclude is not None:
        per_row = (len(exclude) > 0 and not np.isscalar(exclude[0])
                   and not isinstance(exclude, np.ndarray))
        ex = [_to_int64(e) for e in exclude] if per_row else [_to_int64(exclude)] * len(rows)
        if len(ex) != len(rows):
            raise ValueError(f"exclude has {len(ex)} lists for {len(rows)} sessions")
        tensors.append((C.EXCLUDE_ITEM_IDS, _padded(ex, EXCLUDE_PAD)[0]))
    for name, rows in (features or {}).items():
        if dtypes is not None and name not in dtypes:
            raise ValueError(f"the model has no input {name!r}; its inputs: {sorted(dtypes)}")
        arr = _feature_tensor(name, rows, lengths, (dtypes or {}).get(name))
        wire = "BYTES" if arr.dtype == object else "FP32" if arr.dtype == np.float32 else "INT64"
        tensors.append((C.side_input(name, wire), arr))
    out = []
    for spec, arr in tensors:
        inp = grpcclient.InferInput(spec.name, list(arr.shape), spec.dtype)
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def parse_result(result, model_name: str, rows: int, latency_ms: float, url: str = "",
                 errors: str = "raise") -> list:
    """Recommendations, one per row. A bad row (non-empty row_errors) raises RecommendationError
    (errors="raise", the first bad row) or stands in the list as one (errors="return")."""
    top_ids = result.as_numpy(OUTPUT_IDS)
    top_scores = result.as_numpy(OUTPUT_SCORES)
    if (top_ids is None or top_scores is None or top_ids.shape != top_scores.shape
            or top_ids.ndim != 2 or top_ids.shape[0] != rows):
        raise RecommendationError(
            f"model {model_name!r} returned malformed outputs "
            f"({OUTPUT_IDS}={None if top_ids is None else top_ids.shape}, "
            f"{OUTPUT_SCORES}={None if top_scores is None else top_scores.shape})")
    ids, scores = top_ids.astype(np.int64).tolist(), top_scores.astype(np.float32).tolist()
    ranked = result.as_numpy(OUTPUT_RANKER)
    if ranked is not None and ranked.shape != top_ids.shape:
        raise RecommendationError(f"model {model_name!r} returned {OUTPUT_RANKER} of shape "
                                  f"{ranked.shape} for {OUTPUT_IDS} of {top_ids.shape}")
    ranked = [None] * len(ids) if ranked is None else ranked.astype(np.float32).tolist()
    out: list = [Recommendation(item_ids=i, scores=s, latency_ms=latency_ms, ranker_scores=r)
                 for i, s, r in zip(ids, scores, ranked)]
    messages = result.as_numpy(OUTPUT_ERRORS)
    messages = np.zeros(0, dtype=object) if messages is None else messages.reshape(-1)
    for row in np.flatnonzero(messages != b""):  # error path: a loop over the bad rows only
        text = messages[row]
        text = text.decode() if isinstance(text, bytes) else str(text)
        err = RecommendationError(f"{model_name!r} at {url}: {text}", row=int(row))
        if errors == "raise":
            raise err
        out[row] = err
    return out


def _check_mode(errors: str) -> None:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")


def _error(model_name: str, url: str, e: InferenceServerException) -> RecommendationError:
    return RecommendationError(f"{model_name!r} at {url}: {e.message() or e} [{e.status()}]")


def _dtypes_of(metadata: dict) -> dict[str, str]:
    return {i["name"]: i["datatype"] for i in metadata.get("inputs", [])}


def _policy(timeout_s: float, retries: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    """retry wins; else retries=0 means fail fast, retries=n at most n retries in timeout_s."""
    if retry is not None:
        return retry
    if retries == 0:
        return RetryPolicy(deadline_s=timeout_s, max_attempts=1)
    if retries is None:
        return RetryPolicy(deadline_s=timeout_s)
    return RetryPolicy(deadline_s=timeout_s, max_attempts=retries + 1)


def _client_kwargs(policy: RetryPolicy, tls: TLS | None) -> dict:
    return dict(verbose=False, channel_args=channel_args(policy), **(tls.client_kwargs() if tls else {}))


def canary_inputs(metadata: dict) -> list[grpcclient.InferInput]:
    """The smallest request the model must answer: one row, one zero (or empty text) in every
    per-item input ([-1, -1]); optional per-row inputs (lengths, k) are left out. An unknown id
    is answered with a row error, which still runs every step of the ensemble."""
    out = []
    for spec in metadata.get("inputs", []):
        if [int(d) for d in spec.get("shape", [])] != [-1, -1]:
            continue
        arr = (np.array([[b""]], dtype=object) if spec["datatype"] == "BYTES"
               else np.zeros((1, 1), dtype=np.float32 if spec["datatype"] == "FP32" else np.int64))
        inp = grpcclient.InferInput(spec["name"], [1, 1], spec["datatype"])
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


class RecommenderClient:
    """Blocking client: top-k next items for one session, or for a batch in one request."""

    def __init__(self, url: str = "127.0.0.1:8001", model_name: str = "seqrec",
                 timeout_s: float = 20.0, retries: int | None = None, *,
                 retry: RetryPolicy | None = None, tls: TLS | None = None):
        """timeout_s: the deadline of one call, retries included (a server restart takes
        6-12 s); retries=0: fail on the first error; retry: a full RetryPolicy; tls: TLS."""
        self.url = url
        self.model_name = model_name
        self._retry = Retrying(_policy(timeout_s, retries, retry))
        self.timeout_s = self._retry.policy.deadline_s
        self._client = grpcclient.InferenceServerClient(url=url, **_client_kwargs(self._retry.policy, tls))
        self._dtypes: dict[str, str] | None = None
        self._canary: list | None = None

    def recommend(self, item_ids: Sequence[int], k: int | None = None,
                  exclude: Sequence[int] | None = None, features: dict | None = None) -> Recommendation:
        """features: side feature name -> one value per item id (models trained with them)."""
        batch = None if features is None else {n: [v] for n, v in features.items()}
        return self.recommend_batch([item_ids], k=k, exclude=exclude, features=batch)[0]

    def recommend_batch(self, sessions: Sequence[Sequence[int]], k: int | None = None,
                        exclude=None, features: dict | None = None,
                        errors: str = "raise") -> list:
        """One request for many sessions. The server answers every row on its own: with
        errors="raise" a bad row raises RecommendationError naming it (the first bad one); with
        errors="return" the list holds a Recommendation per good row and a RecommendationError
        (`.row` = its index) per bad one. A malformed request raises in both modes.
        features: side feature name -> one value list per session."""
        _check_mode(errors)
        t0 = time.perf_counter()
        dtypes = self._input_dtypes() if features else None
        inputs = build_inputs(sessions, k, exclude, features, dtypes)
        # No `outputs`: the server returns all of them, row_errors where the repository has it
        # (repositories exported before per-row answers keep working).
        result = self._call(lambda t: self._client.infer(
            self.model_name, inputs, client_timeout=t))
        return parse_result(result, self.model_name, len(sessions),
                            (time.perf_counter() - t0) * 1000.0, self.url, errors)

    def _input_dtypes(self) -> dict[str, str]:
        """The ensemble's input types (asked once): side features are INT64 or FP32."""
        if self._dtypes is None:
            self._dtypes = _dtypes_of(self.model_metadata())
        return self._dtypes

    def _call(self, fn):
        """fn(timeout) under the retry policy; a final failure as a RecommendationError."""
        try:
            return self._retry.call(fn)
        except InferenceServerException as e:
            raise _error(self.model_name, self.url, e) from e

    def is_live(self) -> bool:
        try:
            return bool(self._client.is_server_live(client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def is_ready(self, timeout_s: float = 5.0) -> bool:
        """True when the model answers a canary request now (Triton's ready flags stay up while
        a dead backend fails every request, so they alone are not enough). Never retries."""
        return self.probe(timeout_s) is None

    def probe(self, timeout_s: float = 5.0) -> InferenceServerException | RecommendationError | None:
        """None if the model answers a canary request; else why not: the server's error, or a
        RecommendationError when Triton's flags say the server or the model is not ready."""
        try:
            if not self._client.is_server_ready(client_timeout=timeout_s):
                return RecommendationError(f"server at {self.url} is not ready")
            if not self._client.is_model_ready(self.model_name, client_timeout=timeout_s):
                return RecommendationError(f"model {self.model_name!r} at {self.url} is not ready")
            if self._canary is None:
                self._canary = canary_inputs(self._client.get_model_metadata(
                    self.model_name, as_json=True, client_timeout=timeout_s))
            self._client.infer(self.model_name, self._canary, client_timeout=timeout_s)
            return None
        except InferenceServerException as e:
            return e

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
        return self._call(lambda t: self._client.get_model_metadata(
            self.model_name, as_json=True, client_timeout=t))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RecommenderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRecommenderClient:
    """asyncio client (tritonclient.grpc.aio), same contract and errors as RecommenderClient."""

    def __init__(self, url: str = "127.0.0.1:8001", model_name: str = "seqrec",
                 timeout_s: float = 20.0, retries: int | None = None, *,
                 retry: RetryPolicy | None = None, tls: TLS | None = None):
        import tritonclient.grpc.aio as aioclient  # only for asyncio users

        self.url, self.model_name = url, model_name
        self._retry = Retrying(_policy(timeout_s, retries, retry))
        self.timeout_s = self._retry.policy.deadline_s
        self._client = aioclient.InferenceServerClient(url=url, **_client_kwargs(self._retry.policy, tls))
        self._dtypes: dict[str, str] | None = None
        self._canary: list | None = None

    async def recommend(self, item_ids: Sequence[int], k: int | None = None,
                        exclude: Sequence[int] | None = None, features: dict | None = None) -> Recommendation:
        batch = None if features is None else {n: [v] for n, v in features.items()}
        return (await self.recommend_batch([item_ids], k=k, exclude=exclude, features=batch))[0]

    async def recommend_batch(self, sessions, k: int | None = None, exclude=None,
                              features: dict | None = None, errors: str = "raise") -> list:
        """As RecommenderClient.recommend_batch (errors="raise" or "return")."""
        _check_mode(errors)
        t0 = time.perf_counter()
        if features and self._dtypes is None:
            self._dtypes = _dtypes_of(await self.model_metadata())
        inputs = build_inputs(sessions, k, exclude, features, self._dtypes if features else None)
        result = await self._call(lambda t: self._client.infer(
            self.model_name, inputs, client_timeout=t))
        return parse_result(result, self.model_name, len(sessions),
                            (time.perf_counter() - t0) * 1000.0, self.url, errors)

    async def _call(self, fn):
        try:
            return await self._retry.acall(fn)
        except InferenceServerException as e:
            raise _error(self.model_name, self.url, e) from e

    async def is_ready(self, timeout_s: float = 5.0) -> bool:
        """As RecommenderClient.is_ready: a canary request answered, not only the flags."""
        try:
            if not (await self._client.is_server_ready(client_timeout=timeout_s)
                    and await self._client.is_model_ready(self.model_name, client_timeout=timeout_s)):
                return False
            if self._canary is None:
                self._canary = canary_inputs(await self._client.get_model_metadata(
                    self.model_name, as_json=True, client_timeout=timeout_s))
            await self._client.infer(self.model_name, self._canary, client_timeout=timeout_s)
            return True
        except InferenceServerException:
            return False

    async def model_metadata(self) -> dict:
        return await self._call(lambda t: self._client.get_model_metadata(
            self.model_name, as_json=True, client_timeout=t))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncRecommenderClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def format_table(rec: Recommendation, titles: dict[int, str] | None = None) -> str:
    """Printable top-k table: rank, item id, score, title (blank when unknown)."""
    titles = titles or {}
    id_w = max([len("item_id")] + [len(str(i)) for i in rec.item_ids])
    lines = [f"{'rank':>4}  {'item_id':>{id_w}}  {'score':>10}  title"]
    lines += [f"{r:>4}  {i:>{id_w}}  {s:>10.4f}  {titles.get(i, '')}".rstrip()
              for r, (i, s) in enumerate(zip(rec.item_ids, rec.scores), start=1)]
    return "\n".join(lines)
