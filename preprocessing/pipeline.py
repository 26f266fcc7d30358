"""ETL entry point: raw interactions -> fitted workflow + train/valid/test sequence parquet."""
from __future__ import annotations

import json
from contextlib import closing
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import pandas as pd

from tqdm.auto import tqdm

from .datasets import read_movielens_100k
from .filters import cut_interactions, length_filter, raw_lengths
from .interactions import InteractionError, validate_interactions
from .arrays import LENGTH_COLUMN
from .ops import sequences_table, write_sequences
from .partitioned import (PART_SIZE, dask_cluster, group_partitioned, key_counts,
                          read_grouped, read_interactions_partitioned, release_memory)
from .predefined import SPLITS, check_splits, exclude_unknowns, split_by_column
from .readers import read_interactions as read_raw
from .readers import ReaderConfig, reader_config
from .staging import staged_directory
from .splits import LEAVE_LAST_OUT_MIN_LEN, leave_last_out, time_window_splits
from .workflow import (
    FIRST_ITEM_ID,
    ITEM_COL,
    ITEM_LIST,
    TIME_COL,
    build_workflow,
    encode_items,
    fit_workflow,
    item_vocabulary,
    transform_frame,
)

WORKFLOW_DIR = "workflow"
SplitKind = Literal["leave-last-out", "time-window", "predefined"]
SPLIT_KINDS = get_args(SplitKind)
Engine = Literal["pandas", "dask"]
ENGINES = get_args(Engine)
# the shortest sequence each split can use, and why (the summary says so when min_len is raised)
NEEDED = {"leave-last-out": (LEAVE_LAST_OUT_MIN_LEN, "leave-last-out needs a train item, a "
                             "valid and a test target"),
          "time-window": (1, ""),
          "predefined": (2, "a sequence needs a history item and a target")}


