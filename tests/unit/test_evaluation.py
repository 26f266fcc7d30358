"""The vectorised evaluation (values + offsets, streamed popularity) against a per-row reference
written the plain way: score each row alone, rank its target by counting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training.data import Ragged, split_history_target
from seqrec.training.evaluation import (CUTOFFS, HISTORY_BUCKETS, MISS, POLICIES, evaluate,
                                       evaluate_popularity, model_ranks, popularity_counts,
                                       popularity_ranks, strict_ranks)
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.recommend import score_histories

NUM_ITEMS = 60


def random_rows(rng, n, low=2, high=9):
    # a narrow id range makes repeats, targets inside their own history and popularity ties
    return [rng.integers(FIRST_ITEM_ID, FIRST_ITEM_ID + 25, size=rng.integers(low, high)) for _ in range(n)]


def brute_rank(scores: np.ndarray, target: int, history: np.ndarray, exclude_seen: bool) -> int:
    """The plain way: block what may not be recommended, then count every OTHER item scoring at
    least as high as the target (ties against it)."""
    scores = scores.astype(np.float64).copy()
    scores[:FIRST_ITEM_ID] = -np.inf
    if exclude_seen:
        scores[history] = -np.inf
    if not np.isfinite(scores[target]):
        return None
    return sum(1 for i in range(len(scores)) if i != target and scores[i] >= scores[target])


def reference_metrics(ranks: list) -> dict[str, float]:
    out = {}
    for k in CUTOFFS:
        ndcg = [1 / np.log2(r + 2) if r is not None and r < k else 0.0 for r in ranks]
        rr = [1 / (r + 1) if r is not None and r < k else 0.0 for r in ranks]
        out[f"ndcg@{k}"] = float(np.mean(ndcg))
        out[f"recall@{k}"] = float(np.mean([r is not None and r < k for r in ranks]))
        out[f"mrr@{k}"] = out[f"map@{k}"] = float(np.mean(rr))
    out["mrr"] = float(np.mean([1 / (r + 1) if r is not None else 0.0 for r in ranks]))
    return out


def bucket_of(n: int) -> int:
    return max(i for i, edge in enumerate(HISTORY_BUCKETS) if n >= edge)


def check_report(got: dict, per_policy_ranks: dict, lengths: list, exclude_seen: bool) -> None:
    primary = "seen_excluded" if exclude_seen else "seen_kept"
    for policy in POLICIES:
        want = reference_metrics(per_policy_ranks[policy])
        for key, value in want.items():
            assert got[policy][key] == pytest.approx(value, abs=1e-12), (policy, key)
            if policy == primary:
                assert got[key] == pytest.approx(value, abs=1e-12), key
    assert sum(b["sessions"] for b in got["by_history_length"].values()) == len(lengths)
    for label, part in got["by_history_length"].items():
        low = int(label.split("-")[0].rstrip("+"))
        rows = [i for i, n in enumerate(lengths) if bucket_of(n) == HISTORY_BUCKETS.index(low)]
        assert part["sessions"] == len(rows)
        for policy in POLICIES:
            want = reference_metrics([per_policy_ranks[policy][i] for i in rows])
            assert part[policy]["mrr"] == pytest.approx(want["mrr"], abs=1e-12)
            assert part[policy]["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-12)


@pytest.mark.parametrize("task,backbone", [("clm", "gpt2"), ("mlm", "bert")])
@pytest.mark.parametrize("exclude_seen", [False, True])
def test_model_evaluation_equals_brute_force_strict_ranks(task, backbone, exclude_seen):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    model = SequenceRecommender(ModelConfig(num_items=NUM_ITEMS, max_len=6, backbone=backbone, task=task,
                                            d_model=16, n_layers=1, n_heads=2, dropout=0.0))
    rows = random_rows(rng, 70, high=12)  # longer than max_len: the history keeps its tail
    ranks = {p: [] for p in POLICIES}
    for row in rows:
        history, target = row[:-1], row[-1]
        scores = score_histories(model, [history])[0].numpy()
        for policy in POLICIES:
            ranks[policy].append(brute_rank(scores, target, history, policy == "seen_excluded"))
    assert any(r is None for r in ranks["seen_excluded"])  # targets seen before: misses
    got = evaluate(model, Ragged.from_lists(rows), batch_size=16, exclude_seen=exclude_seen)
    check_report(got, ranks, [len(r) - 1 for r in rows], exclude_seen)
    # the per-row list form and another batching give the same report
    again = evaluate(model, rows, batch_size=7, exclude_seen=exclude_seen)
    assert again["seen_kept"] == pytest.approx(got["seen_kept"], abs=1e-12)


def test_ties_count_against_the_target():
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5],
                           [0.0, 0.0, 0.0, 2.0, 1.0, 1.0, float("-inf")]])
    # row 0: items 3, 4, 5 tie: target 4 ranks after both others (rank 2, not 0 or 1)
    assert strict_ranks(scores, torch.tensor([4, 6])).tolist() == [2, MISS]
    constant = SequenceRecommender(ModelConfig(num_items=NUM_ITEMS, max_len=4, d_model=8, n_layers=1,
                                               n_heads=1, dropout=0.0))
    for p in constant.parameters():  # every item scores alike: the target ranks last, not first
        torch.nn.init.zeros_(p)
    got = model_ranks(constant, Ragged.from_lists([np.array([5, 6])]), np.array([9]))
    assert got["seen_kept"].tolist() == [NUM_ITEMS - FIRST_ITEM_ID - 1]
    assert got["seen_excluded"].tolist() == [NUM_ITEMS - FIRST_ITEM_ID - 3]


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_popularity_equals_brute_force_strict_ranks_with_ties(exclude_seen):
    rng = np.random.default_rng(2)
    train, rows = random_rows(rng, 50), random_rows(rng, 80)
    counts = np.bincount(np.concatenate(train), minlength=NUM_ITEMS).astype(float)
    assert len(set(counts[FIRST_ITEM_ID:].tolist())) < NUM_ITEMS - FIRST_ITEM_ID  # ties happen
    ranks = {p: [brute_rank(counts, row[-1], row[:-1], p == "seen_excluded") for row in rows]
             for p in POLICIES}
    got = evaluate_popularity(Ragged.from_lists(train), Ragged.from_lists(rows), NUM_ITEMS, exclude_seen)
    check_report(got, ranks, [len(r) - 1 for r in rows], exclude_seen)


def test_popularity_ranks_are_the_same_in_any_chunking():
    rng = np.random.default_rng(3)
    counts = popularity_counts([rng.integers(FIRST_ITEM_ID, NUM_ITEMS, size=40)], NUM_ITEMS)
    histories, targets = split_history_target(Ragged.from_lists(random_rows(rng, 101)))
    whole = popularity_ranks(counts, histories, targets, chunk_rows=10**6)
    for chunk in (1, 7, 50):
        part = popularity_ranks(counts, histories, targets, chunk_rows=chunk)
        assert all(np.array_equal(part[p], whole[p]) for p in POLICIES)


def test_split_history_target_at_positions():
    rows = [np.array([3, 4, 5, 6]), np.array([7, 8])]
    histories, targets = split_history_target(rows, np.array([2, 0]))
    assert targets.tolist() == [5, 7]
    assert [h.tolist() for h in histories] == [[3, 4], []]
    with pytest.raises(ValueError, match="outside row 1"):
        split_history_target(rows, np.array([1, 2]))


def test_top_k_ranks_equal_the_full_strict_ranks_below_the_depth():
    """From top-D lists alone (what a server answers), every strict rank below D - 1 is exact and
    the rest are misses, ties included, so the metrics at every cutoff <= D - 1 are the same."""
    from seqrec.training.evaluation import rank_metrics, top_k_depth, top_k_ranks

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 12, size=(400, 40)).astype(np.float32)  # many ties
    scores[:, :FIRST_ITEM_ID] = -np.inf
    scores[::7, 5] = -np.inf  # an excluded target
    targets = rng.integers(FIRST_ITEM_ID, 40, size=400)
    full = strict_ranks(scores, targets)
    depth = 12
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]  # any order among ties
    top_ids, top_scores = order, np.take_along_axis(scores, order, axis=1)
    ranks = top_k_ranks(top_ids, top_scores, targets)
    assert (full < depth - 1).any() and (full >= depth - 1).any() and (ranks[::7] == MISS).any()
    np.testing.assert_array_equal(ranks, np.where(full < depth - 1, full, MISS))
    cutoffs = (5, depth - 1)
    assert rank_metrics(ranks, cutoffs, full=False) == rank_metrics(full, cutoffs, full=False)
    assert top_k_depth(CUTOFFS) == max(CUTOFFS) + 1
