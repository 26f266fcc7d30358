"""The shared splits of the side-by-side benchmark, written by seqrec's ETL once and read by every
library's runner (protocol.load_splits): the train / valid / test sequences of one dataset in one
encoded id space.

- ml-100k: MovieLens-100k leave-last-out with whole histories (each model keeps its own window);
- t4r: the grouped session sample of the transformers4rec 23.12.0 sdist, session split (the
  latest 10% / 10% sessions valid / test);
- daily: a synthetic YOOCHOOSE-like log of 1.12M clicks over 7 days (bench_data.synthetic_clicks),
  one window per day (each day's latest 10% / 10% sessions are its valid / test), for the
  incremental protocol (protocol.Windows: train on day t, evaluate on day t+1).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import protocol  # noqa: E402
from bench_data import daily_data, ml100k_data, t4r_data  # noqa: E402

WINDOWS = {"ml-100k": 50, "t4r": 20, "daily": 20}  # the history items every model reads
# the ETL's max_len is the model's window; it stores up to etl.history_cap (1000) items, more
# than any MovieLens-100k user has (737 ratings), so the splits hold whole histories
BUILDERS = {"ml-100k": lambda: ml100k_data(max_len=WINDOWS["ml-100k"]), "t4r": t4r_data, "daily": daily_data}


def build(name: str, out: Path) -> Path:
    """splits.npz of dataset `name` under `out`; the seqrec data folder it came from beside it."""
    from seqrec.preprocessing.arrays import FIRST_ITEM_ID, ITEM_LIST
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.data import read_columns

    from seqrec.training.incremental import window_dirs

    def read(folder: Path) -> dict:
        columns = {s: read_columns(folder / f"{s}.parquet", [ITEM_LIST])[ITEM_LIST] for s in ("train", "valid", "test")}
        return {s: protocol.Rows(c.values.astype(np.int64), c.offsets.astype(np.int64)) for s, c in columns.items()}

    data_dir = Path(BUILDERS[name]())
    num_items = len(item_vocabulary(load_workflow(data_dir / "workflow")))
    path = out / f"{name}.npz"
    out.mkdir(parents=True, exist_ok=True)
    if (data_dir / "train.parquet").is_file():
        protocol.save_splits(path, protocol.Splits(**read(data_dir), num_items=num_items,
                                                   first_item=FIRST_ITEM_ID, name=name))
    else:  # one folder per day, in the order seqrec's incremental training reads them
        days = window_dirs(data_dir)
        protocol.save_windows(path, protocol.Windows([read(d) for d in days], [d.name for d in days],
                                                     num_items, FIRST_ITEM_ID, name))
    (out / f"{name}.data_dir").write_text(str(data_dir))
    return path