@dataclass
class ETLConfig:
    output_dir: str = "artifacts/ml-100k/data"
    dataset: str = "movielens-100k"
    max_len: int = 200  # the model's window: history items it reads (training slides it over each history)
    # longest stored sequence (history + target): older items are cut; None keeps everything.
    # Also what the served workflow keeps of a request (before the model reads its window).
    history_cap: int | None = 1000
    min_len: int = 3  # shorter sequences are dropped (leave-last-out needs 3, sessions 2)
    # user_id: one sequence per user; session_id: one per session. Default: the source's key
    # (a reader's layout fixes it), else user_id.
    key: str | None = None
    # a raw file read by seqrec.preprocessing.readers (format, path, columns, options); when set
    # it replaces `dataset` (a mapping is read as a ReaderConfig)
    source: ReaderConfig | None = None
    split: SplitKind = "leave-last-out"  # or "time-window", or "predefined" (the data says which is which)
    # predefined split: one source per split ({train: {...}, valid: {...}, test: {...}}, each a
    # `source` mapping), or `source` plus `split_column`, the column holding train/valid/test
    sources: dict[str, ReaderConfig] | None = None
    split_column: str | None = None
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
    # pandas: the whole input in memory; dask: parquet partitions streamed through NVTabular's
    # Dask path (fit, shuffle by key, group), for inputs larger than memory
    engine: Engine = "pandas"
    # dask engine: None (threaded scheduler in this process), N (a LocalCluster of N worker
    # processes) or a running scheduler's address (e.g. a dask-cuda cluster's)
    cluster: str | int | None = None
    partition_size: str = PART_SIZE  # dask engine: in-memory size of one partition

    def __post_init__(self):
        if self.source is not None:  # built in code from mappings: read them as the loader does
            self.source = reader_config(self.source)
        if self.sources is not None:
            self.sources = {s: reader_config(c) for s, c in self.sources.items()}
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"split {self.split!r}: choose one of {list(SPLIT_KINDS)}")
        self._check_engine()
        required = max(self.min_len, NEEDED[self.split][0])
        if self.history_cap is not None and self.history_cap < max(self.max_len or 0, required):
            raise ValueError(f"history_cap={self.history_cap} is below max_len={self.max_len} (or the "
                             f"{required} items a {self.split} sequence needs): raise it, or null "
                             "to keep whole histories")
        if self.max_len is not None and self.max_len < required:
            raise ValueError(f"max_len={self.max_len} is below the {required} items a {self.split} "
                             "sequence needs: every sequence would be dropped")
        if (self.sources is not None or self.split_column is not None) != (self.split == "predefined"):
            raise ValueError("sources / split_column go with split: predefined (and it needs one)")
        if self.sources is not None and (self.source is not None or self.split_column is not None):
            raise ValueError("predefined split: give either `sources` (one per split) or "
                             "`source` with `split_column`, not both")
        if self.split_column is not None and self.source is None:
            raise ValueError("split_column names a column of `source`, which is not set")
        source_key = self.source.key if self.source is not None else None
        if self.sources is not None:
            if sorted(self.sources) != sorted(SPLITS):
                raise ValueError(f"sources: expected exactly {list(SPLITS)}, got "
                                 f"{sorted(self.sources)}")
            keys = {s: c.key for s, c in self.sources.items()}
            if len(set(keys.values())) != 1:
                raise ValueError(f"sources are keyed differently: {keys}")
            source_key = keys["train"]
        if self.key is None:
            self.key = source_key or "user_id"
        elif source_key is not None and self.key != source_key:
            raise ValueError(f"key {self.key!r} does not match the {self.source.format} "
                             f"source, whose sequences are keyed by {source_key!r}")


    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: choose one of {list(ENGINES)}")
        if self.engine == "pandas":
            if self.cluster is not None:
                raise ValueError("cluster goes with engine: dask")
            return
        if self.split == "predefined":
            raise ValueError("engine: dask does not do predefined splits (their unknown-item "
                             "handling needs each split in memory); use engine: pandas")
        if self.source is None or self.source.format != "generic" or not (
                str(self.source.path).endswith((".parquet", ".pq")) or Path(self.source.path).is_dir()):
            raise ValueError("engine: dask reads parquet: give etl.source with format: generic "
                             "and the path of a parquet file or folder (convert text files "
                             "first, e.g. with engine: pandas or pyarrow)")
        options = set(self.source.options or {}) - {"key"}
        if options:
            raise ValueError(f"engine: dask reads the parquet columns as they are (integer ids, "
                             f"epoch seconds): source options {sorted(options)} are not applied")


@dataclass
class ETLResult:
    output_dir: str
    rows_in: int
    sequences: dict[str, int] = field(default_factory=dict)
    windows: list[str] = field(default_factory=list)
    num_items: int = 0
    seconds: float = 0.0
    dropped_sequences: int = 0  # the sum of dropped_reasons
    # sequences dropped, by reason ("<split>: reason" where it is one split's)
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    # interactions cut from the sequences that were kept, by reason
    dropped_interactions: dict[str, int] = field(default_factory=dict)
    sequences_in: int = 0  # distinct keys (per split, when predefined), before any filter

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / max(self.seconds, 1e-9)


def read_interactions(config: ETLConfig) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """The raw interactions; a {split: frame} mapping for a predefined split from `sources`."""
    if config.sources is not None:
        return {s: read_raw(config.sources[s]) for s in SPLITS}
    if config.source is not None:
        return read_raw(config.source)  # key, item_id, timestamp + side columns
    if config.dataset == "movielens-100k":
        return read_movielens_100k()
    raise ValueError(f"unknown dataset {config.dataset!r}; available: ['movielens-100k']")


def run_etl(
    config: ETLConfig, interactions: pd.DataFrame | dict[str, pd.DataFrame] | None = None,
    progress: bool = True,
) -> ETLResult:
    """Fit the workflow, write the splits; the output folder appears only when complete.

    interactions: the raw frame (or, for a predefined split, {train, valid, test} frames)."""
    started = time.perf_counter()
    with dask_cluster(config.cluster):
        return _run_etl(config, interactions, progress, started)


