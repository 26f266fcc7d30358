"""Triton python-backend model: raw session (original item ids) -> encoded ids, through the
NVTabular workflow saved by `seqrec preprocess` (copied next to this file)."""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from seqrec.preprocessing.workflow import encode_sessions, load_workflow


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.workflow = load_workflow(here / "workflow")
        self.output_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(json.loads(args["model_config"]), "encoded_items")["data_type"]
        )

    def execute(self, requests):
        # All requests of one call go through the workflow together (one transform, not N).
        sessions = [pb_utils.get_input_tensor_by_name(r, "item_ids").as_numpy().reshape(-1) for r in requests]
        encoded = encode_sessions(self.workflow, sessions)
        responses = []
        for raw, items in zip(sessions, encoded):
            if raw.size == 0:
                error = pb_utils.TritonError("empty session: 'item_ids' needs at least one item id")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            elif items.size == 0:
                error = pb_utils.TritonError(
                    f"no known item in the session: unknown item id(s) {raw[:20].tolist()}"
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                out = pb_utils.Tensor("encoded_items", items.astype(self.output_dtype))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
