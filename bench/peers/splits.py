"""The shared splits of the side-by-side benchmark, written by seqrec's ETL once and read by every
library's runner (protocol.load_splits): the train / valid / test sequences of one dataset in one
encoded id space.

- ml-100k: MovieLens-100k leave-last-out with whole histories (each model keeps its own window);
- t4r: the grouped session sample of the transformers4rec 23.12.0 sdist, session split (the
  latest 10% / 10% sessions valid / test).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import protocol  # noqa: E402
from bench_data import ml100k_data, t4r_data  # noqa: E402

WINDOWS = {"ml-100k": 50, "t4r": 20}  # the history items every model reads
# the ETL's max_len is the model's window; it stores up to etl.history_cap (1000) items, more
# than any MovieLens-100k user has (737 ratings), so the splits hold whole histories
BUILDERS = {"ml-100k": lambda: ml100k_data(max_len=WINDOWS["ml-100k"]), "t4r": t4r_data}


def build(name: str, out: Path) -> Path:
    """splits.npz of dataset `name` under `out`; the seqrec data folder it came from beside it."""
    from seqrec.preprocessing.arrays import FIRST_ITEM_ID, ITEM_LIST
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.data import read_columns

    data_dir = Path(BUILDERS[name]())
    workflow_dir = data_dir / "workflow"
    rows = {}
    for split in ("train", "valid", "test"):
        column = read_columns(data_dir / f"{split}.parquet", [ITEM_LIST])[ITEM_LIST]
        rows[split] = protocol.Rows(column.values.astype(np.int64), column.offsets.astype(np.int64))
    num_items = len(item_vocabulary(load_workflow(workflow_dir)))
    path = out / f"{name}.npz"
    out.mkdir(parents=True, exist_ok=True)
    protocol.save_splits(path, protocol.Splits(**rows, num_items=num_items, first_item=FIRST_ITEM_ID, name=name))
    (out / f"{name}.data_dir").write_text(str(data_dir))
    return path
