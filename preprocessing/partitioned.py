"""Data larger than memory: NVTabular's Dask path, partition by partition.

The fit (Categorify statistics) streams over the partitions; before grouping, rows are shuffled
by the sequence key so that every session sits in exactly one partition: grouping partition by
partition would otherwise cut a session in two. The same code runs on a dask.distributed cluster
(a LocalCluster, a running scheduler, dask-cuda's on GPU machines): see `dask_cluster`.

Memory: a worker holds one partition (read, encoded, grouped) at a time, and the shuffle spills
to disk (Dask's "disk" method on the threaded scheduler, "p2p" on a cluster) instead of keeping
every split partition in memory; small partitions (`PART_SIZE`) bound both.
"""
from __future__ import annotations

import ctypes
import gc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import dask
import numpy as np
import nvtabular as nvt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from merlin.io import Dataset

from .interactions import InteractionError, validate_interactions
from .ops import sequences_table
from .staging import staged_directory
from .workflow import ITEM_COL, KEY_COL, TIME_COL

# In-memory size of one partition. The grouping op needs a few times its partition, and the
# threaded scheduler runs one per core: 64MB partitions keep a 2-core run of any size near 2 GB.
PART_SIZE = "64MB"


@contextmanager
def dask_cluster(cluster: str | int | None) -> Iterator[object | None]:
    """None: Dask's threaded scheduler in this process; an int N: a LocalCluster of N
    single-threaded worker processes for the duration; a string: the address of a running
    scheduler (`dask scheduler`, or dask-cuda's `LocalCUDACluster` / `dask-cuda-worker`)."""
    if cluster is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if isinstance(cluster, bool) or not isinstance(cluster, (int, str)):
        raise ValueError(f"cluster: a scheduler address or a number of workers, got {cluster!r}")
    if isinstance(cluster, int):
        if cluster < 1:
            raise ValueError(f"cluster: at least 1 worker, got {cluster}")
        with LocalCluster(n_workers=cluster, threads_per_worker=1, processes=True,
                          dashboard_address=None) as local, Client(local) as client:
            yield client
    else:
        with Client(cluster) as client:
            yield client


def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file, or the parquet files of a folder (sorted), checked to exist."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".pq"))
        if not files:
            raise InteractionError(f"{path}: no parquet files in this folder")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input file(s) not found: {[str(path)]}")
    return [path]


def read_partitioned(paths: Sequence[str | Path], part_size: str = PART_SIZE) -> Dataset:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"input file(s) not found: {missing}")
    return Dataset([str(p) for p in paths], engine="parquet", part_size=part_size, cpu=True)


def read_interactions_partitioned(path: str | Path, columns: dict[str, str], key: str,
                                  part_size: str = PART_SIZE) -> tuple[Dataset, int]:
    """Parquet interactions as a partitioned Dataset in the interaction schema (`columns` maps
    schema names to the file's), each partition checked as the in-memory readers check a frame;
    and the number of rows (from the parquet footers, without reading the data)."""
    files = parquet_files(path)
    names = {schema: columns.get(schema, schema) for schema in (key, ITEM_COL, TIME_COL)}
    names.update(columns)
    schema = pq.read_schema(files[0])
    missing = sorted(n for n in names.values() if n not in schema.names)
    if missing:
        raise InteractionError(f"{path}: missing column(s) {missing}; found {schema.names}")
    ddf = read_partitioned(files, part_size).to_ddf(columns=list(dict.fromkeys(names.values())))
    ddf = ddf.rename(columns={file: name for name, file in names.items()})[list(names)]
    checked = ddf.map_partitions(validate_interactions, source=str(path),
                                 columns=(key, ITEM_COL, TIME_COL), meta=_checked_meta(ddf, key))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return Dataset(checked, cpu=True), rows


def _checked_meta(ddf, key: str) -> pd.DataFrame:
    meta = ddf._meta.copy()
    for col in (key, ITEM_COL, TIME_COL):
        meta[col] = meta[col].astype(np.int64)
    return meta


