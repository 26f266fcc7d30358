"""RecBole atomic readers on byte-exact generated files and on the real MovieLens-100k that ships
in the recbole wheel; plus the exclude-unknowns rule of predefined splits on a hand-made frame."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recbole_files import (
    random_sequences, write_item_file, write_sequence_benchmark, write_text_file,
)
from seqrec.preprocessing.datasets import movielens_100k_dir, read_movielens_100k
from seqrec.preprocessing.filters import min_length_reason
from seqrec.preprocessing.predefined import FEW_KNOWN, UNKNOWN_ITEMS, UNKNOWN_TARGET, exclude_unknowns
from seqrec.preprocessing.readers import (
    ReaderError, read_interactions, read_recbole, read_recbole_items,
)


def as_sequences(frame: pd.DataFrame, key="user_id") -> dict[int, list[int]]:
    assert (frame.groupby(key)["timestamp"].diff().dropna() > 0).all()  # positions, in order
    return {int(k): g["item_id"].tolist() for k, g in frame.groupby(key, sort=True)}


@pytest.mark.parametrize("max_hist", [50, 4])  # 4: the file caps histories, rows still rebuild
def test_sequence_benchmark_files_rebuild_each_sequence(tmp_path, max_hist):
    want = write_sequence_benchmark(tmp_path, "bench", random_sequences(40, 30, seed=max_hist),
                                    max_hist=max_hist)
    for split in ("train", "valid", "test"):
        got = read_recbole(tmp_path / f"bench.{split}.inter")
        assert got.dtypes.tolist() == [np.int64] * 3
        assert as_sequences(got) == want[split], split


def test_sequence_rows_that_are_not_prefixes_are_refused(tmp_path):
    path = tmp_path / "x.train.inter"
    path.write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n"
                    "7\t1 2\t3\n7\t1\t2\n8\t4\t5\n7\t1 2 9\t4\n")
    with pytest.raises(ReaderError, match=r"row 3 \(line 5\): rows of 7 are not prefixes of one "
                                          r"sequence: line 5 does not extend line 2 by its target 3"):
        read_recbole(path)


def test_interaction_file_with_side_fields(tmp_path):
    path = tmp_path / "shop.inter"
    path.write_text("session_id:token\titem_id:token\tprice:float\tbrand:token\ttimestamp:float\n"
                    "5\t11\t2.5\tacme\t1396867869.7\n5\t12\t\t\t1396867870\n")
    got = read_interactions({"format": "recbole", "path": str(path),
                             "options": {"key": "session_id"}})
    assert got["session_id"].tolist() == [5, 5] and got["item_id"].tolist() == [11, 12]
    assert got["timestamp"].tolist() == [1396867869, 1396867870]  # floored seconds
    assert got["price"].tolist()[0] == 2.5 and np.isnan(got["price"].tolist()[1])
    assert got["brand"].astype(object).tolist()[0] == "acme" and got["brand"].isna().tolist()[1]
    with pytest.raises(ReaderError, match=r"missing field\(s\) \['user_id'\]"):
        read_recbole(path)


def test_item_and_text_files(tmp_path):
    texts = write_text_file(tmp_path / "bench.text", 25, seed=1)
    table = read_recbole_items(tmp_path / "bench.text")
    assert table["item_id"].tolist() == list(texts)
    assert [" ".join(words) for words in table["text"]] == list(texts.values())
    want = write_item_file(tmp_path / "bench.item", 25, seed=2)
    table = read_recbole_items(tmp_path / "bench.item")
    assert table["item_id"].tolist() == want["item_id"]
    np.testing.assert_allclose(table["price"].to_numpy(), want["price"])
    assert table["brand"].astype(object).where(table["brand"].notna(), "").tolist() == want["brand"]
    assert [list(c) for c in table["categories"]] == want["categories"]


@pytest.mark.parametrize("text,message", [
    ("item_id\ttext\n1\ta\n", "header cell 'item_id' is not `name:type`"),
    ("item_id:token\ttext:token_seq\n1\ta\n1\tb\n",
     r"column 'item_id' row 1 \(line 3\): item 1 listed twice"),
    ("item_id:token\ttext:token_seq\nB00X\ta\n",
     r"column 'item_id' row 0 \(line 2\): not an integer token 'B00X'"),
])
def test_item_file_errors(tmp_path, text, message):
    path = tmp_path / "bad.text"
    path.write_text(text)
    with pytest.raises(ReaderError, match=message):
        read_recbole_items(path)


def test_real_movielens_100k_atomic_files():
    folder = movielens_100k_dir()
    got = read_recbole(folder / "ml-100k.inter")
    want = read_movielens_100k()
    assert len(got) == 100_000
    for col in ("user_id", "item_id", "timestamp"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    np.testing.assert_array_equal(got["rating"].to_numpy(), want["rating"].to_numpy())
    items = read_recbole_items(folder / "ml-100k.item")
    assert len(items) == 1682 and items["item_id"].is_unique
    first = items.iloc[0]
    assert " ".join(first["movie_title"]) == "Toy Story"
    assert list(first["class"]) == ["Animation", "Children's", "Comedy"]


def test_exclude_unknowns_counts_each_reason():
    # session 1: target known, one unknown history item -> kept, 1 item dropped
    # session 2: target unknown -> skipped; session 3: one known item left -> skipped
    # session 4: its last row by time is the target (rows arrive out of order)
    frame = pd.DataFrame({"s": [1, 1, 1, 2, 2, 3, 3, 4, 4, 4],
                          "item": [10, 99, 11, 10, 98, 97, 12, 13, 10, 11],
                          "t": [1, 2, 3, 1, 2, 1, 2, 9, 1, 5]})
    known = frame["item"].to_numpy() < 90
    kept, skipped, dropped = exclude_unknowns(frame, known, "s", "t")
    assert skipped == {UNKNOWN_TARGET: 1, FEW_KNOWN: 1}
    assert dropped == {UNKNOWN_ITEMS: 1}
    assert kept["s"].tolist() == [1, 1, 4, 4, 4]
    assert kept.sort_values(["s", "t"])["item"].tolist() == [10, 11, 10, 11, 13]


def test_min_length_reason_says_when_a_split_raises_it():
    assert min_length_reason(2, 3, "leave-last-out needs 3") == (
        3, "shorter than 3 items (min_len=2 raised: leave-last-out needs 3)")
    assert min_length_reason(4, 3, "x") == (4, "shorter than min_len=4")
