"""Triton python-backend model: raw sessions (original item ids) -> encoded ids for the model step.
Glue only: model/runtime.py (copied beside this file with lookup.py, side_lookup.py, token_pack.py
and the tensor contract) parses, checks, encodes (a text model: packs the history's item tokens)
and names bad rows; output types come from model_config.
A malformed request is answered INVALID_ARGUMENT, a fault INTERNAL; a bad row inside a good
request gets its message in `row_errors` and is skipped by the model step.
"""
import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contract import FINGERPRINT_FILE, fingerprint_value  # noqa: E402  (the copies beside this file)
from runtime import RequestError, load_preprocessor  # noqa: E402


def _error(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).resolve().parent
        config = json.loads(args["model_config"])
        fingerprint = fingerprint_value((here / FINGERPRINT_FILE).read_text().strip())
        self.runtime = load_preprocessor(here, fingerprint)  # an ID or a text model's
        self.dtypes = {o["name"]: pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, o["name"])["data_type"])
            for o in config["output"]}

    def execute(self, requests):
        parsed, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            def get(name, request=request):
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                return None if tensor is None else tensor.as_numpy()
            try:
                parsed.append((i, self.runtime.parse(get)))
            except RequestError as err:
                responses[i] = _error(str(err), pb_utils.TritonError.INVALID_ARG)
        try:
            outputs = self.runtime.run([p for _, p in parsed]) if parsed else []
        except Exception as err:  # noqa: BLE001 - a fault: every request of the batch learns why
            message = f"preprocessing failed: {type(err).__name__}: {err}"
            return [r or _error(message, pb_utils.TritonError.INTERNAL) for r in responses]
        for (i, _), out in zip(parsed, outputs):
            responses[i] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, value.astype(self.dtypes[name], copy=False))
                for name, value in out.items()])
        return responses
