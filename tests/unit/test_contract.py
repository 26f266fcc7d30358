"""The served tensor contract, declared once in seqrec.client.contract: the config.pbtxt files
are rendered from it and the docs table is generated from it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from seqrec.client import contract as C
from seqrec.model_repository import contract

ROOT = Path(__file__).resolve().parents[2]


def test_docs_table_equals_the_contract():
    text = (ROOT / "docs" / "serving.md").read_text()
    assert contract.docs_table(text) == C.markdown_table(), (
        "docs/serving.md is stale: run python -m seqrec.model_repository.contract docs/serving.md")


def test_rendered_config_round_trips_through_model_config():
    text = contract.python_model("m", C.STEP_TENSORS + C.side_step_tensors(2, 0), C.MODEL_OUTPUTS,
                                 max_batch_size=8, kind="KIND_CPU", count=2, queue_delay_us=100,
                                 parameters={"top_k": "10"})
    config = contract.mc.ModelConfig()
    contract.text_format.Parse(text, config)
    assert [i.name for i in config.input] == [t.name for t in C.STEP_TENSORS] + ["side_categorical"]
    assert config.input[-1].dims == [-1, 2] and config.input[0].allow_ragged_batch
    assert config.output[1].data_type == contract.mc.TYPE_FP32
    assert config.parameters["top_k"].string_value == "10"
    assert config.instance_group[0].count == 2
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    ens = contract.ensemble("e", C.ENSEMBLE_INPUTS, C.ENSEMBLE_OUTPUTS,
                            [("a", C.ENSEMBLE_INPUTS, C.STEP_TENSORS)], max_batch_size=8)
    parsed = contract.text_format.Parse(ens, contract.mc.ModelConfig())
    assert all(i.optional for i in parsed.input)  # see contract._inputs for why
    assert parsed.output[2].data_type == contract.mc.TYPE_STRING  # BYTES on the wire
    assert dict(parsed.ensemble_scheduling.step[0].output_map) == {t.name: t.name for t in C.STEP_TENSORS}


def test_contract_and_runtime_copies_need_only_numpy(tmp_path):
    """What `seqrec export` copies beside the templates imports numpy and the stdlib only."""
    from seqrec.model_repository.export import _copy_runtime

    _copy_runtime(tmp_path)
    code = """
import sys
class Block:
    def find_spec(self, name, *a):
        if name.split('.')[0] in ('seqrec', 'torch', 'nvtabular', 'merlin', 'pandas', 'tritonclient'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import runtime, contract
print(runtime.C.ITEM_IDS.name)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "item_ids"
