"""`seqrec export`: write (a new version of) a Triton model repository for a trained model.

<repo>/seqrec              ensemble: raw item ids -> top-k original ids + scores, and per row
                           an error message ("" = answered; see ROW_ERRORS)
<repo>/seqrec_preprocess   python backend, numpy only: the saved workflow compiled to a lookup
                           (lookup.py + arrays.py + item_lookup.npz beside model.py; the workflow is kept too)
<repo>/seqrec_model        python backend: top-k from scorer.pt2, the torch.export program of
                           the one scorer (training/scoring.py), checked against the eager scorer
                           on real histories; torch alone runs it; ids mapped back. With
                           compile_scorer also scorer_compiled.pt2 (AOTInductor), served instead
Both python models carry runtime.py (numpy: parsing, row errors, batching, answers) and the
tensor contract (client/contract.py), from which every config.pbtxt is rendered (contract.py).
A model trained with side features adds one optional ensemble input per raw side column,
compiled from the workflow into side_lookup.npz (side_export.py / side_lookup.py).
All three batch (max_batch_size > 0, dynamic batching, ragged sessions). Exporting into an
existing repository writes version N+1 of each model; the version policy serves the newest.
A scorer that cannot be exported fails the export, unless `allow_fallback` is set: the model
step then imports `seqrec.training` (installed where tritonserver runs: the venv here, the
Dockerfile's image on GPU), and its config says so (parameters scorer / scorer_fallback_reason).
"""
from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.preprocessing.staging import staging_dir
from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.features import list_column
from seqrec.training.scoring import Scorer

from seqrec.client.contract import (ENSEMBLE, ENSEMBLE_INPUTS, ENSEMBLE_OUTPUTS,
                                    FINGERPRINT_FILE, MODEL, MODEL_OUTPUTS, PREPROCESS,
                                    ROW_ERRORS, STEP_TENSORS)

from . import contract
from .lookup import ItemLookup
from .publish import publish_export, versions  # noqa: F401 (versions: part of this module's API)
from .scorer import COMPILED_FILE, SCORER_FILE, export_scorer
from .side_export import build_side_lookup, side_tensors



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
    # When the scorer cannot be exported as a program: fail (False), or serve the eager scorer
    # from the installed training code (True; reported by `seqrec export` and in the config).
    allow_fallback: bool = False
    # Also compile the program with AOTInductor (needs a C++ compiler here, minutes on 2 cores;
    # CPU instances only): the served step then runs C++ kernels instead of Python per operator.
    compile_scorer: bool = False


class ScorerFallbackWarning(RuntimeWarning):
    """The model step will run the eager scorer from the installed seqrec.training."""


# Files copied beside the templates: the numpy runtime and what it imports.
RUNTIME_FILES = (("model_repository", "runtime.py"), ("model_repository", "lookup.py"),
                 ("model_repository", "side_lookup.py"), ("client", "contract.py"),
                 ("preprocessing", "arrays.py"),  # the lookups import arrays
                 ("model_repository", "safe_program.py"),  # scorer.pt2 read without pickles
                 ("preprocessing", "token_pack.py"))  # a text model's history packing


def _copy_runtime(folder: Path) -> None:
    package = {"model_repository": "seqrec.model_repository", "client": "seqrec.client",
               "preprocessing": "seqrec.preprocessing"}
    for where, name in RUNTIME_FILES:
        (folder / name).write_text(resources.files(package[where]).joinpath(name).read_text())


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


def _sequence_files(data_dir: Path) -> list[Path]:
    """The data's validation sequences: a leave-last-out or predefined split's `valid.parquet`,
    or every window's `<window>/valid.parquet` of a time-window split; test, then train, where
    there is no validation split at all."""
    for split in ("valid", "test", "train"):
        files = [f for f in [data_dir / f"{split}.parquet", *sorted(data_dir.glob(f"*/{split}.parquet"))]
                 if f.is_file()]
        if files:
            return files
    return []


def _check_histories(data_dir: Path, side=None, n: int = 256):
    """Real encoded histories (validation rows of >= 2 items without their target) to check the
    scorer on, with their side features (those of the history, not the target's) for such a
    model. Any split layout the ETL writes has them."""
    columns = [ITEM_LIST, *(list_column(c) for c in ([] if side is None else side.columns))]
    files = _sequence_files(data_dir)
    if not files:
        raise FileNotFoundError(f"{data_dir}: no sequence files (<split>.parquet or "
                                "<window>/<split>.parquet): run `seqrec preprocess` first")
    parts, found = [], 0
    for path in files:
        frame = pd.read_parquet(path, columns=columns)
        frame = frame[frame[ITEM_LIST].map(len).to_numpy() >= 2][: n - found]
        parts.append(frame)
        found += len(frame)
        if found >= n:
            break
    frame = pd.concat(parts, ignore_index=True)  # too few: export_scorer says so
    histories = [np.asarray(r[:-1], dtype=np.int64) for r in frame[ITEM_LIST]]
    features = {c: [np.asarray(r[:-1]) for r in frame[list_column(c)]]
                for c in ([] if side is None else side.columns)}
    return histories, features


