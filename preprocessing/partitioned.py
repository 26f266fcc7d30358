"""Data larger than memory: NVTabular's Dask path, partition by partition.

The fit (Categorify statistics) streams over the partitions; before grouping, rows are shuffled
by the sequence key so that every session sits in exactly one partition: grouping partition by
partition would otherwise cut a session in two. The same code runs on a dask.distributed cluster
(LocalCluster here, dask-cuda on GPUs): pass `client`, or create one beforehand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import dask
import nvtabular as nvt
import pyarrow.parquet as pq
from merlin.io import Dataset

from .ops import sequences_table
from .staging import staged_directory
from .workflow import KEY_COL


def read_partitioned(paths: Sequence[str | Path], part_size: str = "128MB") -> Dataset:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"input file(s) not found: {missing}")
    return Dataset([str(p) for p in paths], engine="parquet", part_size=part_size, cpu=True)


def group_partitioned(
    workflow: nvt.Workflow,
    paths: Sequence[str | Path],
    output_dir: str | Path,
    key: str = KEY_COL,
    part_size: str = "128MB",
) -> Path:
    """Fit `workflow` on parquet `paths` and write its grouped output to `output_dir` (a folder
    of parquet parts), never holding the whole input in memory. Written to a temporary folder
    and moved into place when complete."""
    with staged_directory(output_dir) as staging:
        dataset = read_partitioned(paths, part_size)
        workflow.fit(dataset)
        shuffled = dataset.shuffle_by_keys([key])
        # One parquet part per grouped partition, written where the partition lives (a worker
        # of the active Dask client, or a local thread): nothing is gathered in one process.
        parts = workflow.transform(shuffled).to_ddf().to_delayed()
        dask.compute(*(dask.delayed(_write_part)(part, staging / f"part-{i:05d}.parquet")
                       for i, part in enumerate(parts)))
    return Path(output_dir)


def _write_part(frame, path: Path) -> int:
    pq.write_table(sequences_table(frame), path)
    return len(frame)
