"""Raw files through the whole ETL (reader -> NVTabular workflow -> splits): a generated
YOOCHOOSE file, and real MovieLens-100k as a headerless u.data through `seqrec preprocess`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from generators import write_movielens, write_yoochoose

pytestmark = pytest.mark.slow


def test_etl_on_generated_sessions(tmp_path):
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    want = write_yoochoose(tmp_path / "clicks.dat", n=2000, seed=11)
    source = {"format": "yoochoose", "path": str(tmp_path / "clicks.dat")}
    result = run_etl(ETLConfig(output_dir=str(tmp_path / "out"), source=source, min_len=3,
                               categorical=["category"]))  # a side column of the layout
    assert result.rows_in == 2000
    sizes = want.groupby("session_id").size()
    assert result.sequences["test"] == (sizes >= 3).sum()
    test = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert set(test["session_id"]) == set(sizes[sizes >= 3].index)
    assert (test["category-list"].map(len) == test["item_id-list"].map(len)).all()
    with pytest.raises(ValueError, match="key 'user_id' does not match the yoochoose source"):
        ETLConfig(source=source, key="user_id")


def test_headerless_movielens_100k_through_the_cli(tmp_path, etl, ml100k, capsys):
    """configs/ml-100k-headerless.yaml on the real ratings written as a gzipped u.data (no
    header, tab separated, columns by position): the sequences of the recbole-file path."""
    from helpers import HISTORY_CAP, MAX_LEN, ROOT
    from seqrec.cli import main
    from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow

    raw = tmp_path / "u.data.gz"
    write_movielens(raw, ml100k.assign(rating=ml100k["rating"].astype("int64")), "u.data")
    recipe = yaml.safe_load((ROOT / "configs" / "ml-100k-headerless.yaml").read_text())
    recipe["etl"]["source"]["path"] = str(raw)
    recipe["etl"].update(output_dir=str(tmp_path / "data"), max_len=MAX_LEN, history_cap=HISTORY_CAP)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["preprocess", "--config", str(tmp_path / "recipe.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "rows in        100,000 " in printed
    assert "sequences out  train 943, valid 943, test 943" in printed
    headered = Path(etl.output_dir)
    for split in ("train", "valid", "test"):
        got, want = pq.read_table(tmp_path / "data" / f"{split}.parquet"), pq.read_table(headered / f"{split}.parquet")
        assert got.equals(want), split
    vocab = item_vocabulary(load_workflow(tmp_path / "data" / "workflow"))
    np.testing.assert_array_equal(vocab, item_vocabulary(load_workflow(headered / "workflow")))
    # and on their own: a user's last items in time order, ties in file order
    ratings = pd.read_csv(raw, sep="\t", header=None, names=["user", "item", "rating", "time"])
    test = pd.read_parquet(tmp_path / "data" / "test.parquet").set_index("user_id")
    for user in (1, 405, 943):
        items = ratings[ratings["user"] == user].sort_values("time", kind="stable")["item"]
        np.testing.assert_array_equal(vocab[test.loc[user, ITEM_LIST]], items.to_numpy()[-HISTORY_CAP:])
