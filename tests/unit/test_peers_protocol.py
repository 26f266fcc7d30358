"""The side-by-side benchmark's one evaluation (bench/peers/protocol.py) against brute force."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "peers"))
import protocol  # noqa: E402


def rows(lists):
    lengths = [len(x) for x in lists]
    return protocol.Rows(np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]),
                         np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def brute_rank(scores, target, candidates, seen=()):
    pool = [i for i in range(len(scores)) if candidates[i] and (i == target or i not in seen)]
    return sum(1 for i in pool if i != target and scores[i] >= scores[target])


def test_ranks_count_ties_against_the_target_and_both_policies():
    rng = np.random.default_rng(0)
    candidates = np.ones(12, dtype=bool)
    candidates[:3] = False  # reserved ids
    candidates[7] = False  # never in training
    scores = rng.integers(0, 4, size=(5, 12)).astype(float)  # many ties
    targets = np.array([3, 5, 8, 11, 4])
    hist = rows([[4, 5], [3], [5, 8, 9], [10], [6, 4]])  # row 4: the target is in its history
    kept = protocol.ranks(scores, targets, candidates)
    excluded = protocol.ranks(scores, targets, candidates, hist)
    for r in range(5):
        assert kept[r] == brute_rank(scores[r], targets[r], candidates)
        assert excluded[r] == brute_rank(scores[r], targets[r], candidates, set(hist.lists()[r]))


def test_unknown_items_are_dropped_and_short_rows_skipped():
    candidates = np.zeros(10, dtype=bool)
    candidates[[3, 4, 5, 6]] = True
    kept = protocol.known_rows(rows([[3, 9, 4], [9, 5], [6, 8, 3, 5], [7, 8]]), candidates)
    assert [x.tolist() for x in kept.lists()] == [[3, 4], [6, 3, 5]]
    history, targets = protocol.history_target(kept)
    assert targets.tolist() == [4, 5] and [x.tolist() for x in history.lists()] == [[3], [6, 3]]


def test_metrics_from_ranks():
    m = protocol.metrics(np.array([0, 1, 9, 10, 99]), num_candidates=101)
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 100) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 10) / 5)
    assert m["auc"] == pytest.approx(np.mean(1 - np.array([0, 1, 9, 10, 99]) / 100))


def test_padding_keeps_the_last_items(tmp_path):
    r = rows([[3, 4, 5, 6], [7]])
    assert r.padded_left(3).tolist() == [[4, 5, 6], [0, 0, 7]]
    assert r.padded_right(3).tolist() == [[4, 5, 6], [7, 0, 0]]
    splits = protocol.Splits(r, r, r, num_items=8, first_item=3, name="x")
    protocol.save_splits(tmp_path / "s.npz", splits)
    back = protocol.load_splits(tmp_path / "s.npz")
    assert back.train.values.tolist() == r.values.tolist() and back.name == "x" and back.num_items == 8


def test_evaluate_checks_the_score_shape():
    r = rows([[3, 4, 5], [4, 5]])
    splits = protocol.Splits(r, r, r, num_items=6, first_item=3, name="x")
    perfect = lambda h: np.eye(6)[[5] * len(h)]  # noqa: E731  every target is item 5
    out = protocol.evaluate(perfect, r, splits)
    assert out["kept"]["ndcg@10"] == 1.0 and out["rows"] == 2
    with pytest.raises(ValueError, match="scores of shape"):
        protocol.evaluate(lambda h: np.zeros((len(h), 5)), r, splits)


def test_daily_windows_train_on_the_past_and_evaluate_the_next_day(tmp_path):
    day = lambda tr, va, te: {"train": rows(tr), "valid": rows(va), "test": rows(te)}  # noqa: E731
    windows = protocol.Windows([day([[3, 4]], [[4, 5]], [[5, 3]]), day([[6, 7]], [[3, 6]], [[7, 8, 3]]),
                                day([[8, 9]], [[8, 9, 3]], [[3, 9]])], ["d0", "d1", "d2"], 10, 3, "tiny")
    path = tmp_path / "w.npz"
    protocol.save_windows(path, windows)
    assert protocol.is_windows(path)
    loaded = protocol.load_windows(path)
    assert loaded.day_names == ["d0", "d1", "d2"]
    assert [x.tolist() for x in loaded.whole(1).lists()] == [[6, 7], [3, 6], [7, 8, 3]]
    at1 = loaded.at(1)  # trained on days 0 and 1, evaluated on day 2's rows
    assert np.flatnonzero(at1.candidates).tolist() == [3, 4, 5, 6, 7, 8]
    assert [x.tolist() for x in at1.valid.lists()] == [[8, 9, 3]] and [x.tolist() for x in at1.test.lists()] == [[3, 9]]
    # 9 is unknown before day 2: the valid row is scored as history [8], target 3
    known = protocol.history_target(protocol.known_rows(at1.valid, at1.candidates))
    assert [x.tolist() for x in known[0].lists()] == [[8]] and known[1].tolist() == [3]
    report = lambda v: {p: {"ndcg@10": v} for p in protocol.POLICIES} | {"rows": 2}  # noqa: E731
    assert protocol.average([report(0.2), report(0.4)]) == {"kept": {"ndcg@10": pytest.approx(0.3)},
                                                             "excluded": {"ndcg@10": pytest.approx(0.3)}, "rows": 4}
