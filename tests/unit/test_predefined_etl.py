"""Predefined train/valid/test splits through the real NVTabular workflow: vocabulary from train
only, unknown items excluded and counted, the layout training reads, every drop in the summary."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_files import random_sequences, write_sequence_benchmark
from seqrec.preprocessing.interactions import InteractionError
from seqrec.preprocessing.pipeline import ETLConfig, run_etl
from seqrec.preprocessing.workflow import OOV_ID, item_vocabulary, load_workflow

SPLITS = ("train", "valid", "test")


def expected_after_exclusion(want: dict, min_len: int = 2):
    """Cornac's exclude_unknowns, written plainly: {split: {user: kept items}} and the counts."""
    vocab = {i for seq in want["train"].values() for i in seq}
    out, counts = {"train": dict(want["train"])}, {}
    for split in ("valid", "test"):
        kept, unknown_target, few, dropped = {}, 0, 0, 0
        for user, seq in want[split].items():
            if seq[-1] not in vocab:
                unknown_target += 1
                continue
            known = [i for i in seq if i in vocab]
            if len(known) < min_len:
                few += 1
                continue
            dropped += len(seq) - len(known)
            kept[user] = known
        out[split] = kept
        counts[split] = (unknown_target, few, dropped)
    return vocab, out, counts


def decoded(path: Path, vocabulary: np.ndarray) -> dict[int, list[int]]:
    frame = pd.read_parquet(path)
    return {int(u): vocabulary[np.asarray(items)].tolist()
            for u, items in zip(frame["user_id"], frame["item_id-list"])}


def sources(folder: Path, name: str) -> dict:
    return {s: {"format": "recbole", "path": str(folder / f"{name}.{s}.inter")} for s in SPLITS}


def test_recbole_benchmark_as_predefined_split(tmp_path):
    # 600 items for ~1,000 interactions: some valid/test targets never occur in train
    want = write_sequence_benchmark(tmp_path / "raw", "bench",
                                    random_sequences(150, 600, seed=3, max_len=10))
    vocab, kept, counts = expected_after_exclusion(want)
    out = tmp_path / "data"
    result = run_etl(ETLConfig(output_dir=str(out), split="predefined", min_len=2, max_len=50,
                               sources=sources(tmp_path / "raw", "bench")), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "etl_summary.json", "test.parquet", "train.parquet", "valid.parquet", "workflow"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    vocabulary = item_vocabulary(load_workflow(out / "workflow"))
    assert set(vocabulary[vocabulary >= 0].tolist()) == vocab  # fitted on the training split only
    for split in SPLITS:
        assert decoded(out / f"{split}.parquet", vocabulary) == kept[split], split
    for split in ("valid", "test"):
        unknown_target, few, dropped = counts[split]
        assert unknown_target > 0 and few > 0  # the generated data exercises every rule
        assert dropped > 0 or split == "valid"  # a valid history is the training sequence
        reasons = result.dropped_reasons
        assert reasons[f"{split}: unknown target (not in the training split's vocabulary)"] == unknown_target
        assert reasons[f"{split}: fewer than 2 known items"] == few
        assert result.dropped_interactions[f"{split}: unknown items dropped from histories"] == dropped
    assert result.sequences == {s: len(kept[s]) for s in SPLITS}
    assert result.sequences_in == sum(len(want[s]) for s in SPLITS)
    assert sum(result.sequences.values()) + result.dropped_sequences == result.sequences_in
    summary = json.loads((out / "etl_summary.json").read_text())
    assert summary["dropped_reasons"] == result.dropped_reasons


def test_split_column_on_real_movielens(tmp_path, ml100k):
    """ML-100k cut at two global times: each user's interactions before t1 are train, then valid,
    then test; all counted against pandas' own arithmetic."""
    t1, t2 = np.quantile(ml100k["timestamp"], [0.8, 0.9])
    frame = ml100k[["user_id", "item_id", "timestamp"]].copy()
    frame["split"] = np.where(frame["timestamp"] < t1, "train",
                              np.where(frame["timestamp"] < t2, "valid", "test"))
    source = {"format": "generic", "path": "ml-100k",
              "columns": {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp",
                          "split": "split"}}
    result = run_etl(ETLConfig(output_dir=str(tmp_path / "data"), split="predefined",
                               source=source, split_column="split", min_len=2, max_len=200),
                     interactions=frame, progress=False)
    train_items = set(frame.loc[frame["split"] == "train", "item_id"])
    for split in ("valid", "test"):
        part = frame[frame["split"] == split].sort_values(["user_id", "timestamp"], kind="stable")
        last = part.groupby("user_id")["item_id"].last()
        unknown = int((~last.isin(train_items)).sum())
        known = part[part["item_id"].isin(train_items)].groupby("user_id").size()
        few = int(((known.reindex(last.index).fillna(0) < 2) & last.isin(train_items)).sum())
        assert result.dropped_reasons[
            f"{split}: unknown target (not in the training split's vocabulary)"] == unknown
        assert result.dropped_reasons[f"{split}: fewer than 2 known items"] == few
    test = pd.read_parquet(tmp_path / "data" / "test.parquet")
    assert (np.concatenate(test["item_id-list"].to_numpy()) != OOV_ID).all()


def test_no_session_left_is_an_error_and_writes_nothing(tmp_path):
    frames = {"train": pd.DataFrame({"user_id": [1, 1], "item_id": [5, 6], "timestamp": [1, 2]}),
              "valid": pd.DataFrame({"user_id": [2, 2], "item_id": [5, 7], "timestamp": [1, 2]}),
              "test": pd.DataFrame({"user_id": [3, 3], "item_id": [5, 6], "timestamp": [1, 2]})}
    with pytest.raises(InteractionError, match="no valid session is left .*unknown target"):
        run_etl(ETLConfig(output_dir=str(tmp_path / "data"), split="predefined", min_len=2,
                          split_column="split", source={"format": "generic", "path": "x",
                                                        "columns": {"user_id": "u",
                                                                    "item_id": "i",
                                                                    "timestamp": "t"}}),
                interactions=frames, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_leave_last_out_says_min_len_was_raised(tmp_path, ml100k):
    """min_len=2 under leave-last-out: the summary names the 3 actually required and counts
    exactly the users with fewer than 3 interactions; truncation is counted too."""
    frame = ml100k[["user_id", "item_id", "timestamp"]]
    sizes = frame.groupby("user_id").size()
    short = sizes.index[:40]  # make 40 users too short: keep 2 of their interactions
    cut = frame[~frame["user_id"].isin(short) | (frame.groupby("user_id").cumcount() < 2)]
    result = run_etl(ETLConfig(output_dir=str(tmp_path / "data"), min_len=2, max_len=50,
                               history_cap=60), interactions=cut, progress=False)
    reason = ("shorter than 3 items (min_len=2 raised: leave-last-out needs a train item, a valid "
              "and a test target)")
    assert result.dropped_reasons[reason] == 40
    kept = cut.groupby("user_id").size()
    kept = kept[kept >= 3]
    assert result.dropped_interactions["older than the last history_cap=60"] == int(
        (kept - kept.clip(upper=60)).sum())


def test_history_cap_below_the_window_is_refused():
    with pytest.raises(ValueError, match="history_cap=20 is below max_len=50"):
        ETLConfig(max_len=50, history_cap=20)
    assert ETLConfig(max_len=50, history_cap=None).history_cap is None  # whole histories