def _run_etl(config: ETLConfig, interactions, progress: bool, started: float) -> ETLResult:
    stages = tqdm(total=3, desc="preprocess", unit="stage", disable=not progress)
    stages.set_postfix_str("read")
    source = _source_name(config)
    columns = (config.key, ITEM_COL, TIME_COL)
    dataset = frame = None
    if config.engine == "dask":  # partitions of the parquet source, read as they are needed
        if interactions is not None:
            raise ValueError("engine: dask reads etl.source itself; pass no in-memory frame")
        src = reader_config(config.source)
        dataset, rows_in = read_interactions_partitioned(src.path, src.columns, config.key,
                                                         config.partition_size)
    else:
        frame = read_interactions(config) if interactions is None else interactions
        if config.split == "predefined":
            if not isinstance(frame, dict):
                frame = split_by_column(frame, config.split_column, source)
            check_splits(frame, source)
            frames = {s: validate_interactions(frame[s], source=f"{source} [{s}]",
                                               columns=columns) for s in SPLITS}
            fit_frame, rows_in = frames["train"], sum(len(f) for f in frames.values())
        else:
            frame = validate_interactions(frame, source=source, columns=columns)
            fit_frame, rows_in = frame, len(frame)
    final = Path(config.output_dir)
    with staged_directory(final) as staging, closing(stages):
        workflow = build_workflow(
            staging / "categories",
            max_len=config.history_cap,
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
        if dataset is not None:
            workflow.fit(dataset)  # statistics streamed over the partitions
        else:
            fit_workflow(workflow, fit_frame)  # predefined: the training split only
        stages.update()
        stages.set_postfix_str("transform")
        if config.split == "predefined":
            sequences, reasons, cut, sequences_in = _write_predefined(workflow, frames, config,
                                                                      staging)
            windows: list[str] = []
            stages.update()
        else:
            counts = None
            if dataset is not None:
                grouped = _group_dask(workflow, dataset, config, staging)
                counts = key_counts(dataset, config.key) if _needs_counts(config) else None
            else:
                grouped = transform_frame(workflow, frame)
            stages.update()
            sequences_in = len(grouped)
            grouped, reasons, cut = _filter(grouped, frame, config, rows_in=rows_in, counts=counts)
            stages.set_postfix_str("split + write")
            sequences, windows = _write_splits(grouped, config, staging)
        workflow.save(str(staging / WORKFLOW_DIR))
        stages.update()
        shutil.rmtree(staging / "categories")  # the saved workflow carries its own copy
        result = ETLResult(
            output_dir=str(final),
            rows_in=rows_in,
            sequences=sequences,
            windows=windows,
            num_items=int((item_vocabulary(workflow) >= 0).sum()),
            dropped_sequences=sum(reasons.values()),
            dropped_reasons=reasons,
            dropped_interactions=cut,
            sequences_in=sequences_in,
        )
        result.seconds = time.perf_counter() - started
        (staging / "etl_summary.json").write_text(
            json.dumps({"config": asdict(config), **asdict(result)}, indent=2)
        )
    return result


def _group_dask(workflow, dataset, config: ETLConfig, staging: Path) -> pd.DataFrame:
    """Shuffle by key and group partition by partition (parts on disk), then read the grouped
    sequences back, sorted by key as the in-memory engine gives them: one row per sequence of at
    most history_cap items, so splitting them needs far less memory than the raw rows did."""
    parts = staging / "grouped"
    group_partitioned(workflow, dataset, parts, key=config.key, fit=False)
    release_memory()
    grouped = read_grouped(parts, config.key)
    shutil.rmtree(parts)
    release_memory()
    return grouped


def _source_name(config: ETLConfig) -> str:
    if config.sources is not None:
        return config.sources["train"].path
    return config.source.path if config.source else f"{config.dataset} input"


def _needs_counts(config: ETLConfig) -> bool:
    """Per-key raw counts cost a hash of every row: only when a filter or count needs them."""
    return config.max_session_len is not None or config.remove_repeats


def _filter(grouped: pd.DataFrame, frame: pd.DataFrame | None, config: ETLConfig, prefix: str = "",
            rows_in: int | None = None, counts: pd.Series | None = None):
    """The length filters of one split: (kept sequences, dropped by reason, cut by reason).

    frame: the raw rows; or, without it (data that never was in memory), `rows_in` and, when
    `_needs_counts`, the per-key raw `counts`."""
    needed, why = NEEDED[config.split]
    exact = _needs_counts(config)
    if frame is not None:
        rows_in = len(frame)
        counts = frame[config.key].value_counts() if exact else None
    lengths = raw_lengths(counts, grouped, config.key) if exact else None
    kept, reasons, keep = length_filter(grouped, lengths, config.min_len, needed, why,
                                        config.max_session_len, prefix)
    if exact:
        raw_kept = int(lengths[keep].sum())
    else:  # every row is in one list, and a dropped (short) sequence was never cut by history_cap
        raw_kept = rows_in - int(grouped[LENGTH_COLUMN].to_numpy()[~keep].sum())
    cut = cut_interactions(raw_kept, kept, config.history_cap, config.remove_repeats, prefix)
    return kept, reasons, cut


def _write_predefined(workflow, frames: dict[str, pd.DataFrame], config: ETLConfig,
                      staging: Path):
    """Each split through the workflow fitted on train; unknown items handled in valid/test."""
    vocabulary = item_vocabulary(workflow)
    sequences, reasons, cut, sequences_in = {}, {}, {}, 0
    for split in SPLITS:
        frame, prefix = frames[split], f"{split}: "
        sequences_in += int(frame[config.key].nunique())
        if split != "train":
            known = encode_items(vocabulary, frame[ITEM_COL].to_numpy()) >= FIRST_ITEM_ID
            frame, skipped, dropped = exclude_unknowns(frame, known, config.key, TIME_COL)
            reasons.update({prefix + r: n for r, n in skipped.items()})
            cut.update({prefix + r: n for r, n in dropped.items()})
        if len(frame) == 0:
            raise InteractionError(f"{_source_name(config)}: no {split} session is left "
                                   f"({reasons})")
        grouped, dropped_here, cut_here = _filter(transform_frame(workflow, frame), frame,
                                                  config, prefix)
        reasons.update(dropped_here)
        cut.update(cut_here)
        if len(grouped) == 0:
            raise InteractionError(f"{_source_name(config)}: no {split} session is left "
                                   f"({reasons})")
        write_sequences(sequences_table(grouped), staging / f"{split}.parquet")
        sequences[split] = len(grouped)
    return sequences, reasons, cut, sequences_in


def _write_splits(grouped: pd.DataFrame, config: ETLConfig, staging: Path):
    if config.split == "leave-last-out":
        rows = {}
        for name, table in leave_last_out(grouped, min_len=config.min_len):  # already filtered
            write_sequences(table, staging / f"{name}.parquet")
            rows[name] = table.num_rows
            del table  # before the next split is built
        return rows, []
    windows = time_window_splits(
        grouped, TIME_COL, config.window_seconds, config.valid_fraction, config.test_fraction
    )
    totals = dict.fromkeys(SPLITS, 0)
    for window, splits in windows.items():
        (staging / window).mkdir()
        for name, table in splits.items():
            write_sequences(table, staging / window / f"{name}.parquet")
            totals[name] += table.num_rows
    return totals, list(windows)


def read_split(data_dir: str | Path, split: str, extra: list[str] | tuple = ()) -> pd.DataFrame:
    """Items and lengths of one split, plus the `extra` list columns (side features)."""
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `seqrec preprocess` first")
    return pd.read_parquet(path, columns=[ITEM_LIST, LENGTH_COLUMN, *extra])
