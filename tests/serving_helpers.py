"""Helpers shared by the serving tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint


def offline_view(data_dir: str | Path, model_dir: str | Path) -> dict:
    """What offline evaluation sees: the workflow, the vocabulary, the model, and real test
    histories as a user would send them (original ids, target held out)."""
    workflow = load_workflow(Path(data_dir) / "workflow")
    vocab = item_vocabulary(workflow)
    rows = pd.read_parquet(Path(data_dir) / "test.parquet")[ITEM_LIST]
    return dict(workflow=workflow, vocab=vocab, model=load_checkpoint(model_dir),
                raw=[vocab[r[:-1]] for r in rows])
