"""A tiny python-backend model repository for tests of the server and the client.

The model "seqrec" (the ensemble's tensor contract: batched, [B, L]) reverses each row:
top_item_ids = item_ids[:, ::-1], top_scores = float32 of the same; it answers an empty session
with an error response (as the real ensemble does) and RAISES on item id 666 (a model bug).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

MODEL_PY = textwrap.dedent('''
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                ids = pb_utils.get_input_tensor_by_name(request, "item_ids").as_numpy()
                if (ids == 666).any():
                    raise RuntimeError("model bug on item 666")
                if ids.size == 0:
                    # An error response, not an exception: the server stays healthy.
                    responses.append(pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError("empty session: no item ids")))
                    continue
                top = np.ascontiguousarray(ids[:, ::-1])
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("top_item_ids", top),
                    pb_utils.Tensor("top_scores", top.astype(np.float32)),
                ]))
            return responses
''')

CONFIG = textwrap.dedent('''
    name: "{name}"
    backend: "python"
    max_batch_size: 8
    input [ {{ name: "item_ids", data_type: TYPE_INT64, dims: [ -1 ] }} ]
    output [
      {{ name: "top_item_ids", data_type: TYPE_INT64, dims: [ -1 ] }},
      {{ name: "top_scores", data_type: TYPE_FP32, dims: [ -1 ] }}
    ]
    instance_group [ {{ count: 1, kind: KIND_CPU }} ]
    dynamic_batching {{ }}
''')


def write_repo(root: Path, name: str = "seqrec") -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (root / name / "1" / "model.py").write_text(MODEL_PY)
    return root
