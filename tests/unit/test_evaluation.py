"""The vectorised evaluation (values + offsets, streamed popularity) against a per-row reference
written the plain way: score each row alone, rank its target by counting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training.data import Ragged, split_history_target
from seqrec.training.evaluation import (CUTOFFS, evaluate, evaluate_popularity, popularity_top_unseen)
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.recommend import score_histories

NUM_ITEMS = 60


def random_rows(rng, n, low=2, high=9):
    # a narrow id range makes repeats, targets inside their own history and popularity ties
    return [rng.integers(FIRST_ITEM_ID, FIRST_ITEM_ID + 25, size=rng.integers(low, high)) for _ in range(n)]


def reference_metrics(ranks: list[int]) -> dict[str, float]:
    ranks = np.array(ranks, dtype=float)
    out = {}
    for k in CUTOFFS:
        found = ranks < k
        out[f"ndcg@{k}"] = float(np.mean([1 / np.log2(r + 2) if f else 0.0 for r, f in zip(ranks, found)]))
        out[f"recall@{k}"] = float(np.mean(found))
        out[f"mrr@{k}"] = float(np.mean([1 / (r + 1) if f else 0.0 for r, f in zip(ranks, found)]))
        out[f"map@{k}"] = out[f"mrr@{k}"]
    return out


@pytest.mark.parametrize("task,backbone", [("clm", "gpt2"), ("mlm", "bert")])
@pytest.mark.parametrize("exclude_seen", [False, True])
def test_model_evaluation_equals_per_row_reference(task, backbone, exclude_seen):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    model = SequenceRecommender(ModelConfig(num_items=NUM_ITEMS, max_len=6, backbone=backbone, task=task,
                                            d_model=16, n_layers=1, n_heads=2, dropout=0.0))
    rows = random_rows(rng, 70, high=12)  # longer than max_len: the history keeps its tail
    ranks = []
    for row in rows:
        history, target = row[:-1], row[-1]
        scores = score_histories(model, [history])[0].numpy().astype(np.float64)
        if exclude_seen:
            scores[history] = -np.inf
        ranks.append(int((scores > scores[target]).sum()) if np.isfinite(scores[target]) else 10**9)
    got = evaluate(model, Ragged.from_lists(rows), batch_size=16, exclude_seen=exclude_seen)
    want = reference_metrics(ranks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # the per-row list form and the columnar form are the same rows
    assert evaluate(model, rows, batch_size=7, exclude_seen=exclude_seen) == pytest.approx(got, abs=1e-12)


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_popularity_equals_per_row_reference_with_ties(exclude_seen):
    rng = np.random.default_rng(2)
    train, rows = random_rows(rng, 50), random_rows(rng, 80)
    counts = np.bincount(np.concatenate(train), minlength=NUM_ITEMS).astype(float)
    assert len(set(counts[FIRST_ITEM_ID:].tolist())) < NUM_ITEMS - FIRST_ITEM_ID  # ties happen
    counts[:FIRST_ITEM_ID] = -np.inf
    # popularity order: more frequent first, a tie broken by the smaller id
    ranked = sorted(range(NUM_ITEMS), key=lambda i: (-counts[i], i))
    ranks = []
    for row in rows:
        history, target = row[:-1], row[-1]
        candidates = [i for i in ranked if not (exclude_seen and i in set(history.tolist()))][: max(CUTOFFS)]
        ranks.append(candidates.index(target) if target in candidates else 10**9)
    got = evaluate_popularity(Ragged.from_lists(train), Ragged.from_lists(rows), NUM_ITEMS, exclude_seen)
    want = reference_metrics(ranks)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_unseen_popularity_is_the_same_in_any_chunking():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, size=NUM_ITEMS).astype(float)  # many ties
    counts[:FIRST_ITEM_ID] = -np.inf
    histories, _ = split_history_target(Ragged.from_lists(random_rows(rng, 101)))
    whole = popularity_top_unseen(counts, histories, k=10, chunk_rows=10**6)
    for chunk in (1, 7, 50):
        assert np.array_equal(popularity_top_unseen(counts, histories, k=10, chunk_rows=chunk), whole)
    for row, top in zip(histories, whole):
        assert not set(top.tolist()) & set(row.tolist())


def test_split_history_target_at_positions():
    rows = [np.array([3, 4, 5, 6]), np.array([7, 8])]
    histories, targets = split_history_target(rows, np.array([2, 0]))
    assert targets.tolist() == [5, 7]
    assert [h.tolist() for h in histories] == [[3, 4], []]
    with pytest.raises(ValueError, match="outside row 1"):
        split_history_target(rows, np.array([1, 2]))
