"""`etl.engine: dask` (parquet partitions through NVTabular's Dask path) writes what the in-memory
engine writes for the same input: the same split files, vocabulary and summary counts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from seqrec.preprocessing.pipeline import ETLConfig, run_etl
from seqrec.preprocessing.workflow import item_vocabulary, load_workflow


def write_parts(folder: Path, rows=6000, n_files=3, seed=0) -> Path:
    """Sessions spread over every file (each file holds pieces of most sessions); one repeated
    interaction in ten, timestamp ties inside sessions, one long session for max_session_len."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 700, rows)
    keys[:120] = 7  # a long one
    items = rng.zipf(1.5, rows) % 400 + 10_000
    repeat = rng.random(rows) < 0.1
    items[1:][repeat[1:]] = items[:-1][repeat[1:]]
    frame = pd.DataFrame({
        "sid": keys.astype(np.int64),
        "item": items.astype(np.int64),
        "ts": (1_600_000_000 + keys * 50_000 + rng.integers(0, 20_000, rows)).astype(np.int64),
        "category": (items % 37).astype(np.int64),
        "price": rng.exponential(30, rows).astype(np.float32),
    })
    frame.loc[5:8, "ts"] = frame.loc[5, "ts"]  # ties: arrival order decides
    folder.mkdir(parents=True)
    for i, part in enumerate(np.array_split(frame, n_files)):
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder


def etl_section(out: Path, parts: Path, engine: str, **kw) -> dict:
    """The recipe's `etl` mapping for the parts in `parts`."""
    source = {"format": "generic", "path": str(parts),
              "columns": {"session_id": "sid", "item_id": "item", "timestamp": "ts",
                          "category": "category", "price": "price"}}
    extra = {"partition_size": "16KB"} if engine == "dask" else {}
    return dict(output_dir=str(out), source=source, engine=engine, max_len=12, min_len=2,
                categorical=["category"], log_continuous=["price"], **extra, **kw)


def config(out: Path, parts: Path, engine: str, **kw) -> ETLConfig:
    return ETLConfig(**etl_section(out, parts, engine, **kw))


def assert_same(a: Path, b: Path, files):
    rows = 0
    for name in files:
        left, right = pq.read_table(a / name), pq.read_table(b / name)
        rows += left.num_rows
        assert left.schema == right.schema, name
        for col in left.column_names:
            kind = left.schema.field(col).type
            if pa.types.is_list(kind) and pa.types.is_floating(kind.value_type):
                # normalisation statistics summed over other partitions: equal up to rounding
                np.testing.assert_allclose(pc.list_flatten(left[col]).to_numpy(),
                                           pc.list_flatten(right[col]).to_numpy(), rtol=1e-5, atol=1e-5)
                assert pc.list_value_length(left[col]).equals(pc.list_value_length(right[col]))
            else:
                assert left[col].equals(right[col]), (name, col)
    assert rows > 0
    np.testing.assert_array_equal(item_vocabulary(load_workflow(a / "workflow")),
                                  item_vocabulary(load_workflow(b / "workflow")))
    summary = [json.loads((d / "etl_summary.json").read_text()) for d in (a, b)]
    for field in ("rows_in", "sequences", "windows", "num_items", "dropped_reasons",
                  "dropped_interactions", "sequences_in"):
        assert summary[0][field] == summary[1][field], field


@pytest.mark.parametrize("split, kw", [
    ("time-window", {"window_seconds": 3 * 86400}),
    ("leave-last-out", {"remove_repeats": True, "max_session_len": 100}),
])
def test_dask_engine_writes_what_the_pandas_engine_writes(tmp_path, split, kw):
    parts = write_parts(tmp_path / "raw")
    pandas = run_etl(config(tmp_path / "pandas", parts, "pandas", split=split, **kw), progress=False)
    dask = run_etl(config(tmp_path / "dask", parts, "dask", split=split, **kw), progress=False)
    if split == "time-window":
        assert len(dask.windows) > 2
        files = [f"{w}/{s}.parquet" for w in dask.windows for s in ("train", "valid", "test")]
    else:
        files = [f"{s}.parquet" for s in ("train", "valid", "test")]
        assert dask.dropped_reasons["longer than max_session_len=100"] == 1
    assert_same(tmp_path / "pandas", tmp_path / "dask", files)
    assert not list((tmp_path / "dask").glob("grouped*"))  # the intermediate parts are gone


