"""`seqrec export` of a text model (a recipe with a `recformer` section), and `seqrec items add`.

The repository has the ID models' layout, tensor contract, request parsing, row errors,
fingerprint and atomic publishing (export.py, runtime.py, publish.py); what differs:

<repo>/seqrec_preprocess   the lookup (original -> encoded ids, the workflow's truncation), then
                           every row's history packed from the items' cached tokens
                           (item_tokens.npz, tokenised at export; token_pack.py: most recent
                           item first, the token and item budgets training uses)
<repo>/seqrec_model        checkpoint/ (the Recformer, its tokenizer, its attribute spec) and
                           item_matrix.npy: every item's text encoded alone by the item encoder,
                           at export; the step encodes the packed sequence and ranks by
                           cosine / temperature (training/recformer/serving.py, run from the
                           installed seqrec.training)

`add_items` encodes new items (their attributes, the item table's columns) with the exported
encoder, appends them to the lookup, the cached tokens and the item matrix, and publishes the
result as the next version: a server under explicit model control loads it with `seqrec model
load` (or `--url`), without a restart and without retraining.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.client.contract import (ENSEMBLE, ENSEMBLE_INPUTS, MODEL, PREPROCESS, STEP_TENSORS,
                                    TEXT_STEP_TENSORS)
from seqrec.errors import SeqrecError
from seqrec.preprocessing.arrays import ITEM_COL
from seqrec.preprocessing.item_text import TOKENIZER_FILE, item_texts, item_tokens, load_tokenizer
from seqrec.preprocessing.staging import staging_dir
from seqrec.preprocessing.token_pack import ItemTokens
from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

from . import contract
from .export import (ExportConfig, _copy_runtime, _template, export_fingerprint, member_configs,
                     workflow_max_len, write_fingerprint)
from .lookup import ItemLookup
from .publish import CONFIG, MANIFEST, publish_export, served_versions
from .runtime import TextPacking, save_packing

SCORER = "recformer"  # the model step's `scorer` parameter for a text model
ATTRIBUTES_FILE = "item_attributes.json"  # in checkpoint/: {key: item-table column}, budgets
VOCABULARY_FILE, MATRIX_FILE = "item_vocabulary.npy", "item_matrix.npy"
CHECKPOINT_FILES = ("recformer.json", "model.pt", TOKENIZER_FILE)


class ItemsFileError(SeqrecError, ValueError):
    """A new-items file that cannot be added (its path and the problem in the message)."""


def _fingerprint(lookup, vocabulary, checkpoint: Path, tokens: ItemTokens, matrix: np.ndarray) -> str:
    return export_fingerprint(lookup, None, vocabulary, checkpoint, extra=(tokens, matrix))


def _encoder(checkpoint: Path):
    from seqrec.training.recformer.model import load_recformer

    return load_recformer(checkpoint, dropout=0.0).eval()


def _encode(model, tokens: ItemTokens, items: np.ndarray | None, batch_size: int) -> np.ndarray:
    from seqrec.training.recformer.train import encode_items

    return encode_items(model, tokens, batch_size, items=items).cpu().numpy().astype(np.float32)


def export_text_repository(cfg: ExportConfig, rcfg) -> Path:
    """Write version N+1 of the three models for the Recformer run in rcfg.output_dir (data:
    rcfg.data_dir); the item matrix is encoded now, by the model being exported."""
    data_dir, model_dir = Path(rcfg.data_dir), Path(rcfg.output_dir)
    workflow = load_workflow(data_dir / "workflow")
    vocabulary = item_vocabulary(workflow)
    for name in (*CHECKPOINT_FILES, "item_tokens.npz"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} not found: train the Recformer first "
                                    "(`seqrec train` with a recformer section)")
    tokens = ItemTokens.load(model_dir)
    if tokens.num_items != len(vocabulary):
        raise ValueError(f"the item tokens in {model_dir} cover {tokens.num_items} ids but the workflow "
                         f"in {data_dir} has {len(vocabulary)}: they do not belong together")
    if not 1 <= cfg.top_k <= int((vocabulary >= 0).sum()):
        raise ValueError(f"top_k must be between 1 and the number of items, got {cfg.top_k}")
    if cfg.max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {cfg.max_batch_size}")
    model = _encoder(model_dir)
    lookup = ItemLookup.from_vocabulary(vocabulary, workflow_max_len(workflow))
    raw_in, step = ENSEMBLE_INPUTS, STEP_TENSORS + TEXT_STEP_TENSORS
    final = Path(cfg.repository)
    with staging_dir(final) as staging:
        pre = staging / PREPROCESS
        pre.mkdir()
        (pre / "model.py").write_text(_template("preprocess_model.py"))
        _copy_runtime(pre)
        lookup.save(pre)
        tokens.save(pre)
        m = model.cfg
        save_packing(pre, TextPacking(m.max_tokens, m.max_items, m.attention_window))

        rec = staging / MODEL
        (rec / "checkpoint").mkdir(parents=True)
        (rec / "model.py").write_text(_template("recommender_model.py"))
        _copy_runtime(rec)
        for name in CHECKPOINT_FILES:
            shutil.copy2(model_dir / name, rec / "checkpoint" / name)
        (rec / "checkpoint" / ATTRIBUTES_FILE).write_text(json.dumps(
            {"attributes": rcfg.items.attributes, "budget": rcfg.items.budget}, indent=2))
        matrix = _encode(model, tokens, None, rcfg.encode_batch_size)
        np.save(rec / VOCABULARY_FILE, vocabulary)
        np.save(rec / MATRIX_FILE, matrix)
        (staging / ENSEMBLE).mkdir()
        write_fingerprint(staging, _fingerprint(lookup, vocabulary, rec / "checkpoint", tokens, matrix))
        params = {"top_k": str(cfg.top_k), "exclude_seen": str(cfg.exclude_seen).lower(),
                  "torch_threads": str(cfg.torch_threads), "window": "0", "scorer": SCORER}
        publish_export(final, staging, member_configs(cfg, raw_in, step, params),
                       members=(PREPROCESS, MODEL), ensemble=ENSEMBLE)
    return final


def text_model_versions(repository: Path) -> dict[str, Path]:
    """{member: version folder} of the text export the ensemble serves; a clear error otherwise."""
    served = served_versions(repository, ENSEMBLE, (PREPROCESS, MODEL))
    if set(served) != {PREPROCESS, MODEL}:
        raise SeqrecError(f"{repository}: no exported model repository (run `seqrec export` first)")
    params = contract.read_config(repository / MODEL / CONFIG).parameters
    if params["scorer"].string_value != SCORER:
        raise SeqrecError(f"{repository}: serves an ID-based model; `items add` needs a text model "
                          "(export a recipe with a recformer section)")
    return {m: repository / m / str(v) for m, v in served.items()}


def read_new_items(path: str | Path, attributes: dict[str, str], known: np.ndarray) -> pd.DataFrame:
    """The file's rows (item_id + every attribute's column), checked: the columns are there, the
    ids are integers, none repeats and none is in the catalogue (`known`: its original ids)."""
    path = Path(path)
    if not path.is_file():
        raise ItemsFileError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ItemsFileError(f"{path}: not a readable CSV file ({err})") from None
    needed = list(dict.fromkeys([ITEM_COL, *attributes.values()]))
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ItemsFileError(f"{path}: missing column(s) {missing}; the item table's columns are "
                             f"{needed} (it has {list(frame.columns)})")
    if frame.empty:
        raise ItemsFileError(f"{path}: no items")
    ids = pd.to_numeric(frame[ITEM_COL].str.strip(), errors="coerce")
    bad = np.flatnonzero(ids.isna().to_numpy() | (ids.to_numpy() % 1 != 0))
    if bad.size:
        raise ItemsFileError(f"{path}: {ITEM_COL} {frame[ITEM_COL].iloc[bad[0]]!r} (row {bad[0] + 1}) "
                             "is not an integer id")
    ids = ids.to_numpy().astype(np.int64)
    repeated = np.unique(ids[pd.Series(ids).duplicated().to_numpy()])
    if repeated.size:
        raise ItemsFileError(f"{path}: duplicate {ITEM_COL}(s) {repeated[:20].tolist()}")
    present = ids[np.isin(ids, known)]
    if present.size:
        raise ItemsFileError(f"{path}: {ITEM_COL}(s) {present[:20].tolist()} are already in the "
                             "catalogue (an item's text is fixed once exported)")
    out = frame[needed].copy()
    out[ITEM_COL] = ids
    return out


def add_items(repository: str | Path, path: str | Path, batch_size: int = 256) -> tuple[int, np.ndarray]:
    """Encode the file's items into the served export and publish it as the next version;
    returns (that version, the new original ids)."""
    repository = Path(repository)
    current = text_model_versions(repository)
    pre_v, rec_v = current[PREPROCESS], current[MODEL]
    checkpoint = rec_v / "checkpoint"
    spec = json.loads((checkpoint / ATTRIBUTES_FILE).read_text())
    vocabulary = np.load(rec_v / VOCABULARY_FILE)
    frame = read_new_items(path, spec["attributes"], vocabulary[vocabulary >= 0])
    start = len(vocabulary)
    grown = np.concatenate([vocabulary, frame[ITEM_COL].to_numpy(dtype=np.int64)])
    texts = item_texts(frame, spec["attributes"], grown)  # the training run's item-text workflow
    keys = list(spec["attributes"])
    added = item_tokens(texts, keys, spec["budget"], load_tokenizer(checkpoint / TOKENIZER_FILE), len(grown))
    tokens = ItemTokens.load(pre_v).extend(added)
    new = np.arange(start, len(grown))
    matrix = np.concatenate([np.load(rec_v / MATRIX_FILE),
                             _encode(_encoder(checkpoint), tokens, new, batch_size)])
    lookup = ItemLookup.from_vocabulary(grown, ItemLookup.load(pre_v).max_len)
    configs = {m: (repository / m / CONFIG).read_text() for m in (PREPROCESS, MODEL, ENSEMBLE)}
    skip = shutil.ignore_patterns(MANIFEST, "__pycache__")
    with staging_dir(repository) as staging:
        shutil.copytree(pre_v, staging / PREPROCESS, ignore=skip)
        shutil.copytree(rec_v, staging / MODEL, ignore=skip)
        lookup.save(staging / PREPROCESS)
        tokens.save(staging / PREPROCESS)
        np.save(staging / MODEL / VOCABULARY_FILE, grown)
        np.save(staging / MODEL / MATRIX_FILE, matrix)
        (staging / ENSEMBLE).mkdir()
        write_fingerprint(staging, _fingerprint(lookup, grown, staging / MODEL / "checkpoint", tokens, matrix))
        version = publish_export(repository, staging, configs, members=(PREPROCESS, MODEL), ensemble=ENSEMBLE)
    return version, grown[start:]
