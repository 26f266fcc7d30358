"""The fast paths of the workflow equal what they replace: key_time_order == np.lexsort, and
SortedCategorify's codes == stock Categorify's on the same fitted vocabulary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from merlin.io import Dataset
import nvtabular as nvt
from nvtabular import ops

from seqrec.preprocessing.encoding import IntegerVocabulary, SortedCategorify
from seqrec.preprocessing.ordering import key_time_order


@pytest.mark.parametrize("kind", ["compact", "wide", "float-times", "sorted", "one"])
def test_key_time_order_is_a_stable_lexsort(kind):
    rng = np.random.default_rng(len(kind))
    n = 1 if kind == "one" else 5000
    keys, times = rng.integers(0, 300, n), rng.integers(0, 50, n)  # many ties
    if kind == "wide":  # ids spread over int64: ranked through their uniques
        keys = keys * (2 ** 54) - 2 ** 62
        times = times * (2 ** 50)
    if kind == "float-times":
        times = times / 7.0
    if kind == "sorted":
        order = np.lexsort((times, keys))
        keys, times = keys[order], times[order]
    np.testing.assert_array_equal(key_time_order(keys, times), np.lexsort((times, keys)))


def fitted(tmp_path, frame, cls, **kw):
    workflow = nvt.Workflow(["item", "cat"] >> cls(out_path=str(tmp_path / cls.__name__), **kw))
    workflow.fit(Dataset(frame, cpu=True, npartitions=3))
    return workflow


@pytest.mark.parametrize("freq_threshold", [0, 3])
def test_sorted_categorify_codes_equal_stock_categorify(tmp_path, freq_threshold):
    rng = np.random.default_rng(freq_threshold)
    train = pd.DataFrame({"item": rng.zipf(1.3, 4000) % 900 + 5,  # compact: the table path
                          "cat": rng.integers(-2 ** 60, 2 ** 60, 4000) // 7 * 7})  # wide: search
    train.loc[:20, "cat"] = train.loc[0, "cat"]
    stock = fitted(tmp_path, train, ops.Categorify, freq_threshold=freq_threshold)
    ours = fitted(tmp_path, train, SortedCategorify, freq_threshold=freq_threshold)
    unseen = pd.DataFrame({"item": np.r_[train["item"].to_numpy()[:500], [-1, 0, 10 ** 6, 2 ** 62]],
                           "cat": np.r_[train["cat"].to_numpy()[:500], [-1, 0, 3, 2 ** 62]]})
    for frame in (train, unseen):
        want, got = stock.transform(frame), ours.transform(frame)
        for col in ("item", "cat"):
            np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    assert (ours.transform(unseen)["item"].to_numpy()[-4:] == 2).all()  # unknown -> OOV


def test_non_integer_columns_keep_the_stock_transform(tmp_path):
    frame = pd.DataFrame({"item": ["a", "b", "a", None], "cat": [1.0, np.nan, 2.0, 1.0]})
    stock, ours = fitted(tmp_path, frame, ops.Categorify), fitted(tmp_path, frame, SortedCategorify)
    pd.testing.assert_frame_equal(ours.transform(frame), stock.transform(frame))


def test_vocabulary_without_ids_encodes_everything_as_oov():
    vocab = IntegerVocabulary(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert vocab.encode(np.array([1, 2, 3])).tolist() == [2, 2, 2]


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint16", "wide"])
@pytest.mark.parametrize("freq_threshold", [0, 3])
def test_fit_without_dask_writes_the_stock_vocabulary_files(tmp_path, dtype, freq_threshold):
    """The in-memory fit (counts in numpy) writes byte-equal unique/meta files to the stock
    Dask fit, ties in count ordered as the stock fit orders them; then the codes are equal."""
    from seqrec.preprocessing.workflow import fit_workflow

    rng = np.random.default_rng(7)
    items = rng.zipf(1.3, 6000) % 700 + 5  # many equal counts among the rare ids
    items = items * (2 ** 50) - 2 ** 61 if dtype == "wide" else items.astype(dtype)
    frame = pd.DataFrame({"item": items, "cat": rng.integers(0, 40, 6000).astype(np.int32)})
    stock = fitted(tmp_path / "stock", frame, SortedCategorify, freq_threshold=freq_threshold)
    ours = nvt.Workflow(["item", "cat"] >> SortedCategorify(out_path=str(tmp_path / "ours"),
                                                            freq_threshold=freq_threshold))
    fit_workflow(ours, frame)
    for name in ("unique.item.parquet", "meta.item.parquet", "unique.cat.parquet", "meta.cat.parquet"):
        want = pd.read_parquet(tmp_path / "stock" / "SortedCategorify" / "categories" / name)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ours" / "categories" / name), want)
    pd.testing.assert_frame_equal(ours.transform(frame), stock.transform(frame))
    assert ours.output_schema.column_names == stock.output_schema.column_names


def test_lean_executor_equals_the_stock_executor_on_every_operator(tmp_path):
    """Encoding, normalising, log, time features, item age, repeat removal and grouping, fitted
    and applied without Dask or frame copies: the same columns and values as merlin's own fit
    (three Dask partitions) and transform. Normalised floats may differ in the last bits (the
    stock mean/std sums over partitions in another order)."""
    from merlin.io import Dataset as MerlinDataset
    from seqrec.preprocessing.workflow import build_workflow, fit_workflow, transform_frame

    rng = np.random.default_rng(1)
    n = 20_000
    frame = pd.DataFrame({"user_id": rng.integers(0, 900, n), "item_id": rng.zipf(1.2, n) % 800,
                          "timestamp": rng.integers(0, 10 ** 6, n),
                          "category": rng.integers(0, 30, n).astype(np.int32),
                          "price": rng.exponential(4, n).astype(np.float32), "c2": rng.normal(size=n)},
                         index=np.arange(n) * 3)  # not a RangeIndex: rows align by position
    options = dict(max_len=20, freq_threshold=2, categorical=("category",), continuous=("price", "c2"),
                   log_continuous=("price",), time_features=True, item_age=True, remove_repeats=True)
    stock = build_workflow(tmp_path / "stock", **options)
    stock.fit(MerlinDataset(frame, cpu=True, npartitions=3))
    ours = fit_workflow(build_workflow(tmp_path / "ours", **options), frame)
    want, got = stock.transform(frame), transform_frame(ours, frame)
    assert list(got.columns) == list(want.columns) and (got.dtypes == want.dtypes).all()
    for col in want.columns:
        if col in ("price-list", "c2-list"):
            np.testing.assert_allclose(np.concatenate(got[col].tolist()),
                                       np.concatenate(want[col].tolist()), rtol=1e-6, atol=1e-6)
        else:
            assert got[col].equals(want[col]), col
