"""The NVTabular workflow fitted and run on real MovieLens-100k rows and on synthetic sessions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqrec.preprocessing.pipeline import SPLITS, ETLConfig, run_etl
from seqrec.preprocessing.workflow import (
    FIRST_ITEM_ID,
    ITEM_LIST,
    encode_sessions,
    item_vocabulary,
    load_workflow,
)

from helpers import HISTORY_CAP

pytestmark = pytest.mark.slow


def split(etl, name):
    return pd.read_parquet(Path(etl.output_dir) / f"{name}.parquet")


def test_every_user_once_per_split(etl, ml100k):
    users = set(ml100k["user_id"].unique())
    for name in SPLITS:
        frame = split(etl, name)
        assert frame["user_id"].is_unique
        assert set(frame["user_id"]) == users  # every ML-100k user has >= 20 ratings


def test_lists_time_sorted_and_truncated(etl):
    test = split(etl, "test")
    times = test["timestamp-list"]
    assert all((np.diff(t) >= 0).all() for t in times)
    lengths = test["item_id-list"].map(len)
    assert lengths.max() == HISTORY_CAP
    assert (lengths == test["seq_length"]).all()
    for name in SPLITS:
        assert split(etl, name)["item_id-list"].map(len).max() <= HISTORY_CAP


def test_lists_are_the_most_recent_items_in_original_ids(etl, ml100k):
    """Decoding the encoded lists gives back each user's last HISTORY_CAP items, in time order."""
    vocab = item_vocabulary(load_workflow(Path(etl.output_dir) / "workflow"))
    test = split(etl, "test").set_index("user_id")
    expected = (
        ml100k.reset_index()
        .sort_values(["user_id", "timestamp", "index"], kind="stable")
        .groupby("user_id")["item_id"]
        .apply(lambda s: s.to_numpy()[-HISTORY_CAP:])
    )
    for user in expected.index[:200]:
        np.testing.assert_array_equal(vocab[test.loc[user, ITEM_LIST]], expected[user])


def test_test_target_never_in_train_input(etl):
    train = split(etl, "train").set_index("user_id")
    valid = split(etl, "valid").set_index("user_id")
    test = split(etl, "test").set_index("user_id")
    for user in test.index:
        full, v, t = test.loc[user, ITEM_LIST], valid.loc[user, ITEM_LIST], train.loc[user, ITEM_LIST]
        np.testing.assert_array_equal(v, full[:-1])
        np.testing.assert_array_equal(t, full[:-2])
        assert full[-1] not in set(t)  # ML-100k has one rating per (user, item)
        assert full[-2] not in set(t)


def test_saved_workflow_encodes_raw_requests_like_training(etl, ml100k):
    workflow = load_workflow(Path(etl.output_dir) / "workflow")
    vocab = item_vocabulary(workflow)
    assert (vocab >= 0).sum() == ml100k["item_id"].nunique() == etl.num_items
    raw = [np.array([50, 172, 133]), np.array([999_999, 50]), np.array([], dtype=np.int64), np.array([-3])]
    encoded = encode_sessions(workflow, raw)
    np.testing.assert_array_equal(vocab[encoded[0]], [50, 172, 133])
    np.testing.assert_array_equal(vocab[encoded[1]], [50])  # unknown ids are dropped
    assert encoded[2].size == 0 and encoded[3].size == 0
    assert all((e >= FIRST_ITEM_ID).all() for e in encoded)
    # a request longer than the workflow's history_cap keeps its most recent items
    long = np.tile(vocab[FIRST_ITEM_ID:FIRST_ITEM_ID + 10], 20)
    assert len(encode_sessions(workflow, [long])[0]) == HISTORY_CAP


def test_failed_etl_leaves_nothing_behind(tmp_path, monkeypatch):
    import seqrec.preprocessing.pipeline as pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "leave_last_out", boom)
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    with pytest.raises(RuntimeError, match="disk full"):
        run_etl(ETLConfig(output_dir=str(tmp_path / "out")), interactions=frame)
    assert list(tmp_path.iterdir()) == []


