"""`seqrec export`: write (a new version of) a Triton model repository for a trained model.

<repo>/seqrec              ensemble: raw item ids -> top-k original ids + scores, and per row
                           an error message ("" = answered; see ROW_ERRORS)
<repo>/seqrec_preprocess   python backend, numpy only: the saved workflow compiled to a lookup
                           (lookup.py + item_lookup.npz beside model.py; the workflow is kept too)
<repo>/seqrec_model        python backend: top-k from scorer.pt2 (torch.export of the model's
                           scoring, written only if it reproduces recommend() on real histories;
                           torch alone runs it), else recommend() on the checkpoint; ids mapped back
A model trained with side features adds one optional ensemble input per raw side column,
compiled from the workflow into side_lookup.npz (side_export.py / side_lookup.py).
All three batch (max_batch_size > 0, dynamic batching, ragged sessions). Exporting into an
existing repository writes version N+1 of each model; the version policy serves the newest.
Without scorer.pt2 the model step imports `seqrec.training`, which must then be installed where
tritonserver runs (the venv here, the Dockerfile's image on GPU).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import warnings

import numpy as np
import pandas as pd

from seqrec.preprocessing.staging import staging_dir
from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.features import list_column

from .lookup import ItemLookup
from .publish import publish_export, versions  # noqa: F401 (versions: part of this module's API)
from .scorer import export_scorer
from .side_export import build_side_lookup, side_tensors

ENSEMBLE, PREPROCESS, MODEL = "seqrec", "seqrec_preprocess", "seqrec_model"


@dataclass
class ExportConfig:
    data_dir: str = "artifacts/ml-100k/data"
    model_dir: str = "artifacts/ml-100k/model"
    repository: str = "artifacts/ml-100k/model_repository"
    top_k: int = 10  # default k; a request may ask for another with the optional input `k`
    exclude_seen: bool = False
    gpu: bool = False  # KIND_GPU instance groups, for NVIDIA's containers
    max_batch_size: int = 64  # rows per dynamic batch (one request may carry several)
    max_queue_delay_us: int = 0  # 0: batch only what queued while the model was busy
    instances: int = 1  # model instances (scale out within one server)
    torch_threads: int = 1  # per model instance; the server and the other stubs need cores too


# (name, data type, dims without the batch dimension, optional)
# item_ids is marked optional on purpose: Triton's ensemble does not check WHICH inputs came, so a
# request with only optional ones would stall ("unexpected deadlock"); the preprocessing model
# answers a missing item_ids itself, by name.
RAW_IN = [("item_ids", "TYPE_INT64", "-1", True), ("lengths", "TYPE_INT64", "1", True),
          ("k", "TYPE_INT64", "1", True), ("exclude_item_ids", "TYPE_INT64", "-1", True)]
# The preprocessing step takes all of them (k too: checked there, and it gives the step an
# input when item_ids is missing); side-feature models add their raw columns (side_export.py).
PRE_OUT = [("encoded_items", "TYPE_INT64", "-1", False),
           ("exclude_encoded", "TYPE_INT64", "-1", False), ("top_k", "TYPE_INT64", "1", False),
           ("row_ok", "TYPE_BOOL", "1", False)]  # false: a bad row, the model step skips it
TOP_OUT = [("top_item_ids", "TYPE_INT64", "-1", False), ("top_scores", "TYPE_FP32", "-1", False)]
# Per-row answers inside one request: "" for a good row, else the message naming its problem.
# Made by the preprocessing step and returned by the ensemble as it is.
ROW_ERRORS = [("row_errors", "TYPE_STRING", "1", False)]


def _io(section: str, tensors, ragged: bool = False) -> str:
    def one(name, dtype, dims, optional):
        extra = " optional: true" if optional else ""
        if ragged and dims.startswith("-1"):
            extra += " allow_ragged_batch: true"  # sessions of different lengths share a batch
        return f'  {{ name: "{name}" data_type: {dtype} dims: [ {dims} ]{extra} }}'

    return f"{section} [\n" + ",\n".join(one(*t) for t in tensors) + "\n]\n"


def _python_config(name: str, inputs, outputs, kind: str, cfg: ExportConfig,
                   params: dict[str, str], count: int = 1) -> str:
    text = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {cfg.max_batch_size}\n'
    text += _io("input", inputs, ragged=True) + _io("output", outputs)
    text += f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"
    text += f"dynamic_batching {{ max_queue_delay_microseconds: {cfg.max_queue_delay_us} }}\n"
    text += VERSION_POLICY
    for key, value in params.items():
        text += f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    return text


# Serve the newest version only; a reload that fails keeps the one already loaded.
VERSION_POLICY = "version_policy: { latest: { num_versions: 1 } }\n"


def _ensemble_config(cfg: ExportConfig, raw_in=RAW_IN, pre_out=PRE_OUT) -> str:
    def step(model, inputs, outputs):
        maps = "".join(f'      input_map {{ key: "{t[0]}" value: "{t[0]}" }}\n' for t in inputs)
        maps += "".join(f'      output_map {{ key: "{t[0]}" value: "{t[0]}" }}\n' for t in outputs)
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

    steps = ",\n".join([step(PREPROCESS, raw_in, pre_out + ROW_ERRORS),
                        step(MODEL, pre_out, TOP_OUT)])
    return (
        f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: {cfg.max_batch_size}\n'
        + _io("input", raw_in)
        + _io("output", TOP_OUT + ROW_ERRORS)
        + VERSION_POLICY
        + f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}\n"
    )


def _template(name: str) -> str:
    return resources.files("seqrec.model_repository").joinpath("templates", name).read_text()


def workflow_max_len(workflow) -> int | None:
    """The truncation length of the workflow's GroupSequences step (None: no truncation)."""
    from seqrec.preprocessing.ops import GroupSequences
    from seqrec.preprocessing.workflow import _nodes

    ops = [n.op for n in _nodes(workflow.output_node) if isinstance(n.op, GroupSequences)]
    if len(ops) != 1:
        raise ValueError(f"expected one GroupSequences step in the workflow, found {len(ops)}")
    return ops[0].max_len


