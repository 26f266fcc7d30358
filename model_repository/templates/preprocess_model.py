"""Triton python-backend model: raw sessions (original item ids) -> encoded ids.

Runs the saved workflow's compiled form (lookup.py + item_lookup.npz, both copied next to this
file by `seqrec export`), so it needs numpy only: no NVTabular, no training code. Every request
of one dynamic batch is encoded in ONE vectorised call. Errors are answered per request when the
request itself is malformed (missing item_ids, bad k, shapes that disagree), otherwise per ROW:
a bad row (empty, no known item, unusable side features) gets a message in `row_errors` and
`row_ok` false, so the model step skips it, and the other rows are answered as if sent alone.

Inputs per request (batch of B sessions, right-padded):
  item_ids          INT64 [B, L]  original ids, oldest first
  lengths           INT64 [B, 1]  optional: real length of each row (default: L)
  exclude_item_ids  INT64 [B, E]  optional: original ids never to recommend (unknown ids ignored)
  k                 INT64 [B, 1]  optional: how many items, the same for every row (>= 1)
  <side>            [B, L]        only for a model trained with side features (side_lookup.npz
                                  beside this file): raw values aligned with item_ids, one tensor
                                  per raw column (categorical INT64, continuous FP32, `timestamp`
                                  INT64 seconds for time features); required by such a model
Outputs: encoded_items INT64 [B, T] (0-padded; a bad row all 0), exclude_encoded INT64 [B, E]
(unknown -> 0), top_k INT64 [B, 1] (the checked k; 0 = the exported default), row_ok BOOL [B, 1]
(false: a bad row, not to be scored), row_errors BYTES [B, 1] ("" for a good row, else the
message naming its problem), and for side-feature models side_categorical INT64 [B, T, C] /
side_continuous FP32 [B, T, F] aligned with encoded_items.
"""
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lookup import FIRST_ITEM_ID, PAD_ID, ItemLookup  # noqa: E402  (the copy beside this file)
from side_lookup import SideLookup  # noqa: E402

