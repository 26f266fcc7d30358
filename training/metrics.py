"""Ranking metrics from top-k lists: NDCG, Recall (hit rate for one target), MRR and MAP at k;
the popularity baseline; AUC for binary scores (the RTD discriminator)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

CUTOFFS = (10, 20)


def ranking_metrics(top_ids: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    """top_ids: [B, K] best first (K >= max cutoff); targets: [B]. Means over rows."""
    hits = top_ids == targets[:, None]
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)  # 0-based
    out = {}
    for k in cutoffs:
        found = rank < k
        r = np.minimum(rank, k).astype(float)
        out[f"ndcg@{k}"] = float(np.mean(np.where(found, 1.0 / np.log2(r + 2.0), 0.0)))
        out[f"recall@{k}"] = float(np.mean(found))
        out[f"mrr@{k}"] = float(np.mean(np.where(found, 1.0 / (r + 1.0), 0.0)))
        # AP@k = sum_i precision@i * rel_i / min(k, #relevant); with the one held-out target as
        # the only relevant item it is 1 / (rank + 1), i.e. equal to MRR@k (kept for comparison
        # with tables that report MAP).
        out[f"map@{k}"] = float(np.mean(np.where(found, 1.0 / (r + 1.0), 0.0)))
    return out


def popularity_counts(train_lists, num_items: int, first_item_id: int) -> np.ndarray:
    counts = np.bincount(np.concatenate(list(train_lists)), minlength=num_items).astype(float)
    counts[:first_item_id] = -np.inf
    return counts


def popularity_top(train_lists, num_items: int, first_item_id: int, k: int) -> np.ndarray:
    """The k most frequent training items (encoded ids), the popularity baseline's answer."""
    return np.argsort(-popularity_counts(train_lists, num_items, first_item_id), kind="stable")[:k]


def popularity_top_unseen(counts: np.ndarray, histories: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per row, the k most frequent items not in that row's history: [B, k]."""
    longest = max((len(h) for h in histories), default=0)
    candidates = np.argsort(-counts, kind="stable")[: k + longest]
    seen = np.zeros((len(histories), len(counts)), dtype=bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    if len(rows):
        seen[rows, np.concatenate(histories).astype(np.int64)] = True
    # Stable sort moves the unseen candidates first, keeping their popularity order.
    order = np.argsort(seen[:, candidates], axis=1, kind="stable")[:, :k]
    return candidates[order]


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties get their average rank)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average the ranks of tied scores
    uniq, inverse = np.unique(scores, return_inverse=True)
    ranks = (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