def _check_histories(data_dir: Path, side=None, n: int = 256):
    """Real encoded histories (validation rows without their target) to check the scorer on,
    with their side features (those of the history, not the target's) for such a model."""
    columns = [] if side is None else side.columns
    frame = pd.read_parquet(data_dir / "valid.parquet",
                            columns=[ITEM_LIST, *(list_column(c) for c in columns)])[:n]
    histories = [np.asarray(r[:-1], dtype=np.int64) for r in frame[ITEM_LIST]]
    features = {c: [np.asarray(r[:-1]) for r in frame[list_column(c)]] for c in columns}
    return histories, features


def export_repository(cfg: ExportConfig) -> Path:
    """Write version N+1 of the three models (N = newest version already in cfg.repository, 0 for
    a new repository). Each version folder is written aside and renamed into place only when
    complete, so a server never sees a half-written version."""
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
    if cfg.max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {cfg.max_batch_size}")
    lookup = ItemLookup.from_vocabulary(vocabulary, workflow_max_len(workflow))
    side = None if model.cfg.side is None else build_side_lookup(workflow, model.cfg.side)
    side_raw, side_between = side_tensors(side)
    raw_in, pre_out = RAW_IN + side_raw, PRE_OUT + side_between
    kind = "KIND_GPU" if cfg.gpu else "KIND_CPU"
    final = Path(cfg.repository)
    with staging_dir(final) as staging:  # beside the repository: never loaded from there
        pre = staging / PREPROCESS
        pre.mkdir()
        (pre / "model.py").write_text(_template("preprocess_model.py"))
        for module in ("lookup.py", "side_lookup.py"):
            (pre / module).write_text(
                resources.files("seqrec.model_repository").joinpath(module).read_text())
        lookup.save(pre)
        if side is not None:
            side.save(pre)
        shutil.copytree(data_dir / "workflow", pre / "workflow")  # the source of the lookup

        rec = staging / MODEL
        rec.mkdir()
        (rec / "model.py").write_text(_template("recommender_model.py"))
        (rec / "safe_program.py").write_text(  # scorer.pt2 read without unpickling objects
            resources.files("seqrec.model_repository").joinpath("safe_program.py").read_text())
        # trainer_state.pt holds the optimizer state: only training needs it
        skip = shutil.ignore_patterns("*.tmp", "trainer_state.pt")
        shutil.copytree(model_dir, rec / "checkpoint", ignore=skip)
        np.save(rec / "item_vocabulary.npy", vocabulary)
        histories, features = _check_histories(data_dir, model.cfg.side)
        why_not = export_scorer(model, histories, rec, features=features)
        if why_not:
            warnings.warn(f"{MODEL} will call recommend() from the installed seqrec.training: "
                          f"{why_not}", stacklevel=2)
        (staging / ENSEMBLE).mkdir()

        configs = {
            PREPROCESS: _python_config(PREPROCESS, raw_in, pre_out + ROW_ERRORS, "KIND_CPU", cfg, {}),
            MODEL: _python_config(
                MODEL, pre_out, TOP_OUT, kind, cfg,
                {"top_k": str(cfg.top_k), "exclude_seen": str(cfg.exclude_seen).lower(),
                 "torch_threads": str(cfg.torch_threads)}, count=cfg.instances),
            ENSEMBLE: _ensemble_config(cfg, raw_in, pre_out),
        }
        publish_export(final, staging, configs, members=(PREPROCESS, MODEL), ensemble=ENSEMBLE)
    return final
