"""Helpers shared by the serving tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqrec.preprocessing.workflow import ITEM_LIST, encode_sessions, item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend


def offline_view(data_dir: str | Path, model_dir: str | Path) -> dict:
    """What offline evaluation sees: the workflow, the vocabulary, the model, and real test
    histories as a user would send them (original ids, target held out)."""
    workflow = load_workflow(Path(data_dir) / "workflow")
    vocab = item_vocabulary(workflow)
    rows = pd.read_parquet(Path(data_dir) / "test.parquet")[ITEM_LIST]
    return dict(workflow=workflow, vocab=vocab, model=load_checkpoint(model_dir),
                raw=[vocab[r[:-1]] for r in rows])


def offline_top(offline: dict, sessions, k: int = 10):
    """Offline top-k for raw sessions (original ids) through an offline_view: (ids, scores)."""
    encoded = encode_sessions(offline["workflow"], sessions)
    top, scores = recommend(offline["model"], encoded, k=k)
    return offline["vocab"][top], scores
