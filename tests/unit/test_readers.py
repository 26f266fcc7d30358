"""Readers on byte-exact generated files in each public layout, on real MovieLens-100k and on the
real transformers4rec==23.12.0 sample; every error names file, column and problem."""
from __future__ import annotations

import gzip
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generators import write_diginetica, write_movielens, write_rees46, write_yoochoose
from seqrec.preprocessing.datasets import _read_atomic_file, movielens_100k_dir
from seqrec.preprocessing.interactions import InteractionError
from seqrec.preprocessing.readers import (
    ReaderConfig, ReaderError, read_diginetica, read_generic, read_interactions, read_movielens,
    read_rees46, read_yoochoose, uuid_to_int64,
)


def assert_same(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got.columns) == list(want.columns)
    for col in got.columns:
        g, w = got[col], pd.Series(want[col])
        if isinstance(g.dtype, pd.CategoricalDtype) or str(g.dtype) == "Int64":
            # text side columns: empty fields are nulls
            g = g.astype(object).where(g.notna(), "")
            w = w.astype(object).where(w.notna(), "")
            assert [str(x) for x in g] == [str(x) for x in w], col
        else:
            np.testing.assert_array_equal(g.to_numpy(), w.to_numpy(), err_msg=col)


@pytest.fixture(scope="module")
def ml100k_ratings():
    raw = _read_atomic_file(movielens_100k_dir() / "ml-100k.inter")
    return pd.DataFrame({c: pd.to_numeric(raw[c]) for c in ("user_id", "item_id", "rating", "timestamp")})


# ---------------------------------------------------------------- round trips

def test_yoochoose_round_trip(tmp_path):
    want = write_yoochoose(tmp_path / "yoochoose-clicks.dat", n=3000, seed=1)
    got = read_yoochoose(tmp_path / "yoochoose-clicks.dat")
    assert got.dtypes[["session_id", "item_id", "timestamp"]].tolist() == [np.int64] * 3
    assert isinstance(got["category"].dtype, pd.CategoricalDtype)
    assert_same(got, want)


