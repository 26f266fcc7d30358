"""NVTabular's Dask path on a multi-partition input: sessions are never split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqrec.preprocessing.partitioned import group_partitioned, read_partitioned
from seqrec.preprocessing.workflow import build_workflow, item_vocabulary

pytestmark = pytest.mark.slow


def write_parts(folder, n_files=4, rows=6000, seed=0):
    """Sessions deliberately spread over every file, so each partition holds pieces of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "session_id": rng.integers(0, 500, rows),
        "item_id": rng.integers(0, 300, rows),
        "timestamp": rng.permutation(rows).astype(np.int64),  # no ties: order is well defined
    })
    folder.mkdir()
    paths = []
    for i, part in enumerate(np.array_split(frame, n_files)):
        paths.append(folder / f"part-{i}.parquet")
        part.to_parquet(paths[-1], index=False)
    return frame, paths


def expected_lists(frame, max_len):
    return (frame.sort_values(["session_id", "timestamp"]).groupby("session_id")["item_id"]
            .apply(lambda s: list(s)[-max_len:]))


def check(out_dir, frame, workflow, max_len):
    grouped = pd.concat(pd.read_parquet(p) for p in sorted(out_dir.glob("*.parquet")))
    assert grouped["session_id"].is_unique  # no session split across partitions
    vocab = item_vocabulary(workflow)
    want = expected_lists(frame, max_len)
    assert set(grouped["session_id"]) == set(want.index)
    for sid, items in zip(grouped["session_id"], grouped["item_id-list"]):
        assert vocab[np.asarray(items)].tolist() == want[sid]


def test_multi_partition_input_keeps_sessions_whole(tmp_path):
    frame, paths = write_parts(tmp_path / "raw")
    assert read_partitioned(paths, part_size="10KB").to_ddf().npartitions >= 4
    workflow = build_workflow(tmp_path / "cats", max_len=15, key="session_id")
    out = group_partitioned(workflow, paths, tmp_path / "out", key="session_id", part_size="10KB")
    check(out, frame, workflow, 15)


def test_same_code_on_a_distributed_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    frame, paths = write_parts(tmp_path / "raw", seed=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        workflow = build_workflow(tmp_path / "cats", max_len=10, key="session_id")
        out = group_partitioned(workflow, paths, tmp_path / "out", key="session_id", part_size="10KB")
    check(out, frame, workflow, 10)


def test_missing_input_file_is_named(tmp_path):
    workflow = build_workflow(tmp_path / "cats", max_len=5, key="session_id")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        group_partitioned(workflow, [tmp_path / "nope.parquet"], tmp_path / "out", key="session_id")
    assert not (tmp_path / "out").exists()
