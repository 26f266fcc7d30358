"""Ranking metrics from top-k lists: NDCG, Recall (hit rate for one target) and MRR at k."""
from __future__ import annotations

import numpy as np

CUTOFFS = (10, 20)


def ranking_metrics(top_ids: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    """top_ids: [B, K] best first (K >= max cutoff); targets: [B]. Means over rows."""
    hits = top_ids == targets[:, None]
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)  # 0-based
    out = {}
    for k in cutoffs:
        found = rank < k
        out[f"ndcg@{k}"] = float(np.mean(np.where(found, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0)))
        out[f"recall@{k}"] = float(np.mean(found))
        out[f"mrr@{k}"] = float(np.mean(np.where(found, 1.0 / (np.minimum(rank, k) + 1.0), 0.0)))
    return out


def popularity_top(train_lists, num_items: int, first_item_id: int, k: int) -> np.ndarray:
    """The k most frequent training items (encoded ids), the popularity baseline's answer."""
    counts = np.bincount(np.concatenate(list(train_lists)), minlength=num_items).astype(float)
    counts[:first_item_id] = -np.inf
    return np.argsort(-counts, kind="stable")[:k]