def group_partitioned(
    workflow: nvt.Workflow,
    data: Sequence[str | Path] | Dataset,
    output_dir: str | Path,
    key: str = KEY_COL,
    part_size: str = PART_SIZE,
    fit: bool = True,
) -> Path:
    """Fit `workflow` on `data` (parquet paths or a Dataset) unless `fit` is False, and write its
    grouped output to `output_dir` (a folder of parquet parts), never holding the whole input in
    memory. Written to a temporary folder and moved into place when complete."""
    with staged_directory(output_dir) as staging:
        dataset = data if isinstance(data, Dataset) else read_partitioned(data, part_size)
        if fit:
            workflow.fit(dataset)
        # threaded scheduler: spill the shuffle to disk; a distributed client picks p2p itself
        with dask.config.set({"dataframe.shuffle.method": _shuffle_method()}):
            shuffled = Dataset(_shuffle_keeping_arrival_order(dataset.to_ddf(), key), cpu=True)
            # One parquet part per grouped partition, written where the partition lives (a
            # worker of the active Dask client, or a local thread): nothing is gathered.
            parts = workflow.transform(shuffled).to_ddf().to_delayed()
            dask.compute(*(dask.delayed(_write_part)(part, staging / f"part-{i:05d}.parquet")
                           for i, part in enumerate(parts)))
    return Path(output_dir)


ARRIVAL = "__arrival"  # (input partition, row) packed: the rows' order in the input
_ROW_BITS = 40


def _shuffle_keeping_arrival_order(ddf, key: str):
    """Rows of a key into one partition, in their input order: the shuffle concatenates pieces
    in whatever order they arrive, and the grouping keeps time ties in input order."""
    numbered = ddf.map_partitions(_number_rows, meta={**ddf.dtypes.to_dict(), ARRIVAL: "int64"})
    return numbered.shuffle(key).map_partitions(_arrival_order, meta=ddf._meta)


def _number_rows(frame: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    part = partition_info["number"] if partition_info else 0
    arrival = (np.int64(part) << _ROW_BITS) + np.arange(len(frame), dtype=np.int64)
    return frame.assign(**{ARRIVAL: arrival})


def _arrival_order(frame: pd.DataFrame) -> pd.DataFrame:
    order = np.argsort(frame[ARRIVAL].to_numpy(), kind="stable")
    return frame.iloc[order].drop(columns=[ARRIVAL]).reset_index(drop=True)


def _shuffle_method() -> str:
    try:
        from distributed import default_client

        default_client()
        return "p2p"
    except (ImportError, ValueError):
        return "disk"


def release_memory() -> None:
    """Hand freed memory back to the OS. After a shuffle, glibc's heap and Arrow's pool keep
    gigabytes of freed pages, to which the next stage would add its own."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass


def read_grouped(folder: str | Path, key: str) -> pd.DataFrame:
    """The grouped parts of `group_partitioned` as one frame sorted by key, list columns
    Arrow-backed, as the in-memory engine's GroupSequences output."""
    table = pa.concat_tables(pq.read_table(p) for p in sorted(Path(folder).glob("*.parquet")))
    order = pa.array(np.argsort(table[key].to_numpy(), kind="stable"))
    # sorted column by column, each unsorted column freed once its sorted copy exists: the peak
    # is the data plus one column, not twice the data (a whole-table take)
    names, columns = table.column_names, table.columns
    del table
    for i in range(len(columns)):
        columns[i] = columns[i].take(order)
    return pa.table(dict(zip(names, columns))).to_pandas(
        types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)


def key_counts(dataset: Dataset, key: str) -> pd.Series:
    """Rows per key of a partitioned Dataset (a hash count streamed over the partitions)."""
    return dataset.to_ddf()[key].value_counts().compute()


def _write_part(frame, path: Path) -> int:
    pq.write_table(sequences_table(frame), path)
    return len(frame)
