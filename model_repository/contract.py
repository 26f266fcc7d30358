"""config.pbtxt of the three served models, rendered from the one tensor contract
(seqrec.client.contract) through Triton's own ModelConfig protobuf, and the docs table.

    python -m seqrec.model_repository.contract docs/serving.md   # rewrite the docs table
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from seqrec.client.contract import Tensor, markdown_table

TABLE_BEGIN, TABLE_END = "<!-- tensor-table:begin -->", "<!-- tensor-table:end -->"


def data_type(dtype: str) -> int:
    """Wire type (INT64, FP32, BOOL, BYTES) -> ModelConfig's enum (BYTES is TYPE_STRING there)."""
    return mc.DataType.Value("TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}")


def _inputs(config, tensors: Iterable[Tensor], all_optional: bool, ragged: bool) -> None:
    for t in tensors:
        inp = config.input.add(name=t.name, data_type=data_type(t.dtype), dims=list(t.dims))
        # Every ensemble input is optional in the config on purpose: Triton's ensemble does not
        # check WHICH inputs came, so a request with only optional ones would stall ("unexpected
        # deadlock"); the preprocessing step answers a missing required input itself, by name.
        inp.optional = all_optional or not t.required
        if ragged and t.dims[0] == -1:
            inp.allow_ragged_batch = True  # sessions of different lengths share a batch


def _outputs(config, tensors: Iterable[Tensor]) -> None:
    for t in tensors:
        config.output.add(name=t.name, data_type=data_type(t.dtype), dims=list(t.dims))


def _common(config, max_batch_size: int) -> None:
    config.max_batch_size = max_batch_size
    # Serve the newest version only; a reload that fails keeps the one already loaded.
    config.version_policy.latest.num_versions = 1


def python_model(name: str, inputs, outputs, *, max_batch_size: int, kind: str, count: int,
                 queue_delay_us: int, parameters: dict[str, str], all_optional: bool = False) -> str:
    """A python-backend model with dynamic batching and ragged inputs."""
    config = mc.ModelConfig(name=name, backend="python")
    _common(config, max_batch_size)
    _inputs(config, inputs, all_optional, ragged=True)
    _outputs(config, outputs)
    config.instance_group.add(count=count, kind=mc.ModelInstanceGroup.Kind.Value(kind))
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def ensemble(name: str, inputs, outputs, steps, *, max_batch_size: int) -> str:
    """steps: (model name, input tensors, output tensors), each tensor mapped by its own name."""
    config = mc.ModelConfig(name=name, platform="ensemble")
    _common(config, max_batch_size)
    _inputs(config, inputs, all_optional=True, ragged=False)
    _outputs(config, outputs)
    for model, step_in, step_out in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for t in step_in:
            step.input_map[t.name] = t.name
        for t in step_out:
            step.output_map[t.name] = t.name
    return text_format.MessageToString(config)


def read_config(path: str | Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def _table_span(text: str) -> tuple[int, int]:
    try:
        start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
        return start, text.index(TABLE_END, start)
    except ValueError:
        raise ValueError(f"no {TABLE_BEGIN} ... {TABLE_END} section") from None


def docs_table(text: str) -> str:
    """The generated table between the markers of a docs page."""
    start, end = _table_span(text)
    return text[start:end].strip("\n") + "\n"


def write_docs_table(path: str | Path) -> None:
    path = Path(path)
    text = path.read_text()
    start, end = _table_span(text)
    path.write_text(text[:start] + "\n" + markdown_table() + text[end:])


if __name__ == "__main__":
    write_docs_table(sys.argv[1] if len(sys.argv) > 1 else "docs/serving.md")
