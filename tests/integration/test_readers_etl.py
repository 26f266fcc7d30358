"""A generated raw YOOCHOOSE file through the whole ETL (reader -> NVTabular workflow -> splits)."""
from __future__ import annotations

import pandas as pd
import pytest

from generators import write_yoochoose

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
