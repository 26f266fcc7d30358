"""The generic reader on byte-exact headerless text in every separator (plain and gzipped), and
its error messages: the real row and value of a bad timestamp, an empty folder said as such."""
from __future__ import annotations

import bz2
import gzip

import numpy as np
import pandas as pd
import pytest

from seqrec.preprocessing.readers import ReaderError, read_generic, read_interactions


def ratings(n=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": rng.integers(1, 60, n), "item_id": rng.integers(1, 900, n),
                         "rating": rng.integers(1, 6, n),
                         "timestamp": rng.integers(874_724_710, 893_286_638, n)})


def write(path, frame, sep, pad=False):
    cells = [frame[c].astype(str) for c in frame.columns]
    if pad:  # hand-aligned dumps: runs of spaces, a leading blank, tabs mixed in
        cells = [c.str.rjust(10) for c in cells]
        sep = " \t "
    line = cells[0]
    for c in cells[1:]:
        line = line + sep + c
    data = ("\n".join(line) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".bz2":
        data = bz2.compress(data)
    path.write_bytes(data)


POSITIONS = {"user_id": 0, "item_id": 1, "timestamp": 3, "rating": 2}


@pytest.mark.parametrize("sep,name", [("\t", "u.data"), ("::", "ratings.dat"), (";", "r.csv"),
                                      ("whitespace", "r.txt"), (",", "r.csv.gz"),
                                      ("::", "ratings.dat.gz"), ("whitespace", "r.txt.bz2")])
def test_headerless_any_separator_by_position(tmp_path, sep, name):
    want = ratings(seed=len(name))
    path = tmp_path / name
    write(path, want, sep, pad=sep == "whitespace")
    got = read_generic(path, POSITIONS, sep=sep, header=False)
    assert list(got.columns) == ["user_id", "item_id", "timestamp", "rating"]
    for col in got.columns:
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)


def test_headerless_through_the_dispatcher_and_header_files_still_read(tmp_path):
    want = ratings(seed=5)
    write(tmp_path / "r.dat", want, "::")
    got = read_interactions({"format": "generic", "path": str(tmp_path / "r.dat"),
                             "columns": {"user_id": 0, "item_id": 1, "timestamp": 3},
                             "options": {"sep": "::", "header": False}})
    np.testing.assert_array_equal(got["item_id"].to_numpy(), want["item_id"].to_numpy())
    with_header = tmp_path / "h.tsv"
    with_header.write_text("u\ti\tr\tt\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in want.itertuples(index=False)))
    got = read_generic(with_header, {"user_id": "u", "item_id": "i", "timestamp": "t"}, sep="\t")
    np.testing.assert_array_equal(got["timestamp"].to_numpy(), want["timestamp"].to_numpy())


def test_headerless_errors_name_position_row_and_line(tmp_path):
    path = tmp_path / "r.dat"
    path.write_text("1::10::5::874724710\n1::x7::3::874724711\n")
    with pytest.raises(ReaderError, match=r"column '1' row 1 \(line 2\): not an integer 'x7'"):
        read_generic(path, POSITIONS, sep="::", header=False)
    with pytest.raises(ReaderError, match=r"position\(s\) \{'timestamp': 9\} outside the 4 "
                                          r"'::'-separated field\(s\)"):
        read_generic(path, {"user_id": 0, "item_id": 1, "timestamp": 9}, sep="::", header=False)
    with pytest.raises(ReaderError, match=r"columns \['item_id', 'timestamp', 'user_id'\] are "
                                          r"given by position; set header: false"):
        read_generic(path, {"user_id": 0, "item_id": 1, "timestamp": 3}, sep="::")
    with pytest.raises(ReaderError, match=r"header: false, so columns are 0-based positions; "
                                          r"got names for \['item_id'\]"):
        read_generic(path, {"user_id": 0, "item_id": "movie", "timestamp": 3}, sep="::",
                     header=False)


def test_bad_timestamp_among_epoch_numbers_names_its_row_and_value(tmp_path):
    path = tmp_path / "events.csv"
    lines = [f"1,{i},{1011 + i}" for i in range(30)]
    lines[25] = "1,25,notatime"
    path.write_text("u,i,t\n" + "\n".join(lines) + "\n")
    with pytest.raises(ReaderError) as err:
        read_generic(path, {"user_id": "u", "item_id": "i", "timestamp": "t"})
    assert str(err.value) == (f"{path}: column 't' row 25 (line 27): "
                              "not an epoch number 'notatime'")


def test_mostly_dates_report_the_odd_number_out(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("u,i,t\n1,1,2014-04-07T10:51:09Z\n1,2,2014-04-07T10:52:09Z\n1,3,1011\n")
    with pytest.raises(ReaderError, match=r"row 2 \(line 4\): unparsable timestamp '1011'"):
        read_generic(path, {"user_id": "u", "item_id": "i", "timestamp": "t"})


def test_empty_folder_is_said_to_be_empty(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "_SUCCESS").write_text("")  # markers are not data
    with pytest.raises(ReaderError) as err:
        read_generic(tmp_path / "parts", {"user_id": "u", "item_id": "i", "timestamp": "t"})
    assert str(err.value) == f"{tmp_path / 'parts'}: empty folder: no data files in it"