def test_dask_engine_runs_on_a_local_cluster(tmp_path):
    parts = write_parts(tmp_path / "raw", seed=3)
    pandas = run_etl(config(tmp_path / "pandas", parts, "pandas"), progress=False)
    dask = run_etl(config(tmp_path / "dask", parts, "dask", cluster=1), progress=False)
    assert dask.sequences == pandas.sequences
    assert_same(tmp_path / "pandas", tmp_path / "dask", [f"{s}.parquet" for s in ("train", "test")])


@pytest.mark.parametrize("address", [False, True], ids=["threaded", "scheduler-address"])
def test_cli_preprocess_runs_the_dask_engine(tmp_path, capsys, address):
    """`seqrec preprocess` with etl.engine: dask, in this process's threads or on a running
    cluster given by its scheduler address: the pandas engine's output, and the cluster (which
    the command did not start) still running after it."""
    from contextlib import ExitStack

    from distributed import LocalCluster

    from seqrec.cli import main

    parts = write_parts(tmp_path / "raw", rows=1500, seed=5)
    pandas = run_etl(config(tmp_path / "pandas", parts, "pandas"), progress=False)
    etl = etl_section(tmp_path / "dask", parts, "dask")
    recipe = tmp_path / "recipe.yaml"
    with ExitStack() as stack:
        if address:
            # an in-process worker starts in a second; the command still connects over TCP
            cluster = stack.enter_context(LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                dashboard_address=None))
            etl["cluster"] = cluster.scheduler_address
            assert etl["cluster"].startswith("tcp://")
        recipe.write_text(json.dumps({"etl": etl}))  # JSON is YAML
        assert main(["preprocess", "--config", str(recipe)]) == 0
        if address:
            assert cluster.scheduler.task_prefixes  # the work went to its worker
            assert len(cluster.scheduler_info["workers"]) == 1
    summary = json.loads((tmp_path / "dask" / "etl_summary.json").read_text())["config"]
    assert (summary["engine"], summary["cluster"]) == ("dask", etl.get("cluster"))
    out = capsys.readouterr().out
    assert ("sequences out  " + ", ".join(f"{k} {v:,}" for k, v in pandas.sequences.items())) in out
    assert f"output         {tmp_path / 'dask'}" in out
    assert_same(tmp_path / "pandas", tmp_path / "dask", [f"{s}.parquet" for s in ("train", "valid", "test")])


@pytest.mark.parametrize("kw, message", [
    ({"engine": "spark"}, "engine 'spark'"),
    ({"cluster": 2}, "cluster goes with engine: dask"),
    ({"engine": "dask", "source": {"format": "generic", "path": "x.csv", "columns": {}}},
     "engine: dask reads parquet"),
    ({"engine": "dask", "source": {"format": "generic", "path": "x.parquet", "columns": {},
                                   "options": {"time_format": "ms"}}}, "time_format"),
])
def test_engine_options_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        ETLConfig(**kw)


def test_dask_engine_names_a_missing_column(tmp_path):
    parts = write_parts(tmp_path / "raw", rows=300)
    cfg = config(tmp_path / "out", parts, "dask")
    cfg.source.columns["item_id"] = "nope"
    with pytest.raises(ValueError, match=r"missing column\(s\) \['nope'\]"):
        run_etl(cfg, progress=False)
    assert not (tmp_path / "out").exists()
