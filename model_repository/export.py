"""`seqrec export`: write a Triton model repository for a trained model.

<repo>/seqrec              ensemble: raw item ids -> top-k original ids + scores
<repo>/seqrec_preprocess   python backend: the saved NVTabular workflow applied to the request
<repo>/seqrec_model        python backend: recommend() on the checkpoint, ids mapped back
Each model has config.pbtxt and a numbered version folder; the python models import `seqrec`,
which must be installed where tritonserver runs (the venv here, the Dockerfile's image on GPU).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint

ENSEMBLE, PREPROCESS, MODEL = "seqrec", "seqrec_preprocess", "seqrec_model"


@dataclass
class ExportConfig:
    data_dir: str = "artifacts/ml-100k/data"
    model_dir: str = "artifacts/ml-100k/model"
    repository: str = "artifacts/ml-100k/model_repository"
    top_k: int = 10
    exclude_seen: bool = False
    gpu: bool = False  # KIND_GPU instance groups, for NVIDIA's containers


def _tensor(name: str, dtype: str) -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ -1 ] }}'


def _io(section: str, tensors: list[tuple[str, str]]) -> str:
    return f"{section} [\n" + ",\n".join(_tensor(n, d) for n, d in tensors) + "\n]\n"


RAW_IN = [("item_ids", "TYPE_INT64")]
ENCODED = [("encoded_items", "TYPE_INT64")]
TOP_OUT = [("top_item_ids", "TYPE_INT64"), ("top_scores", "TYPE_FP32")]


def _python_config(name: str, inputs, outputs, kind: str, params: dict[str, str]) -> str:
    text = f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
    text += _io("input", inputs) + _io("output", outputs)
    text += f"instance_group [ {{ count: 1 kind: {kind} }} ]\n"
    for key, value in params.items():
        text += f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    return text


def _ensemble_config() -> str:
    def step(model, inputs, outputs):
        maps = "".join(f'      input_map {{ key: "{n}" value: "{n}" }}\n' for n, _ in inputs)
        maps += "".join(f'      output_map {{ key: "{n}" value: "{n}" }}\n' for n, _ in outputs)
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

    steps = ",\n".join([step(PREPROCESS, RAW_IN, ENCODED), step(MODEL, ENCODED, TOP_OUT)])
    return (
        f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        + _io("input", RAW_IN)
        + _io("output", TOP_OUT)
        + f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}\n"
    )


def _template(name: str) -> str:
    return resources.files("seqrec.model_repository").joinpath("templates", name).read_text()


def export_repository(cfg: ExportConfig) -> Path:
    """Write the repository; it appears at cfg.repository only once complete."""
    data_dir, model_dir = Path(cfg.data_dir), Path(cfg.model_dir)
    workflow = load_workflow(data_dir / "workflow")  # fail early on a bad workflow ...
    model = load_checkpoint(model_dir)  # ... or checkpoint
    vocabulary = item_vocabulary(workflow)
    if len(vocabulary) != model.cfg.num_items:
        raise ValueError(
            f"workflow in {data_dir} has {len(vocabulary)} ids but the model in {model_dir} was "
            f"trained on {model.cfg.num_items}: they do not belong together"
        )
    if not 1 <= cfg.top_k <= int((vocabulary >= 0).sum()):
        raise ValueError(f"top_k must be between 1 and the number of items, got {cfg.top_k}")
    kind = "KIND_GPU" if cfg.gpu else "KIND_CPU"
    final = Path(cfg.repository)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        pre = staging / PREPROCESS
        (pre / "1").mkdir(parents=True)
        (pre / "config.pbtxt").write_text(_python_config(PREPROCESS, RAW_IN, ENCODED, "KIND_CPU", {}))
        (pre / "1" / "model.py").write_text(_template("preprocess_model.py"))
        shutil.copytree(data_dir / "workflow", pre / "1" / "workflow")

        rec = staging / MODEL
        (rec / "1").mkdir(parents=True)
        params = {"top_k": str(cfg.top_k), "exclude_seen": str(cfg.exclude_seen).lower()}
        (rec / "config.pbtxt").write_text(_python_config(MODEL, ENCODED, TOP_OUT, kind, params))
        (rec / "1" / "model.py").write_text(_template("recommender_model.py"))
        shutil.copytree(model_dir, rec / "1" / "checkpoint", ignore=shutil.ignore_patterns("*.tmp"))
        np.save(rec / "1" / "item_vocabulary.npy", vocabulary)

        ens = staging / ENSEMBLE
        (ens / "1").mkdir(parents=True)
        (ens / "config.pbtxt").write_text(_ensemble_config())
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