def test_yoochoose_first_public_row(tmp_path):
    """The first line of the real yoochoose-clicks.dat, parsed by hand: 2014-04-07T10:51:09Z."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n")
    got = read_yoochoose(path)
    assert got["timestamp"].tolist() == [1396867869, 1396868049]
    assert got["category"].astype(str).tolist() == ["0", "S"]


def test_yoochoose_gzipped(tmp_path):
    want = write_yoochoose(tmp_path / "clicks.dat", n=500, seed=2)
    (tmp_path / "clicks.dat.gz").write_bytes(gzip.compress((tmp_path / "clicks.dat").read_bytes()))
    assert_same(read_yoochoose(tmp_path / "clicks.dat.gz"), want)


def test_diginetica_round_trip(tmp_path):
    want = write_diginetica(tmp_path / "train-item-views.csv", n=3000, seed=3)
    got = read_diginetica(tmp_path / "train-item-views.csv")
    assert str(got["user_id"].dtype) == "Int64" and got["user_id"].isna().any()
    assert_same(got, want)


def test_diginetica_time_is_day_plus_timeframe(tmp_path):
    path = tmp_path / "train-item-views.csv"
    path.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n")
    got = read_diginetica(path)
    # 2016-05-09T00:00:00Z = 1462752000; 526309 ms = 526 s
    assert got["timestamp"].tolist() == [1462752000 + 526]
    assert got["user_id"].isna().all()


def test_rees46_round_trip(tmp_path):
    want = write_rees46(tmp_path / "2019-Oct.csv", n=3000, seed=4)
    got = read_rees46(tmp_path / "2019-Oct.csv")
    assert_same(got, want.drop(columns="user_session"))
    assert got["price"].dtype == np.float64 and got["category_id"].dtype == np.int64


def test_rees46_event_type_filter_and_session_codes(tmp_path):
    want = write_rees46(tmp_path / "2019-Oct.csv", n=3000, seed=5)
    views = read_rees46(tmp_path / "2019-Oct.csv", event_types=("view",))
    keep = want["event_type"] == "view"
    assert len(views) == keep.sum() > 0
    assert_same(views, want[keep].drop(columns="user_session").reset_index(drop=True))
    # one code per UUID and back: the encoding is one-to-one on this file
    pairs = pd.DataFrame({"code": views["session_id"], "uuid": want.loc[keep, "user_session"].to_numpy()})
    assert pairs.drop_duplicates().groupby("code").size().max() == 1
    assert pairs["code"].nunique() == pairs["uuid"].nunique()


def test_uuid_codes_equal_first_64_bits():
    ids = [str(uuid.UUID(int=v)) for v in (0, 1 << 64, (1 << 128) - 1, 0x72D76FDE8BB34E008C23A032DFED738C)]
    codes = uuid_to_int64(pa.array(ids))
    want = np.array([uuid.UUID(i).int >> 64 for i in ids], dtype=np.uint64).view(np.int64)
    np.testing.assert_array_equal(codes, want)


@pytest.mark.parametrize("layout", ["u.data", "ratings.dat", "ratings.csv"])
def test_movielens_layouts_on_real_ml100k(tmp_path, ml100k_ratings, layout):
    want = write_movielens(tmp_path / layout, ml100k_ratings, layout)
    got = read_movielens(tmp_path / layout)
    assert len(got) == 100_000
    assert_same(got, want.astype({"rating": np.float32}))


def test_movielens_u_data_bytes(tmp_path, ml100k_ratings):
    """The first line of the public u.data is '196\\t242\\t3\\t881250949'."""
    write_movielens(tmp_path / "u.data", ml100k_ratings, "u.data")
    assert (tmp_path / "u.data").read_text().split("\n", 1)[0] == "196\t242\t3\t881250949"


def test_generic_csv_with_mapping_and_time_formats(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("sid,sku,when,price\n7,100,07/04/2014 10:51,1.5\n7,101,07/04/2014 10:52,2.0\n")
    got = read_generic(path, {"session_id": "sid", "item_id": "sku", "timestamp": "when",
                              "price": "price"}, time_format="%d/%m/%Y %H:%M")
    assert got["timestamp"].tolist() == [1396867860, 1396867920]
    assert got["price"].tolist() == [1.5, 2.0] and got["item_id"].tolist() == [100, 101]
    path.write_text("u,i,t\n1,2,1396867869277\n")
    got = read_generic(path, {"user_id": "u", "item_id": "i", "timestamp": "t"}, time_format="ms")
    assert got["timestamp"].tolist() == [1396867869]


def test_generic_parquet(tmp_path):
    stamps = pd.to_datetime(["2014-04-07 10:51:09.277", "2014-04-07 10:54:09.868"])
    pd.DataFrame({"s": [1, 1], "i": [5, 6], "t": stamps}).to_parquet(tmp_path / "x.parquet")
    got = read_generic(tmp_path / "x.parquet", {"session_id": "s", "item_id": "i", "timestamp": "t"})
    assert got["timestamp"].tolist() == [1396867869, 1396868049]


def test_dispatcher_runs_the_schema_checks(tmp_path):
    write_yoochoose(tmp_path / "clicks.dat", n=200, seed=6)
    frame = read_interactions({"format": "yoochoose", "path": str(tmp_path / "clicks.dat")})
    assert frame["session_id"].dtype == np.int64
    with pytest.raises(ReaderError, match="unknown format 'nope'"):
        read_interactions(ReaderConfig(format="nope", path="x"))
    with pytest.raises(ReaderError, match="bad options for format 'yoochoose'"):
        read_interactions(ReaderConfig("yoochoose", str(tmp_path / "clicks.dat"), options={"sep": ";"}))


# ---------------------------------------------------------------- real transformers4rec sample

def test_transformers4rec_tabular_rows_through_generic_reader():
    from seqrec.preprocessing.datasets import transformers4rec_sample_dir

    path = transformers4rec_sample_dir() / "tabular_data" / "data.parquet"
    raw = pq.read_table(path).to_pandas()
    got = read_interactions(ReaderConfig("generic", str(path), columns={
        "user_id": "user_id", "item_id": "item_id", "timestamp": "event_datetime",
        "user_country": "user_country"}))
    assert len(got) == 1000
    # the datetime column floors to the sample's own epoch-seconds column
    np.testing.assert_array_equal(got["timestamp"], raw["event_timestamp"])
    np.testing.assert_array_equal(got["item_id"], raw["item_id"])


def test_transformers4rec_grouped_sample_columns():
    from seqrec.preprocessing.datasets import transformers4rec_sample_dir

    frame = pd.read_parquet(transformers4rec_sample_dir() / "data.parquet")
    assert len(frame) == 1000
    assert {"session_id", "item_id/list", "ts/list", "category/list", "session_size"} <= set(frame.columns)
    lengths = frame["item_id/list"].map(len)
    assert (lengths == frame["session_size"]).all()
    assert (frame["ts/list"].map(len) == lengths).all()
    assert all((np.diff(t) >= 0).all() for t in frame["ts/list"])
    assert (frame["ts/first"] == frame["ts/list"].map(lambda t: t[0])).all()


# ---------------------------------------------------------------- errors

YOO = "1,2014-04-07T10:51:09.277Z,214536502,0\n"


@pytest.mark.parametrize(
    "text, column, message",
    [
        (YOO + "1,2014-13-99T10:51:09.277Z,214536500,0\n", "timestamp",
         "row 1 (line 2): unparsable timestamp '2014-13-99T10:51:09.277Z'"),
        (YOO + "1,2014-04-07T10:51:09.277Z,abc,0\n", "item_id", "row 1 (line 2): not an integer 'abc'"),
        (YOO + "1,2014-04-07T10:51:09.277Z,2.5,0\n", "item_id", "row 1 (line 2): not an integer '2.5'"),
        (YOO + YOO + ",2014-04-07T10:51:09.277Z,214536500,0\n", "session_id", "row 2 (line 3): null id"),
        (YOO + "1,2014-04-07T10:51:09.277Z,214536500\n", None, "Expected 4 columns, got 3"),
    ],
)
def test_yoochoose_errors_name_file_column_row(tmp_path, text, column, message):
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(text)
    with pytest.raises(ReaderError) as err:
        read_yoochoose(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and message in msg
    assert column is None or f"column '{column}'" in msg
    assert isinstance(err.value, InteractionError)


def test_drop_null_ids_option(tmp_path):
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(YOO + ",2014-04-07T10:51:09.277Z,214536500,0\n")
    assert read_yoochoose(path, drop_null_ids=True)["session_id"].tolist() == [1]


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty input (0 bytes)"),
        (lambda p: p.write_text("sessionId;userId;itemId;timeframe;eventdate\n"), "empty input (no data rows)"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_text("sessionId,userId,itemId,timeframe,eventdate\n1,NA,2,3,2016-05-09\n"),
         "missing column(s) ['sessionId', 'userId', 'itemId', 'timeframe', 'eventdate'] in the header"),
        (lambda p: p.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;2;3;2016-05-32\n"),
         "column 'eventdate' row 0 (line 2): unparsable timestamp '2016-05-32'"),
        (lambda p: p.write_text("sessionId;userId;itemId;timeframe;eventdate\n1;NA;2;-5;2016-05-09\n"),
         "column 'timeframe' row 0 (line 2): negative timeframe -5"),
    ],
)
def test_file_level_errors(tmp_path, write, message):
    path = tmp_path / "train-item-views.csv"
    write(path)
    with pytest.raises(ReaderError) as err:
        read_diginetica(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_rees46_errors(tmp_path):
    path = tmp_path / "2019-Oct.csv"
    write_rees46(path, n=50, seed=7)
    lines = path.read_text().split("\n")
    bad_time = lines[:3] + [lines[3].replace(" UTC", " CET", 1)] + lines[4:]
    path.write_text("\n".join(bad_time))
    with pytest.raises(ReaderError, match=r"column 'event_time' row 2 \(line 4\): unparsable timestamp"):
        read_rees46(path, event_types=None)
    fields = lines[2].split(",")
    fields[-1] = "not-a-uuid"
    path.write_text("\n".join(lines[:2] + [",".join(fields)] + lines[3:]))
    with pytest.raises(ReaderError, match=r"column 'user_session' row 1 \(line 3\): not a UUID 'not-a-uuid'"):
        read_rees46(path, event_types=None)
    with pytest.raises(ReaderError, match="no rows with event_type in \\['click'\\]"):
        read_rees46(path, event_types=("click",))


def test_movielens_unknown_layout(tmp_path):
    path = tmp_path / "ratings.txt"
    path.write_text("1 2 3 4\n")
    with pytest.raises(ReaderError, match="not a MovieLens ratings layout"):
        read_movielens(path)


def test_generic_errors(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"s": [1.5, 2.0], "i": [5, 6], "t": [1, 2]}).to_parquet(path)
    with pytest.raises(ReaderError, match="column 's': dtype double, expected integer ids"):
        read_generic(path, {"session_id": "s", "item_id": "i", "timestamp": "t"})
    with pytest.raises(ReaderError, match=r"missing column\(s\) \['ts'\]"):
        read_generic(path, {"session_id": "s", "item_id": "i", "timestamp": "ts"})
    with pytest.raises(ReaderError, match="must map 'user_id', 'item_id' and 'timestamp'"):
        read_generic(path, {"item_id": "i", "timestamp": "t"})
    csv = tmp_path / "x.csv"
    csv.write_text("u,i,t\n1,2,2014-04-07T10:51:09Z\n1,3,yesterday\n")
    with pytest.raises(ReaderError, match=r"column 't' row 1 \(line 3\): unparsable timestamp 'yesterday'"):
        read_generic(csv, {"user_id": "u", "item_id": "i", "timestamp": "t"})
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ReaderError, match="unreadable parquet"):
        read_generic(tmp_path / "junk.parquet", {"user_id": "u", "item_id": "i", "timestamp": "t"})


# ---------------------------------------------------------------- ETL config and CLI

GENERATED = {
    "yoochoose": lambda p: write_yoochoose(p, n=400, seed=8),
    "diginetica": lambda p: write_diginetica(p, n=400, seed=9),
    "rees46": lambda p: write_rees46(p, n=400, seed=10),
    "movielens": None,  # real ML-100k in u.data layout
    "generic": None,
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_example_configs_read_their_layout(tmp_path, name, ml100k_ratings):
    """configs/<format>.yaml, with its placeholder path pointed at a file in that layout."""
    from pathlib import Path

    from helpers import ROOT
    from seqrec.config import build, load_recipe
    from seqrec.preprocessing.pipeline import ETLConfig, read_interactions as etl_read

    section = load_recipe(ROOT / "configs" / f"{name}.yaml")["etl"]
    path = tmp_path / Path(section["source"]["path"]).name
    if name == "movielens":
        want = write_movielens(path, ml100k_ratings, "u.data")
    elif name == "generic":
        want = pd.DataFrame({"visit": [3, 3, 4], "sku": [10, 11, 10],
                             "event_time": ["2014-04-07T10:51:09Z", "2014-04-07T10:52:00Z",
                                            "2014-04-08T00:00:00Z"]})
        want.to_csv(path, index=False)
    else:
        want = GENERATED[name](path)
    section["source"]["path"] = str(path)
    frame = etl_read(build(ETLConfig, section))
    key = "user_id" if name == "movielens" else "session_id"  # the layout fixes the key
    assert list(frame.columns[:3]) == [key, "item_id", "timestamp"]  # then side columns
    views = (want["event_type"] == "view").sum() if name == "rees46" else len(want)
    assert len(frame) == views
    assert frame.dtypes.tolist()[:3] == [np.int64] * 3


def test_cli_preprocess_reports_bad_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "clicks.dat"
    bad.write_text(YOO + "1,2014-13-99T10:51:09.277Z,214536500,0\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"etl:\n  source:\n    format: yoochoose\n    path: {bad}\n"
                      f"  output_dir: {tmp_path / 'out'}\n")
    run = subprocess.run([sys.executable, "-m", "seqrec.cli", "preprocess", "--config", str(recipe)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"error: {bad}: column 'timestamp' row 1 (line 2): unparsable timestamp" in run.stderr
    assert "Traceback" not in run.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"clicks.dat", "r.yaml"}  # nothing half-written
