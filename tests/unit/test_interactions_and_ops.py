"""Interaction checks and the GroupSequences operator on small frames (no workflow is fitted)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqrec.preprocessing.interactions import InteractionError, validate_interactions
from seqrec.preprocessing.ops import GroupSequences
from seqrec.preprocessing.pipeline import ETLConfig, run_etl


def test_group_sequences_matches_pandas_groupby():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"user_id": rng.integers(0, 50, 2000), "item_id": rng.integers(0, 300, 2000),
         "timestamp": rng.integers(0, 100, 2000)}
    )
    from merlin.dag import ColumnSelector

    out = GroupSequences("user_id", "timestamp", max_len=7).transform(
        ColumnSelector(["user_id", "item_id", "timestamp"]), frame
    )
    expected = (
        frame.reset_index().sort_values(["user_id", "timestamp", "index"], kind="stable")
        .groupby("user_id")["item_id"].apply(lambda s: list(s)[-7:])
    )
    assert list(out["user_id"]) == list(expected.index)
    for got, want in zip(out["item_id-list"], expected):
        assert list(got) == want


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"user_id": [1], "item_id": [2]}), "missing column(s) ['timestamp']"),
        (pd.DataFrame({"user_id": [1, None], "item_id": [2, 3], "timestamp": [1, 2]}), "'user_id' has 1 null"),
        (pd.DataFrame({"user_id": [1], "item_id": ["a"], "timestamp": [1]}), "'item_id' has dtype object"),
        (pd.DataFrame({"user_id": [1], "item_id": [2.5], "timestamp": [1]}), "'item_id' holds non-integer"),
        (pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []}), "empty input"),
    ],
)
def test_bad_interactions_name_the_problem(frame, message):
    with pytest.raises(InteractionError) as err:
        validate_interactions(frame, source="clicks.csv")
    assert "clicks.csv" in str(err.value) and message in str(err.value)


def test_etl_names_a_missing_key_column_and_writes_nothing(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    with pytest.raises(InteractionError, match=r"missing column\(s\) \['session_id'\]"):
        run_etl(ETLConfig(output_dir=str(tmp_path / "out"), key="session_id"), interactions=frame)
    assert list(tmp_path.iterdir()) == []