MAX_SHOWN = 20


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        self.lookup = ItemLookup.load(Path(__file__).resolve().parent)
        self.side = SideLookup.load(Path(__file__).resolve().parent)  # None: item-only model

    def _rows(self, request):
        """(items [B, L], lengths [B]) of one request, or an error message naming the problem."""
        items = _optional(request, "item_ids")
        if items is None:
            return "missing input 'item_ids' (INT64 [batch, length], original item ids)"
        items = items.reshape(items.shape[0], -1) if items.ndim else items.reshape(1, 1)
        lengths = _optional(request, "lengths")
        if lengths is None:
            lengths = np.full(items.shape[0], items.shape[1], dtype=np.int64)
        else:
            lengths = lengths.reshape(-1)
            if lengths.shape[0] != items.shape[0]:
                return f"'lengths' has {lengths.shape[0]} rows but 'item_ids' has {items.shape[0]}"
            bad = np.flatnonzero((lengths < 0) | (lengths > items.shape[1]))
            if bad.size:
                return (f"lengths[{bad[0]}] = {lengths[bad[0]]} is outside 0..{items.shape[1]} "
                        "(the padded width of 'item_ids')")
        k = _optional(request, "k")
        if k is None:
            k = np.zeros(items.shape[0], dtype=np.int64)
        else:
            k = k.reshape(-1)
            if k.size != items.shape[0] or (k.size and (k != k[0]).any()):
                return "'k' must hold one value per row, the same for every row of a request"
            if k.size and k[0] < 1:
                return f"'k' must be >= 1, got {int(k[0])}"
        exclude = _optional(request, "exclude_item_ids")
        if exclude is not None:
            exclude = exclude.reshape(exclude.shape[0], -1) if exclude.ndim else exclude.reshape(1, 1)
            if exclude.shape[0] != items.shape[0]:
                return (f"'exclude_item_ids' has {exclude.shape[0]} rows but 'item_ids' "
                        f"has {items.shape[0]}")
        raw = self._side_inputs(request, items, lengths) if self.side is not None else {}
        if isinstance(raw, str):
            return raw
        errors = self.side.row_errors(raw, lengths) if self.side is not None else {}
        return items, lengths.astype(np.int64), k.astype(np.int64), exclude, raw, errors

    def _side_inputs(self, request, items, lengths):
        """Raw side-feature tensors shaped like item_ids, or an error naming the input."""
        raw = {}
        for name, dtype in self.side.inputs:
            values = _optional(request, name)
            if values is None:
                return (f"missing input '{name}' ({dtype} [batch, length], aligned with 'item_ids'): "
                        f"this model was trained with side features and needs {[n for n, _ in self.side.inputs]}")
            values = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
            if values.shape != items.shape:
                return f"'{name}' has shape {list(values.shape)} but 'item_ids' has {list(items.shape)}"
            raw[name] = values
        return raw

    def execute(self, requests):
        parsed = [self._rows(r) for r in requests]
        good = [i for i, p in enumerate(parsed) if not isinstance(p, str)]
        # One flat ragged batch (values + offsets) for every good row of every request.
        values, lengths = [], []
        side_values = {name: [] for name, _ in (self.side.inputs if self.side else [])}
        for i in good:
            items, n, _, _, raw, _ = parsed[i]
            real = np.arange(items.shape[1]) < n[:, None]
            values.append(items[real])
            lengths.append(n)
            for name in side_values:
                side_values[name].append(raw[name][real])
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(all_lengths)]).astype(np.int64)
        flat = np.concatenate(values) if values else np.zeros(0, dtype=np.int64)
        encoded, enc_offsets, keep = self.lookup.encode_keep(flat, offsets)
        enc_lengths = np.diff(enc_offsets)
        side = None
        if self.side is not None and good:  # features of the kept positions, aligned with encoded
            cats, conts = self.side.encode({k: np.concatenate(v) for k, v in side_values.items()}, offsets, flat)
            side = (cats[keep], conts[keep])

        responses = [None] * len(requests)
        row = 0
        for i, p in enumerate(parsed):
            if isinstance(p, str):
                responses[i] = _error(p)
                continue
            items, n, k, exclude, _, side_errors = p
            rows = slice(row, row + len(n))
            row += len(n)
            responses[i] = self._response(items, n, k, exclude, side_errors, encoded,
                                          enc_offsets[rows], enc_lengths[rows], side)
        return responses

    def _row_errors(self, items, n, enc_lengths, side_errors) -> np.ndarray:
        """One message per row ("" = good): the first problem of each bad row, naming the row."""
        errors = np.full(len(n), "", dtype=object)
        for r, message in side_errors.items():
            errors[r] = message
        # Error path only: a loop over the BAD rows, to name each one's ids.
        for r in np.flatnonzero(enc_lengths == 0):
            if n[r] == 0:
                errors[r] = f"empty session (row {r}): 'item_ids' needs at least one item id"
            else:
                shown = items[r, : n[r]][-MAX_SHOWN:].tolist()
                errors[r] = f"no known item in the session (row {r}): unknown item id(s) {shown}"
        return errors

    def _response(self, items, n, k, exclude, side_errors, encoded, starts, enc_lengths, side=None):
        errors = self._row_errors(items, n, enc_lengths, side_errors)
        ok = errors == ""
        enc_lengths = np.where(ok, enc_lengths, 0)  # a bad row reaches the model step empty
        width = max(int(enc_lengths.max(initial=0)), 1)  # never a 0-wide tensor
        out = np.full((len(n), width), PAD_ID, dtype=np.int64)
        # Right-pad every encoded row: position j of row r holds encoded[start_r + j].
        cols = np.arange(width)
        mask = cols < enc_lengths[:, None]
        at = (starts[:, None] + cols)[mask]
        out[mask] = encoded[at]
        side_out = []
        if side is not None:  # the same right-padding for the side features
            for name, values in (("side_categorical", side[0]), ("side_continuous", side[1])):
                if values.shape[1]:
                    padded = np.zeros((len(n), width, values.shape[1]), dtype=values.dtype)
                    padded[mask] = values[at]
                    side_out.append(pb_utils.Tensor(name, padded))
        if exclude is None:
            exclude_enc = np.zeros((len(n), 0), dtype=np.int64)
        else:
            exclude_enc = self.lookup.encode_items(exclude.reshape(-1)).reshape(exclude.shape)
            exclude_enc[exclude_enc < FIRST_ITEM_ID] = PAD_ID
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("encoded_items", out),
            pb_utils.Tensor("exclude_encoded", exclude_enc.astype(np.int64)),
            pb_utils.Tensor("top_k", k.reshape(-1, 1)),
            pb_utils.Tensor("row_ok", ok.reshape(-1, 1)),
            pb_utils.Tensor("row_errors", np.array([e.encode() for e in errors],
                                                   dtype=object).reshape(-1, 1)),
            *side_out,
        ])
