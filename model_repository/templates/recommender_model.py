"""Triton python-backend model: encoded sessions -> top-k ORIGINAL item ids and scores, once per
dynamic batch. With scorer.pt2 beside this file (a torch.export program that `seqrec export`
checked against recommend() on real histories) it needs torch only; otherwise it calls
seqrec's recommend() (the function offline evaluation uses) on the checkpoint.

Inputs per request: encoded_items INT64 [B, T] (0-padded), exclude_encoded INT64 [B, E] (0 = none),
top_k INT64 [B, 1] (0: the exported top_k; capped at the catalogue size), row_ok BOOL [B, 1]
(false: a row the preprocessing step found bad; it is not scored); for a model trained with
side features also side_categorical INT64 [B, T, C] / side_continuous FP32 [B, T, F], aligned
with encoded_items, columns in the model's order.
Outputs: top_item_ids INT64 [B, k], top_scores FP32 [B, k], best first. When exclusions leave
fewer than k items, the tail is id -1 with score -inf. A bad row (row_ok false) is all id -1
with score NaN (its message is in the ensemble's row_errors).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from safe_program import load_program  # noqa: E402  (the copy beside this file)

PAD_ID = 0


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        params = json.loads(args["model_config"])["parameters"]
        self.k = int(params["top_k"]["string_value"])
        self.exclude_seen = params["exclude_seen"]["string_value"] == "true"
        threads = int(params.get("torch_threads", {}).get("string_value", "0"))
        if threads > 0:
            torch.set_num_threads(threads)  # the server's other threads need the remaining cores
        self.device = "cpu"
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = f"cuda:{args['model_instance_device_id']}"
        for needed in (here / "item_vocabulary.npy", here / "checkpoint" / "config.json"):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} not found: incomplete model version")
        model_cfg = json.loads((here / "checkpoint" / "config.json").read_text())
        side = model_cfg.get("side_features") or {}
        self.side_columns = (list(side.get("categorical", [])), list(side.get("continuous", [])))
        if (here / "scorer.pt2").is_file():
            self.max_len = model_cfg["max_len"]
            try:
                self.scorer = load_program(here / "scorer.pt2").module().to(self.device)
            except Exception as err:  # a truncated or foreign file: say which one
                raise RuntimeError(f"{here / 'scorer.pt2'} is not a readable exported "
                                   f"program ({type(err).__name__}: {err})") from None
            self.model = None
        else:
            from seqrec.training.checkpoint import load_checkpoint

            self.model, self.scorer = load_checkpoint(here / "checkpoint").to(self.device), None
        self.vocabulary = np.load(here / "item_vocabulary.npy")  # encoded id -> original id
        self.catalogue = int((self.vocabulary >= 0).sum())

    def _k(self, request) -> int:
        k = int(pb_utils.get_input_tensor_by_name(request, "top_k").as_numpy().reshape(-1)[0])
        # Checked (>= 1, one per request) by the preprocessing step; 0 means the default.
        return min(k if k > 0 else self.k, self.catalogue)  # above the catalogue: all of it

    def execute(self, requests):
        items = [pb_utils.get_input_tensor_by_name(r, "encoded_items").as_numpy() for r in requests]
        excludes = [pb_utils.get_input_tensor_by_name(r, "exclude_encoded").as_numpy() for r in requests]
        oks = [pb_utils.get_input_tensor_by_name(r, "row_ok").as_numpy().reshape(-1).astype(bool)
               for r in requests]
        ks = [self._k(r) for r in requests]
        histories, row_k, row_excl = [], [], []
        side_rows = {"side_categorical": [], "side_continuous": []}  # per GOOD row: [n, C] / [n, F]
        for i in range(len(requests)):
            lengths = (items[i] != PAD_ID).sum(axis=1)
            histories += [row[:n] for row, n, ok in zip(items[i], lengths, oks[i]) if ok]
            for name, cols in zip(side_rows, self.side_columns):
                if cols:
                    values = pb_utils.get_input_tensor_by_name(requests[i], name).as_numpy()
                    side_rows[name] += [row[:n] for row, n, ok in zip(values, lengths, oks[i]) if ok]
            row_k += [ks[i]] * len(items[i])
            row_excl.append(excludes[i])
        responses = []
        ok = np.concatenate(oks)
        width = max(e.shape[1] for e in row_excl)
        excl = np.zeros((len(ok), width), dtype=np.int64)
        at = 0
        for e in row_excl:
            excl[at:at + len(e), : e.shape[1]] = e
            at += len(e)
        # Rank k + (number of exclusions) and drop the excluded: the same as masking them first.
        depth = min(max(row_k) + width, self.catalogue)
        # Bad rows are never scored: they keep the filler (id -1, score NaN).
        ids = np.full((len(ok), depth), -1, dtype=np.int64)
        scores = np.full((len(ok), depth), np.nan, dtype=np.float32)
        if histories:
            ids[ok], scores[ok] = self._ranked(histories, depth, side_rows, excl[ok])
        at = 0
        for i in range(len(requests)):
            rows, k = slice(at, at + len(items[i])), ks[i]
            at += len(items[i])
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("top_item_ids", np.ascontiguousarray(ids[rows, :k], dtype=np.int64)),
                pb_utils.Tensor("top_scores", np.ascontiguousarray(scores[rows, :k])),
            ]))
        return responses

    def _ranked(self, histories, depth, side_rows, excl):
        """Top `depth` original ids and scores of each history, excluded items moved to the tail
        as id -1 / score -inf."""
        top, scores = self._top(histories, depth, side_rows)
        dropped = (top[:, :, None] == excl[:, None, :]).any(axis=2) | ~np.isfinite(scores)
        order = np.argsort(dropped, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        dropped = np.take_along_axis(dropped, order, axis=1)
        ids = np.where(dropped, -1, self.vocabulary[top])
        return ids, np.where(dropped, -np.inf, scores).astype(np.float32)

    def _top(self, histories, depth, side_rows):
        if self.scorer is None:
            from seqrec.training.recommend import recommend

            features = {}
            for name, cols in zip(side_rows, self.side_columns):
                features.update({c: [r[:, j] for r in side_rows[name]] for j, c in enumerate(cols)})
            return recommend(self.model, histories, k=depth, exclude_seen=self.exclude_seen,
                             features=features or None)
        lengths = np.array([len(h) for h in histories])
        kept = np.minimum(lengths, self.max_len)  # the LAST max_len items, as recommend() keeps

        def tails(rows, dtype):  # right-padded [N, T, ...] of each row's last `kept` entries
            first = rows[0]
            batch = np.zeros((len(rows), int(kept.max()), *first.shape[1:]), dtype=dtype)
            mask = np.arange(batch.shape[1]) < kept[:, None]
            batch[mask] = np.concatenate([r[len(r) - n:] for r, n in zip(rows, kept)])
            return torch.from_numpy(batch).to(self.device)

        items = tails(histories, np.int64)
        side = {}
        for key, name, cols, dtype in (("categorical", "side_categorical", self.side_columns[0], np.int64),
                                       ("continuous", "side_continuous", self.side_columns[1], np.float32)):
            if cols:
                side[key] = tails(side_rows[name], dtype)
        with torch.no_grad():
            scores = self.scorer(items, side) if side else self.scorer(items)
            if self.exclude_seen:
                rows = torch.arange(len(items), device=self.device)[:, None].expand_as(items)
                seen = items != PAD_ID
                scores[rows[seen], items[seen]] = float("-inf")
            top = torch.topk(scores, min(depth, scores.shape[1]), dim=1)
        return top.indices.cpu().numpy(), top.values.float().cpu().numpy()