def synthetic_sessions(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    sess = rng.integers(0, 3000, n)
    return pd.DataFrame({
        "session_id": sess,
        "item_id": rng.zipf(1.3, n) % 500,
        "timestamp": sess * 60 + 1_396_000_000 + rng.integers(0, 600, n),
        "category": rng.integers(0, 20, n),
        "price": rng.exponential(50, n),
    })


@pytest.fixture(scope="module")
def session_etl(tmp_path_factory):
    frame = synthetic_sessions()
    cfg = ETLConfig(output_dir=str(tmp_path_factory.mktemp("sessions") / "out"), key="session_id",
                    split="time-window", min_len=2, max_len=20, remove_repeats=True,
                    categorical=["category"], log_continuous=["price"], max_session_len=12)
    return frame, cfg, run_etl(cfg, interactions=frame)


def test_saved_workflow_schema_tags_every_column(session_etl):
    """The schema saved with the workflow says what each column is (merlin tags), which is how
    training finds the item id, categorical and continuous lists."""
    from merlin.schema import Tags

    _, cfg, _ = session_etl
    schema = load_workflow(Path(cfg.output_dir) / "workflow").output_schema
    tags = {c.name: set(c.tags) for c in schema}
    assert {Tags.ITEM, Tags.ID, Tags.CATEGORICAL, Tags.LIST, Tags.SEQUENCE} <= tags[ITEM_LIST]
    assert {Tags.CATEGORICAL, Tags.LIST} <= tags["category-list"] and Tags.ITEM not in tags["category-list"]
    assert {Tags.CONTINUOUS, Tags.LIST} <= tags["price-list"]
    assert {Tags.SESSION, Tags.ID} <= tags["session_id"]  # SESSION_ID, stored as its parts
    assert tags["timestamp-first"] == {Tags.TIME} and tags["seq_length"] == set()
    assert schema.select_by_tag(Tags.ITEM_ID).column_names == [ITEM_LIST]
    assert all(schema[c].is_list for c in schema.select_by_tag(Tags.LIST).column_names)


def test_time_window_splits_keep_sessions_whole_and_ordered(session_etl):
    frame, cfg, result = session_etl
    assert len(result.windows) == 3
    seen = set()
    for window in result.windows:
        parts = {s: pd.read_parquet(Path(cfg.output_dir) / window / f"{s}.parquet") for s in SPLITS}
        for part in parts.values():
            ids = set(part["session_id"])
            assert not ids & seen  # a session lives in exactly one window and split
            seen |= ids
            day = pd.to_datetime(part["timestamp-first"], unit="s").dt.strftime("%Y-%m-%d")
            assert (day == window).all()
        # within a window the evaluated sessions start no earlier than the training ones
        assert parts["train"]["timestamp-first"].max() <= parts["valid"]["timestamp-first"].min()
        assert parts["valid"]["timestamp-first"].max() <= parts["test"]["timestamp-first"].min()
        assert 0.05 < len(parts["test"]) / sum(len(p) for p in parts.values()) < 0.15


def test_session_lists_repeats_lengths_and_side_features(session_etl):
    frame, cfg, result = session_etl
    window = result.windows[0]
    train = pd.read_parquet(Path(cfg.output_dir) / window / "train.parquet")
    vocab = item_vocabulary(load_workflow(Path(cfg.output_dir) / "workflow"))
    raw = frame.reset_index().sort_values(["session_id", "timestamp", "index"], kind="stable")
    for _, row in train.head(100).iterrows():
        items = raw.loc[raw.session_id == row.session_id, "item_id"].to_numpy()
        assert len(items) <= cfg.max_session_len
        deduped = items[np.r_[True, items[1:] != items[:-1]]]  # consecutive repeats removed
        np.testing.assert_array_equal(vocab[row["item_id-list"]], deduped[-cfg.max_len:])
        assert len(row["category-list"]) == len(row["price-list"]) == row["seq_length"] >= cfg.min_len
    assert abs(np.concatenate(train["price-list"].to_numpy()).mean()) < 0.3  # normalised
    assert result.dropped_sequences > 0  # sessions longer than max_session_len or too short


def test_frequency_threshold_maps_rare_items_to_oov(tmp_path, ml100k):
    counts = ml100k["item_id"].value_counts()
    run_etl(ETLConfig(output_dir=str(tmp_path / "o"), freq_threshold=5), interactions=ml100k)
    vocab = item_vocabulary(load_workflow(tmp_path / "o" / "workflow"))
    assert set(vocab[vocab >= 0]) == set(counts[counts >= 5].index)


def test_time_features_follow_each_sessions_order(tmp_path):
    # 2024-01-01 was a Monday; session 7's rows arrive out of order on purpose
    monday = 1_704_067_200
    frame = pd.DataFrame({
        "session_id": [7, 7, 8, 7, 8],
        "item_id": [1, 2, 3, 4, 5],
        "timestamp": [monday + 3600 * 6 + 30, monday + 3600 * 6, monday + 86400 * 2, monday + 3600 * 18, monday + 86400 * 2 + 5],
    })
    cfg = ETLConfig(output_dir=str(tmp_path / "o"), key="session_id", split="time-window",
                    min_len=1, time_features=True, valid_fraction=0, test_fraction=0)
    result = run_etl(cfg, interactions=frame)
    rows = pd.concat(pd.read_parquet(tmp_path / "o" / w / "train.parquet") for w in result.windows)
    s7 = rows.set_index("session_id").loc[7]
    np.testing.assert_allclose(s7["timestamp-since_prev-list"], [0, 30, 3600 * 12 - 30])
    np.testing.assert_allclose(s7["timestamp-hour_sin-list"], np.sin(2 * np.pi * np.array([6, 6 + 30 / 3600, 18]) / 24), atol=1e-5)
    np.testing.assert_allclose(s7["timestamp-weekday_sin-list"], 0, atol=1e-6)  # Monday = 0
    s8 = rows.set_index("session_id").loc[8]
    np.testing.assert_allclose(s8["timestamp-weekday_sin-list"], np.sin(2 * np.pi * 2 / 7), atol=1e-6)
    assert list(s8["timestamp-day_index-list"]) == [monday // 86400 + 2] * 2


def test_item_age_is_seconds_since_the_items_first_interaction(tmp_path, ml100k):
    """Fitted in memory on real rows, and through Dask over 10 partitions (the per-item minimum
    must merge across them) to the same ages; an item the fit never saw is age 0 at transform
    time."""
    from seqrec.preprocessing.workflow import as_dataset, build_workflow, fit_workflow, transform_frame

    workflow = build_workflow(tmp_path / "cats", max_len=None, item_age=True)
    fit_workflow(workflow, ml100k)
    streamed = build_workflow(tmp_path / "cats-dask", max_len=None, item_age=True)
    streamed.fit(as_dataset(ml100k, npartitions=10))
    pd.testing.assert_frame_equal(transform_frame(streamed, ml100k), transform_frame(workflow, ml100k))
    grouped = transform_frame(workflow, ml100k).set_index("user_id")
    rows = ml100k.sort_values(["user_id", "timestamp"], kind="stable")
    want = rows["timestamp"] - rows.groupby("item_id")["timestamp"].transform("min")
    got = np.concatenate(grouped.loc[rows["user_id"].unique(), "timestamp-item_age-list"].tolist())
    np.testing.assert_array_equal(got, want.to_numpy().astype(np.float32))
    assert got.min() == 0 and got.max() > 86400 * 30  # real ages span months
    new = pd.DataFrame({"user_id": [1, 1], "item_id": [242, 10**9], "timestamp": [10**10, 10**10 + 1]})
    first_242 = ml100k.loc[ml100k["item_id"] == 242, "timestamp"].min()
    ages = transform_frame(workflow, new)["timestamp-item_age-list"].tolist()[0]
    np.testing.assert_allclose(ages, [10**10 - first_242, 0])
    # the served ensemble computes it from raw ids and times with the fitted arrays, like the op
    from seqrec.model_repository.side_export import build_side_lookup
    from seqrec.training.features import SideFeatureConfig

    side = build_side_lookup(workflow, SideFeatureConfig(continuous=["timestamp-item_age"]))
    assert side.inputs == [("timestamp", "INT64")]
    lengths = rows.groupby("user_id", sort=False).size().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    _, served = side.encode({"timestamp": rows["timestamp"].to_numpy()}, offsets, rows["item_id"].to_numpy())
    np.testing.assert_array_equal(served[:, 0], got)


def test_summary_counts_dropped_sequences_by_reason(session_etl):
    frame, cfg, result = session_etl
    assert result.sequences_in == frame["session_id"].nunique()
    assert sum(result.sequences.values()) + result.dropped_sequences == result.sequences_in
    lengths = frame["session_id"].value_counts()
    assert result.dropped_reasons["longer than max_session_len=12"] == int((lengths > 12).sum())
