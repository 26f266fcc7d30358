"""ETL entry point: raw interactions -> fitted workflow + train/valid/test sequence parquet."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .datasets import read_movielens_100k
from .ops import LENGTH_COLUMN
from .readers import read_interactions as read_raw
from .readers import reader_config
from .splits import leave_last_out
from .workflow import ITEM_LIST, as_dataset, build_workflow, item_vocabulary, transform_frame

WORKFLOW_DIR = "workflow"
SPLITS = ("train", "valid", "test")


@dataclass
class ETLConfig:
    output_dir: str = "artifacts/ml-100k/data"
    dataset: str = "movielens-100k"
    max_len: int = 200  # longest stored sequence (history + target); older items are cut
    min_len: int = 3
    # a raw file read by seqrec.preprocessing.readers (ReaderConfig fields: format, path, columns,
    # options); when set it replaces `dataset`
    source: dict | None = None


@dataclass
class ETLResult:
    output_dir: str
    rows_in: int
    sequences: dict[str, int] = field(default_factory=dict)
    num_items: int = 0
    seconds: float = 0.0
    dropped_short_sequences: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / max(self.seconds, 1e-9)


def read_interactions(config: ETLConfig) -> pd.DataFrame:
    if config.source is not None:
        source = reader_config(config.source)
        frame = read_raw(source)
        # the workflow groups by user_id: a session key takes that name (side columns are unused)
        return frame[[source.key, "item_id", "timestamp"]].rename(columns={source.key: "user_id"})
    if config.dataset == "movielens-100k":
        return read_movielens_100k()
    raise ValueError(f"unknown dataset {config.dataset!r}; available: ['movielens-100k']")


def run_etl(config: ETLConfig, interactions: pd.DataFrame | None = None) -> ETLResult:
    """Fit the workflow, write the splits; the output folder appears only when complete."""
    started = time.perf_counter()
    frame = read_interactions(config) if interactions is None else interactions
    final = Path(config.output_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        workflow = build_workflow(staging / "categories", max_len=config.max_len)
        workflow.fit(as_dataset(frame))
        grouped = transform_frame(workflow, frame)
        splits = leave_last_out(grouped, min_len=config.min_len)
        for name, table in splits.items():
            pq.write_table(table, staging / f"{name}.parquet")
        workflow.save(str(staging / WORKFLOW_DIR))
        shutil.rmtree(staging / "categories")  # the saved workflow carries its own copy
        result = ETLResult(
            output_dir=str(final),
            rows_in=len(frame),
            sequences={n: t.num_rows for n, t in splits.items()},
            num_items=int((item_vocabulary(workflow) >= 0).sum()),
            dropped_short_sequences=int((grouped[LENGTH_COLUMN] < max(config.min_len, 3)).sum()),
        )
        result.seconds = time.perf_counter() - started
        (staging / "etl_summary.json").write_text(
            json.dumps({"config": asdict(config), **asdict(result)}, indent=2)
        )
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def read_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `seqrec preprocess` first")
    return pd.read_parquet(path, columns=[ITEM_LIST, LENGTH_COLUMN])