def export_fingerprint(lookup: ItemLookup, side, vocabulary: np.ndarray, checkpoint: Path,
                       extra=()) -> str:
    """16 hex digits naming what the two members of an export must agree on: the lookup (and
    side lookup), the model step's vocabulary, the model's files and `extra` (objects with a
    digest(h) method, or arrays: a text model's item tokens, its item matrix). Written into both
    members' version folders; the model step refuses step tensors carrying another one."""
    h = hashlib.sha256()
    lookup.digest(h)
    for part in (side, *extra):
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif part is not None:
            part.digest(h)
    h.update(np.ascontiguousarray(vocabulary, dtype=np.int64).tobytes())
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(checkpoint)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


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
    if cfg.compile_scorer and cfg.gpu:
        raise ValueError("compile_scorer builds the scorer for this CPU; it cannot serve KIND_GPU "
                         "instances (export with gpu: false, or without compile_scorer)")
    if cfg.max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {cfg.max_batch_size}")
    lookup = ItemLookup.from_vocabulary(vocabulary, workflow_max_len(workflow))
    side = None if model.cfg.side is None else build_side_lookup(workflow, model.cfg.side)
    side_raw, side_between = side_tensors(side)
    raw_in, step = ENSEMBLE_INPUTS + side_raw, STEP_TENSORS + side_between
    final = Path(cfg.repository)
    with staging_dir(final) as staging:  # beside the repository: never loaded from there
        pre = staging / PREPROCESS
        pre.mkdir()
        (pre / "model.py").write_text(_template("preprocess_model.py"))
        _copy_runtime(pre)
        lookup.save(pre)
        if side is not None:
            side.save(pre)
        shutil.copytree(data_dir / "workflow", pre / "workflow")  # the source of the lookup

        rec = staging / MODEL
        rec.mkdir()
        (rec / "model.py").write_text(_template("recommender_model.py"))
        _copy_runtime(rec)
        # trainer_state.pt holds the optimizer state: only training needs it
        skip = shutil.ignore_patterns("*.tmp", "trainer_state.pt")
        shutil.copytree(model_dir, rec / "checkpoint", ignore=skip)
        np.save(rec / "item_vocabulary.npy", vocabulary)
        histories, features = _check_histories(data_dir, model.cfg.side)
        why_not = export_scorer(model, histories, rec, cfg.exclude_seen, features=features,
                                compile=cfg.compile_scorer)
        params = {"top_k": str(cfg.top_k), "exclude_seen": str(cfg.exclude_seen).lower(),
                  "torch_threads": str(cfg.torch_threads),
                  # the scorer's widest window: the step runs min(this, batch width)
                  "window": str(Scorer(model).keep),
                  "scorer": COMPILED_FILE if cfg.compile_scorer else SCORER_FILE}
        if why_not:
            if not cfg.allow_fallback:
                raise ValueError(
                    f"cannot export the scorer of {model_dir} as a program: {why_not}. Set "
                    "export.allow_fallback: true to serve it through the installed seqrec.training "
                    "instead")
            params.update(scorer="fallback", scorer_fallback_reason=why_not)
            warnings.warn(f"{MODEL} will run the eager scorer from the installed "
                          f"seqrec.training: {why_not}", ScorerFallbackWarning, stacklevel=2)
        (staging / ENSEMBLE).mkdir()
        write_fingerprint(staging, export_fingerprint(lookup, side, vocabulary, rec / "checkpoint"))
        publish_export(final, staging, member_configs(cfg, raw_in, step, params),
                       members=(PREPROCESS, MODEL), ensemble=ENSEMBLE)
    return final


def write_fingerprint(staging: Path, fingerprint: str) -> None:
    """Into both members' version folders (a file: one config serves older versions too)."""
    for member in (PREPROCESS, MODEL):
        (staging / member / FINGERPRINT_FILE).write_text(fingerprint + "\n")


def member_configs(cfg: ExportConfig, raw_in, step, params: dict[str, str]) -> dict[str, str]:
    """config.pbtxt of the lookup step, the model step and the ensemble, from the contract."""
    kind = "KIND_GPU" if cfg.gpu else "KIND_CPU"
    common = dict(max_batch_size=cfg.max_batch_size, queue_delay_us=cfg.max_queue_delay_us)
    return {
        PREPROCESS: contract.python_model(PREPROCESS, raw_in, step + (ROW_ERRORS,), kind="KIND_CPU",
                                          count=1, parameters={}, all_optional=True, **common),
        MODEL: contract.python_model(MODEL, step, MODEL_OUTPUTS, kind=kind, count=cfg.instances,
                                     parameters=params, **common),
        ENSEMBLE: contract.ensemble(ENSEMBLE, raw_in, ENSEMBLE_OUTPUTS,
                                    [(PREPROCESS, raw_in, step + (ROW_ERRORS,)),
                                     (MODEL, step, MODEL_OUTPUTS)],
                                    max_batch_size=cfg.max_batch_size),
    }


def scorer_fallback(repository: str | Path) -> str | None:
    """Why the served model step runs the eager scorer (None: it runs scorer.pt2)."""
    params = contract.read_config(Path(repository) / MODEL / "config.pbtxt").parameters
    if params["scorer"].string_value != "fallback":
        return None
    return params["scorer_fallback_reason"].string_value
