"""What the two served python models do per dynamic batch, in numpy, with no Triton in sight:
request parsing and its limits, per-row errors, the encoded batch handed to the scorer, and the
answers mapped back to original ids. The templates (templates/*.py) only move tensors between
Triton and these classes; tests/unit/test_runtime.py runs them without a server.

Copied beside the templates by `seqrec export` (with lookup.py, side_lookup.py and the contract),
so it runs from the repository alone: numpy only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

if __package__:  # inside the seqrec package
    from seqrec.client import contract as C

    from seqrec.preprocessing.arrays import offsets_from_lengths
    from seqrec.preprocessing.token_pack import ItemTokens, pack

    from .lookup import FIRST_ITEM_ID, PAD_ID, ItemLookup
    from .side_lookup import SideLookup
else:  # the copies beside the Triton model
    import contract as C  # type: ignore[no-redef]
    from arrays import offsets_from_lengths  # type: ignore[no-redef]
    from lookup import FIRST_ITEM_ID, PAD_ID, ItemLookup  # type: ignore[no-redef]
    from side_lookup import SideLookup  # type: ignore[no-redef]
    from token_pack import ItemTokens, pack  # type: ignore[no-redef]

MAX_SHOWN = 20  # unknown ids named in a row's error message
Getter = Callable[[str], "np.ndarray | None"]  # input name -> its array, None when not sent


class RequestError(ValueError):
    """A problem of the request itself (the caller's mistake): answered INVALID_ARGUMENT."""


def _matrix(values: np.ndarray) -> np.ndarray:
    """[rows, width]; the width spelt out, as a -1 cannot be inferred for zero rows."""
    if not values.ndim:
        return values.reshape(1, 1)
    return values.reshape(values.shape[0], int(np.prod(values.shape[1:], dtype=np.int64)))


def _real(values: np.ndarray, real: np.ndarray | None) -> np.ndarray:
    """[B, L] -> the flat values of the real positions (real None: every position is)."""
    return values.reshape(-1) if real is None else values[real]


@dataclass
class Request:
    items: np.ndarray  # [B, L] original ids
    lengths: np.ndarray  # [B]
    k: int  # one per request (0: the exported default)
    exclude: np.ndarray | None  # [B, E] original ids
    side: dict = field(default_factory=dict)  # raw side inputs, [B, L] each
    side_errors: dict = field(default_factory=dict)  # row -> message
    whole: bool = False  # every row fills the padded width (no `lengths` sent)


class Preprocessor:
    """Raw requests -> the step tensors for the model step, all requests of a batch encoded in
    one vectorised call."""

    def __init__(self, lookup: ItemLookup, side: SideLookup | None = None, fingerprint: int = 0,
                 max_k: int | None = None):
        self.lookup, self.side = lookup, side
        self.fingerprint = int(fingerprint)  # this export's, sent to the model step in step_args
        # A two-stage export ranks its retrieved candidates only: k above them is the caller's
        # mistake, not "all of them" as above the catalogue.
        self.max_k = max_k

    def parse(self, get: Getter) -> Request:
        """One request's inputs, checked; raises RequestError naming the problem."""
        items = get(C.ITEM_IDS.name)
        if items is None:
            raise RequestError(f"missing input '{C.ITEM_IDS.name}' (INT64 [batch, length], original item ids)")
        items = _matrix(items)
        if not items.shape[0]:
            raise RequestError(f"'{C.ITEM_IDS.name}' has no rows: send at least one session")
        if items.shape[1] > C.MAX_ITEM_IDS_PER_ROW:
            raise RequestError(f"'{C.ITEM_IDS.name}' has {items.shape[1]} ids per row; the limit is "
                               f"{C.MAX_ITEM_IDS_PER_ROW} (send the most recent ones)")
        lengths = get(C.LENGTHS.name)
        whole = lengths is None
        if whole:
            lengths = np.full(items.shape[0], items.shape[1], dtype=np.int64)
        else:
            lengths = lengths.reshape(-1)
            if lengths.shape[0] != items.shape[0]:
                raise RequestError(f"'{C.LENGTHS.name}' has {lengths.shape[0]} rows but "
                                   f"'{C.ITEM_IDS.name}' has {items.shape[0]}")
            if lengths.size and (lengths.min() < 0 or lengths.max() > items.shape[1]):
                bad = np.flatnonzero((lengths < 0) | (lengths > items.shape[1]))  # error path only
                raise RequestError(f"lengths[{bad[0]}] = {lengths[bad[0]]} is outside 0..{items.shape[1]} "
                                   f"(the padded width of '{C.ITEM_IDS.name}')")
        k = get(C.K.name)
        if k is None:
            k = 0
        else:
            k = k.reshape(-1)
            if k.size != items.shape[0] or (k.size > 1 and (k != k[0]).any()):
                raise RequestError(f"'{C.K.name}' must hold one value per row, the same for every row of a request")
            k = int(k[0]) if k.size else 0
            if k < 1 and items.shape[0]:
                raise RequestError(f"'{C.K.name}' must be >= 1, got {k}")
            if self.max_k is not None and k > self.max_k:
                raise RequestError(f"'{C.K.name}' = {k} is above the {self.max_k} candidates "
                                   "this two-stage model retrieves and ranks (export.candidates)")
        exclude = get(C.EXCLUDE_ITEM_IDS.name)
        if exclude is not None:
            exclude = _matrix(exclude)
            if exclude.shape[0] != items.shape[0]:
                raise RequestError(f"'{C.EXCLUDE_ITEM_IDS.name}' has {exclude.shape[0]} rows but "
                                   f"'{C.ITEM_IDS.name}' has {items.shape[0]}")
            if exclude.shape[1] > C.MAX_EXCLUDED_PER_ROW:
                raise RequestError(f"'{C.EXCLUDE_ITEM_IDS.name}' has {exclude.shape[1]} ids per row; "
                                   f"the limit is {C.MAX_EXCLUDED_PER_ROW}")
        request = Request(items, lengths.astype(np.int64, copy=False), k, exclude,
                          whole=whole)
        if self.side is not None:
            request.side = self._side_inputs(get, items)
            request.side_errors = self.side.row_errors(request.side, request.lengths)
        return request

    def _side_inputs(self, get: Getter, items: np.ndarray) -> dict:
        raw = {}
        for name, dtype in self.side.inputs:
            values = get(name)
            if values is None:
                raise RequestError(
                    f"missing input '{name}' ({dtype} [batch, length], aligned with '{C.ITEM_IDS.name}'): "
                    f"this model was trained with side features and needs {[n for n, _ in self.side.inputs]}")
            values = _matrix(values)
            if values.shape != items.shape:
                raise RequestError(f"'{name}' has shape {list(values.shape)} but "
                                   f"'{C.ITEM_IDS.name}' has {list(items.shape)}")
            raw[name] = values
        return raw

    def run(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        """Step tensors (name -> array) per request."""
        # One flat ragged batch (values + offsets) for every row of every request. Few array
        # calls per batch: each costs microseconds in the served step, whatever its size.
        reals = [None if r.whole else np.arange(r.items.shape[1]) < r.lengths[:, None]
                 for r in requests]
        parts = [_real(r.items, m) for r, m in zip(requests, reals)]
        flat = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int64, copy=False)
        lengths = requests[0].lengths if len(requests) == 1 else np.concatenate([r.lengths for r in requests])
        offsets = offsets_from_lengths(lengths)
        encoded, enc_offsets, keep = self.lookup.encode_keep(flat, offsets)
        enc_lengths = np.diff(enc_offsets)
        side = None
        if self.side is not None:  # features of the kept positions, aligned with encoded
            raw = {name: np.concatenate([_real(r.side[name], m) for r, m in zip(requests, reals)])
                   for name, _ in self.side.inputs}
            cats, conts = self.side.encode(raw, offsets, flat)
            side = (cats[keep], conts[keep])
        out, row = [], 0
        for r in requests:
            n = len(r.lengths)
            out.append(self._outputs(r, encoded, enc_offsets[row:row + n], enc_lengths[row:row + n], side))
            row += n
        return out

    def row_errors(self, r: Request, enc_lengths: np.ndarray) -> np.ndarray | None:
        """One message per row ("" = good): the first problem of each bad row, naming the row;
        None when every row is good."""
        if enc_lengths.all() and not r.side_errors:
            return None
        empty = np.flatnonzero(enc_lengths == 0)
        errors = np.full(len(r.lengths), "", dtype=object)
        for i, message in r.side_errors.items():
            errors[i] = message
        for i in empty:  # error path: a loop over the BAD rows only
            if r.lengths[i] == 0:
                errors[i] = f"empty session (row {i}): '{C.ITEM_IDS.name}' needs at least one item id"
            else:
                shown = r.items[i, : r.lengths[i]][-MAX_SHOWN:].tolist()
                errors[i] = f"no known item in the session (row {i}): unknown item id(s) {shown}"
        return errors

    def _outputs(self, r: Request, encoded, starts, enc_lengths, side):
        n = len(enc_lengths)
        errors = self.row_errors(r, enc_lengths)
        if errors is not None:  # a bad row reaches the model step empty (see scored)
            enc_lengths = np.where(errors == "", enc_lengths, 0)
        width = max(int(enc_lengths.max(initial=0)), 1)  # never a 0-wide tensor
        if errors is None and (n == 1 or (enc_lengths == width).all()):
            # rows of one length lie back to back in `encoded`: a view, no scatter
            at, mask = None, None
            items = encoded[starts[0]:starts[0] + n * width].reshape(n, width) if n else \
                np.full((0, width), PAD_ID, dtype=np.int64)
        else:
            cols = np.arange(width)
            mask = cols < enc_lengths[:, None]
            at = (starts[:, None] + cols)[mask]  # position j of row i holds encoded[start_i + j]
            items = np.full((n, width), PAD_ID, dtype=np.int64)
            items[mask] = encoded[at]
        excluded = 1 if r.exclude is None else r.exclude.shape[1]
        args = np.full((n, C.ARG_EXCLUDE + excluded), PAD_ID, dtype=np.int64)
        args[:, [C.ARG_K, C.ARG_FINGERPRINT]] = (r.k, self.fingerprint)
        if r.exclude is not None:
            exclude = self.lookup.encode_items(r.exclude.reshape(-1)).reshape(r.exclude.shape)
            exclude[exclude < FIRST_ITEM_ID] = PAD_ID  # unknown ids: nothing to exclude
            args[:, C.ARG_EXCLUDE:] = exclude
        messages = (np.full((n, 1), b"", dtype=object) if errors is None else
                    np.array([e.encode() for e in errors], dtype=object).reshape(-1, 1))
        out = {C.ENCODED_ITEMS.name: items, C.STEP_ARGS.name: args, C.ROW_ERRORS.name: messages}
        if side is not None:  # the same right-padding for the side features
            for spec, values in zip((C.SIDE_CATEGORICAL, C.SIDE_CONTINUOUS), side):
                if values.shape[1]:
                    padded = np.zeros((n, width, values.shape[1]), dtype=values.dtype)
                    if mask is None:
                        if n:  # a request of no rows has no start
                            padded[:] = values[starts[0]:starts[0] + n * width].reshape(n, width, -1)
                    else:
                        padded[mask] = values[at]
                    out[spec.name] = padded
        return out


@dataclass(frozen=True)
class TextPacking:
    """A text model's packing budgets (its config: max_tokens, max_items, attention_window)."""
    max_tokens: int
    max_items: int
    window: int


PACKING_FILE = "text_packing.json"  # beside a text model's item tokens, in the version folder


def save_packing(folder, packing: TextPacking) -> None:
    (Path(folder) / PACKING_FILE).write_text(json.dumps(asdict(packing)))


def load_preprocessor(folder, fingerprint: int, max_k: int | None = None) -> Preprocessor:
    """The lookup step of the export in `folder`: a text model's when it holds item tokens
    (max_k: a two-stage export's candidates, the largest k it answers)."""
    folder = Path(folder)
    lookup = ItemLookup.load(folder)
    if (folder / PACKING_FILE).is_file():
        packing = TextPacking(**json.loads((folder / PACKING_FILE).read_text()))
        return TextPreprocessor(lookup, ItemTokens.load(folder), packing, fingerprint)
    return Preprocessor(lookup, SideLookup.load(folder), fingerprint, max_k)


class TextPreprocessor(Preprocessor):
    """A text model's lookup step: the same parsing, encoding and row errors, then each row's
    encoded history packed from the cached item tokens exactly as training packs it."""

    def __init__(self, lookup: ItemLookup, tokens: ItemTokens, packing: TextPacking, fingerprint: int = 0):
        super().__init__(lookup, None, fingerprint)
        if tokens.num_items != lookup.num_items + FIRST_ITEM_ID:
            raise ValueError(f"item tokens cover {tokens.num_items} ids but the lookup knows "
                             f"{lookup.num_items} items (+ {FIRST_ITEM_ID} reserved): not one export")
        self.tokens, self.packing = tokens, packing

    def _outputs(self, r: Request, encoded, starts, enc_lengths, side):
        out = super()._outputs(r, encoded, starts, enc_lengths, side)
        items = out[C.ENCODED_ITEMS.name]
        real = items != PAD_ID  # a bad row is all PAD_ID: packed as [CLS] alone, never scored
        offsets = np.concatenate([[0], np.cumsum(real.sum(axis=1))]).astype(np.int64)
        p = self.packing
        packed = pack(self.tokens, items[real], offsets, p.max_tokens, p.max_items, p.window)
        out.update({C.TEXT_PREFIX + key: packed[key] for key in C.TEXT_KEYS})
        return out


def scored(items: np.ndarray) -> np.ndarray:
    """[N, T] encoded step rows -> [N] rows to score: a good row has at least one known item
    (first), a bad one reaches the model step all PAD_ID."""
    return items[:, 0] != PAD_ID


def _stack(arrays: list[np.ndarray], fill) -> np.ndarray:
    """Requests' [b_i, w_i, ...] arrays -> one [sum b_i, max w_i, ...], padded with `fill`."""
    if len(arrays) == 1:
        return arrays[0]
    width = max(a.shape[1] for a in arrays)
    out = np.full((sum(len(a) for a in arrays), width, *arrays[0].shape[2:]), fill,
                  dtype=arrays[0].dtype)
    at = 0
    for a in arrays:  # one copy per request, not per row
        out[at:at + len(a), : a.shape[1]] = a
        at += len(a)
    return out


@dataclass
class Batch:
    items: np.ndarray  # [N, T] encoded, 0-padded: every row of every request
    exclude: np.ndarray  # [N, E] encoded, 0-padded
    ok: np.ndarray  # [N] rows to score
    side: dict  # "categorical" / "continuous" -> [N, T, C|F]
    rows: list[int]  # rows per request
    k: list[int]  # effective k per request
    depth: int  # how many to rank: the largest k


class Ranker:
    """The model step around the scorer: requests -> one batch of good rows; ranked encoded ids
    -> each request's answer in original ids."""

    # step tensor -> the scorer's key: side features, or a text model's packed tokens
    SIDE = ((C.SIDE_CATEGORICAL.name, "categorical"), (C.SIDE_CONTINUOUS.name, "continuous"),
            *((C.TEXT_PREFIX + key, key) for key in C.TEXT_KEYS))

    def __init__(self, vocabulary: np.ndarray, default_k: int, side_keys: tuple[str, ...] = (),
                 fingerprint: int = 0, two_stage: bool = False):
        self.vocabulary = np.asarray(vocabulary, dtype=np.int64)  # encoded id -> original (-1 reserved)
        self.default_k = int(default_k)
        self.catalogue = int((self.vocabulary >= 0).sum())
        self.side_keys = side_keys  # which of "categorical" / "continuous" the model has
        self.fingerprint = int(fingerprint)  # this export's; step_args must carry the same
        self.two_stage = bool(two_stage)  # answers ranker_scores too

    def mismatch(self, request: dict[str, np.ndarray]) -> str | None:
        """Why a request's step tensors come from another export's lookup step (None: they do
        not). Its encoded ids would mean other items here: refused, never answered."""
        sent = request[C.STEP_ARGS.name][:, C.ARG_FINGERPRINT]
        if (sent == self.fingerprint).all():
            return None
        wrong = sent[sent != self.fingerprint]
        return (f"export mismatch: the lookup step ({C.PREPROCESS}) is from export "
                f"{C.fingerprint_text(wrong[0])} but the model step ({C.MODEL}) is from export "
                f"{C.fingerprint_text(self.fingerprint)}: nothing answered (an ensemble must name "
                "the members of one export; reload the repository or re-export)")

    def gather(self, requests: list[dict[str, np.ndarray]]) -> Batch:
        ks = []
        for r in requests:
            args = r[C.STEP_ARGS.name]
            k = int(args[0, C.ARG_K]) if args.size else 0
            # Checked (>= 1, one per request) by the preprocessing step; 0 means the default;
            # above the catalogue: all of it.
            ks.append(min(k if k > 0 else self.default_k, self.catalogue))
        side = {key: _stack([r[name] for r in requests], 0)
                for name, key in self.SIDE if key in self.side_keys}
        items = _stack([r[C.ENCODED_ITEMS.name] for r in requests], PAD_ID)
        return Batch(items=items,
                     exclude=np.ascontiguousarray(_stack(
                         [r[C.STEP_ARGS.name][:, C.ARG_EXCLUDE:] for r in requests], PAD_ID)),
                     ok=scored(items),
                     side=side, rows=[len(r[C.ENCODED_ITEMS.name]) for r in requests], k=ks,
                     depth=max(max(ks), 1))

    @staticmethod
    def good(batch: Batch):
        """(items, exclude, side) of the rows to score."""
        if batch.ok.all():
            return batch.items, batch.exclude, batch.side
        ok = batch.ok
        return batch.items[ok], batch.exclude[ok], {key: v[ok] for key, v in batch.side.items()}

    def answers(self, batch: Batch, ids: np.ndarray, scores: np.ndarray,
                ranker_scores: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """ids / scores [good rows, depth] (encoded, best first) -> per request top_item_ids /
        top_scores [rows, k] in original ids; -inf places -> -1, bad rows all -1 / NaN. A
        two-stage step also gives ranker_scores (same shape, the order of ids), answered alike."""
        floats = {C.TOP_SCORES.name: np.asarray(scores, dtype=np.float32)}
        if self.two_stage:
            floats[C.RANKER_SCORES.name] = ranker_scores
        top = np.where(np.isfinite(floats[C.TOP_SCORES.name]), self.vocabulary[ids], -1) if len(ids) \
            else np.full((0, batch.depth), -1, dtype=np.int64)
        if not batch.ok.all():  # bad rows: -1 / NaN in their places
            full_top = np.full((len(batch.ok), batch.depth), -1, dtype=np.int64)
            for name, values in floats.items():
                floats[name] = np.full((len(batch.ok), batch.depth), np.nan, dtype=np.float32)
                if len(ids):
                    floats[name][batch.ok] = values
            if len(ids):
                full_top[batch.ok] = top
            top = full_top
        if len(batch.rows) == 1 and batch.k[0] == batch.depth:  # one request, answered whole
            return [{C.TOP_ITEM_IDS.name: top, **floats}]
        out, at = [], 0
        for n, k in zip(batch.rows, batch.k):
            out.append({C.TOP_ITEM_IDS.name: np.ascontiguousarray(top[at:at + n, :k]),
                        **{name: np.ascontiguousarray(v[at:at + n, :k]) for name, v in floats.items()}})
            at += n
        return out
