"""ETL entry point: raw interactions -> fitted workflow + train/valid/test sequence parquet."""
from __future__ import annotations

import json
from contextlib import closing
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tqdm.auto import tqdm

from .datasets import read_movielens_100k
from .interactions import validate_interactions
from .ops import LENGTH_COLUMN
from .readers import read_interactions as read_raw
from .readers import ReaderConfig, reader_config
from .staging import staged_directory
from .splits import leave_last_out, time_window_splits
from .workflow import (
    ITEM_COL,
    ITEM_LIST,
    TIME_COL,
    build_workflow,
    fit_workflow,
    item_vocabulary,
    transform_frame,
)

WORKFLOW_DIR = "workflow"
SPLITS = ("train", "valid", "test")


@dataclass
class ETLConfig:
    output_dir: str = "artifacts/ml-100k/data"
    dataset: str = "movielens-100k"
    max_len: int = 200  # longest stored sequence (history + target); older items are cut
    min_len: int = 3  # shorter sequences are dropped (leave-last-out needs 3, sessions 2)
    # user_id: one sequence per user; session_id: one per session. Default: the source's key
    # (a reader's layout fixes it), else user_id.
    key: str | None = None
    # a raw file read by seqrec.preprocessing.readers (format, path, columns, options); when set
    # it replaces `dataset` (a mapping is read as a ReaderConfig)
    source: ReaderConfig | None = None
    split: Literal["leave-last-out", "time-window"] = "leave-last-out"
    window_seconds: int = 86400  # time-window split: one folder per day by default
    valid_fraction: float = 0.1  # time-window split: share of each window's latest sessions
    test_fraction: float = 0.1
    remove_repeats: bool = False  # drop an interaction repeating the previous item
    max_session_len: int | None = None  # drop longer sessions (bots) before truncation
    freq_threshold: int = 0  # rarer items map to the OOV id
    categorical: list[str] = field(default_factory=list)  # side columns, as lists per sequence
    continuous: list[str] = field(default_factory=list)
    log_continuous: list[str] = field(default_factory=list)  # log then normalise (e.g. price)
    time_features: bool = False  # hour/weekday sin-cos, day index, seconds since previous
    item_age: bool = False  # seconds since the item's first interaction

    def __post_init__(self):
        if self.split not in ("leave-last-out", "time-window"):
            raise ValueError(f"split {self.split!r}: choose 'leave-last-out' or 'time-window'")
        if self.source is not None:
            self.source = reader_config(self.source)
        source_key = self.source.key if self.source is not None else None
        if self.key is None:
            self.key = source_key or "user_id"
        elif source_key is not None and self.key != source_key:
            raise ValueError(f"key {self.key!r} does not match the {self.source.format} "
                             f"source, whose sequences are keyed by {source_key!r}")


@dataclass
class ETLResult:
    output_dir: str
    rows_in: int
    sequences: dict[str, int] = field(default_factory=dict)
    windows: list[str] = field(default_factory=list)
    num_items: int = 0
    seconds: float = 0.0
    dropped_sequences: int = 0  # shorter than min_len or longer than max_session_len
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    sequences_in: int = 0  # distinct keys after grouping, before the length filters

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / max(self.seconds, 1e-9)


def read_interactions(config: ETLConfig) -> pd.DataFrame:
    if config.source is not None:
        return read_raw(config.source)  # key, item_id, timestamp + side columns
    if config.dataset == "movielens-100k":
        return read_movielens_100k()
    raise ValueError(f"unknown dataset {config.dataset!r}; available: ['movielens-100k']")


def run_etl(
    config: ETLConfig, interactions: pd.DataFrame | None = None, progress: bool = True
) -> ETLResult:
    """Fit the workflow, write the splits; the output folder appears only when complete."""
    started = time.perf_counter()
    stages = tqdm(total=3, desc="preprocess", unit="stage", disable=not progress)
    stages.set_postfix_str("read")
    frame = read_interactions(config) if interactions is None else interactions
    frame = validate_interactions(
        frame, source=config.source.path if config.source else f"{config.dataset} input", columns=(config.key, ITEM_COL, TIME_COL)
    )
    final = Path(config.output_dir)
    with staged_directory(final) as staging, closing(stages):
        workflow = build_workflow(
            staging / "categories",
            max_len=config.max_len,
            key=config.key,
            freq_threshold=config.freq_threshold,
            remove_repeats=config.remove_repeats,
            categorical=tuple(config.categorical),
            continuous=tuple(config.continuous + config.log_continuous),
            log_continuous=tuple(config.log_continuous),
            time_features=config.time_features,
            item_age=config.item_age,
        )
        stages.set_postfix_str("fit")
        fit_workflow(workflow, frame)
        stages.update()
        stages.set_postfix_str("transform")
        grouped = transform_frame(workflow, frame)
        stages.update()
        short = grouped[LENGTH_COLUMN] < config.min_len
        long = np.zeros(len(grouped), dtype=bool)
        if config.max_session_len is not None:  # raw interactions, before truncation
            long = _full_lengths(frame, grouped, config.key) > config.max_session_len
        reasons = {f"shorter than min_len={config.min_len}": int(short.sum()),
                   f"longer than max_session_len={config.max_session_len}": int((long & ~short).sum())}
        grouped = grouped[~(short | long)].reset_index(drop=True)
        stages.set_postfix_str("split + write")
        sequences, windows = _write_splits(grouped, config, staging)
        workflow.save(str(staging / WORKFLOW_DIR))
        stages.update()
        shutil.rmtree(staging / "categories")  # the saved workflow carries its own copy
        result = ETLResult(
            output_dir=str(final),
            rows_in=len(frame),
            sequences=sequences,
            windows=windows,
            num_items=int((item_vocabulary(workflow) >= 0).sum()),
            dropped_sequences=sum(reasons.values()),
            dropped_reasons=reasons,
            sequences_in=len(grouped) + sum(reasons.values()),
        )
        result.seconds = time.perf_counter() - started
        (staging / "etl_summary.json").write_text(
            json.dumps({"config": asdict(config), **asdict(result)}, indent=2)
        )
    return result


def _full_lengths(frame: pd.DataFrame, grouped: pd.DataFrame, key: str) -> np.ndarray:
    counts = frame[key].value_counts()
    return counts.reindex(grouped[key]).to_numpy()


def _write_splits(grouped: pd.DataFrame, config: ETLConfig, staging: Path):
    if config.split == "leave-last-out":
        splits = leave_last_out(grouped, min_len=config.min_len)
        for name, table in splits.items():
            pq.write_table(table, staging / f"{name}.parquet")
        return {n: t.num_rows for n, t in splits.items()}, []
    windows = time_window_splits(
        grouped, TIME_COL, config.window_seconds, config.valid_fraction, config.test_fraction
    )
    totals = dict.fromkeys(SPLITS, 0)
    for window, splits in windows.items():
        (staging / window).mkdir()
        for name, table in splits.items():
            pq.write_table(table, staging / window / f"{name}.parquet")
            totals[name] += table.num_rows
    return totals, list(windows)


def read_split(data_dir: str | Path, split: str, extra: list[str] | tuple = ()) -> pd.DataFrame:
    """Items and lengths of one split, plus the `extra` list columns (side features)."""
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `seqrec preprocess` first")
    return pd.read_parquet(path, columns=[ITEM_LIST, LENGTH_COLUMN, *extra])
