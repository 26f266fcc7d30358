"""Triton python-backend model: encoded sessions -> top-k ORIGINAL item ids and scores, once per
dynamic batch. Glue only: model/runtime.py (copied beside this file) gathers the batch and maps
the answers back; the ranking itself is the scorer (seqrec.training.scoring), run as scorer.pt2
(its torch.export program, checked by `seqrec export`: torch alone), scorer_compiled.pt2 (the
same program compiled by AOTInductor, with `compile_scorer`; called through safe_program's
CompiledProgram) or, for an export made with
`allow_fallback`, eagerly from the installed seqrec.training. A two-stage export's program is the
retrieval + ranking module (seqrec.training.ranker.two_stage), which also answers ranker_scores.
A text model (Recformer: scorer `recformer`) runs training/recformer/serving.py's scorer from the
installed seqrec.training over its item_matrix.npy, its packed tokens arriving where side
features do. Output types come from model_config.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contract import FINGERPRINT_FILE, TEXT_KEYS, fingerprint_value  # noqa: E402  (the copies beside this file)
from runtime import Ranker  # noqa: E402
from safe_program import CompiledProgram, load_program  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        threads = int(params.get("torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)  # the server's other threads need the remaining cores
        self.device = "cpu"
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = f"cuda:{args['model_instance_device_id']}"
        text = params.get("scorer") == "recformer"  # a text model: packed tokens, item matrix
        for needed in (here / "item_vocabulary.npy", here / FINGERPRINT_FILE,
                       here / "checkpoint" / ("recformer.json" if text else "config.json")):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} not found: incomplete model version")
        if text:
            keys = TEXT_KEYS
        else:
            model_cfg = json.loads((here / "checkpoint" / "config.json").read_text())
            side = model_cfg.get("side_features") or {}
            keys = tuple(key for key in ("categorical", "continuous") if side.get(key))
        if text:  # the installed seqrec.training: the Longformer is not exported as a program
            from seqrec.training.recformer.serving import load_text_scorer

            self.scorer = load_text_scorer(here, params.get("exclude_seen") == "true", self.device)
        elif params.get("scorer") == "fallback":
            from seqrec.training.checkpoint import load_checkpoint
            from seqrec.training.scoring import Scorer

            model = load_checkpoint(here / "checkpoint")
            self.scorer = Scorer(model, params.get("exclude_seen") == "true").eval()
            if params.get("candidates"):  # a two-stage export: the ranker beside the checkpoint
                from seqrec.training.ranker.two_stage import load_ranker, two_stage_module

                self.scorer = two_stage_module(model, load_ranker(here / "ranker"),
                                               int(params["candidates"]),
                                               params.get("exclude_seen") == "true")
            self.scorer = self.scorer.to(self.device)
        else:
            path = here / params.get("scorer", "scorer.pt2")
            try:
                if path.name == "scorer_compiled.pt2":  # AOTInductor: C++ kernels for this CPU
                    self.scorer = CompiledProgram(path)
                else:
                    self.scorer = load_program(path).module().to(self.device)
            except Exception as err:  # a truncated or foreign file: say which one
                raise RuntimeError(f"{path} is not a readable exported "
                                   f"program ({type(err).__name__}: {err})") from None
        self.ranker = Ranker(np.load(here / "item_vocabulary.npy"), int(params["top_k"]), keys,
                             fingerprint_value((here / FINGERPRINT_FILE).read_text().strip()),
                             two_stage=bool(params.get("candidates")))
        self.dtypes = {o["name"]: pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, o["name"])["data_type"])
            for o in config["output"]}
        self.inputs = [i["name"] for i in config["input"]]
        self.window = int(params["window"])  # the scorer's widest window (its keep)
        # numpy -> the scorer's device; on CPU no copy and no call (each costs microseconds here)
        self.tensor = torch.from_numpy if self.device == "cpu" else \
            (lambda a: torch.from_numpy(a).to(self.device))
        self.shapes = {}  # n -> the storage-less [n, 0] tensor that passes a size (depth, width)

    def shape(self, n: int):
        if n not in self.shapes:
            self.shapes[n] = torch.empty((n, 0), device=self.device)
        return self.shapes[n]

    def execute(self, requests):
        arrays = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs}
                  for r in requests]
        refused = [self.ranker.mismatch(a) for a in arrays]
        if any(refused):  # another export's lookup step: an error for those, never an answer
            kept = [i for i, why in enumerate(refused) if why is None]
            answered = self.execute_arrays([arrays[i] for i in kept]) if kept else []
            responses = [None if why is None else pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(why, pb_utils.TritonError.INTERNAL))
                for why in refused]
            for i, response in zip(kept, answered):
                responses[i] = response
            return responses
        return self.execute_arrays(arrays)

    def execute_arrays(self, arrays):
        try:
            batch = self.ranker.gather(arrays)
            items, exclude, side = self.ranker.good(batch)
            ranked = None
            if len(items):
                with torch.inference_mode():
                    # the window only as wide as this batch's longest history: [W, 0], like depth
                    top = self.scorer(
                        self.tensor(items), self.tensor(exclude), self.shape(batch.depth),
                        {k: self.tensor(v) for k, v in side.items()} or None,
                        self.shape(min(items.shape[1], self.window)))
                if self.device != "cpu":
                    top = [t.cpu() for t in top]
                ids, scores = top[0].numpy(), top[1].numpy()
                ranked = top[2].numpy() if len(top) > 2 else None  # two-stage: the ranker's
            else:
                ids = np.zeros((0, batch.depth), dtype=np.int64)
                scores = np.zeros((0, batch.depth), dtype=np.float32)
            outputs = self.ranker.answers(batch, ids, scores, ranked)
        except Exception as err:  # noqa: BLE001 - a fault: every request of the batch learns why
            error = pb_utils.TritonError(f"scoring failed: {type(err).__name__}: {err}",
                                         pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in arrays]
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, value.astype(self.dtypes[name], copy=False))
            for name, value in out.items()]) for out in outputs]
