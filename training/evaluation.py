"""Offline evaluation: ranking metrics from top-k lists (NDCG, Recall, MRR, MAP at k), the model's
evaluation through recommend(), the popularity baseline, and AUC, per-user GAUC and log loss
for binary scores (the RTD discriminator, the ranker).

Everything works on whole arrays: histories and targets are cut from values + offsets, and the
"popularity without the items already seen" baseline is computed over chunks of rows against a
short candidate list, never as a [sessions, items] matrix (1M sessions x 100k items would be
100 GB of booleans).
"""
from __future__ import annotations

import numpy as np

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, row_ids

from . import distributed
from .data import Rows, as_ragged, split_history_target
from .recommend import recommend

CUTOFFS = (10, 20)
CHUNK_ROWS = 8192  # rows per chunk of the unseen-popularity baseline: [chunk, k + longest] arrays


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


def popularity_counts(train_rows: Rows, num_items: int, first_item_id: int = FIRST_ITEM_ID) -> np.ndarray:
    """Training count of every encoded id (float); reserved ids -inf, so they rank last."""
    counts = np.bincount(as_ragged(train_rows).values.astype(np.int64), minlength=num_items).astype(float)
    counts[:first_item_id] = -np.inf
    return counts


def popularity_top(train_rows: Rows, num_items: int, first_item_id: int, k: int) -> np.ndarray:
    """The k most frequent training items (encoded ids), the popularity baseline's answer."""
    return np.argsort(-popularity_counts(train_rows, num_items, first_item_id), kind="stable")[:k]


def popularity_top_unseen(counts: np.ndarray, histories: Rows, k: int,
                          chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Per row, the k most frequent items not in that row's history: [B, k].

    A row's answer lies among the k + len(history) most popular items, so only those candidates
    are compared with the history, a chunk of rows at a time."""
    histories = as_ragged(histories)
    longest = int(histories.lengths.max(initial=0))
    candidates = np.argsort(-counts, kind="stable")[: k + longest]
    rank_of = np.full(len(counts), -1, dtype=np.int64)  # encoded id -> its candidate column
    rank_of[candidates] = np.arange(len(candidates))
    out = np.empty((len(histories), min(k, len(candidates))), dtype=np.int64)
    for start in range(0, len(histories), chunk_rows):
        part = histories[start:start + chunk_rows]
        column = rank_of[part.values.astype(np.int64)]
        rows = row_ids(part.offsets)
        seen = np.zeros((len(part), len(candidates)), dtype=bool)
        seen[rows[column >= 0], column[column >= 0]] = True
        # Stable sort moves the unseen candidates first, keeping their popularity order.
        out[start:start + len(part)] = candidates[np.argsort(seen, axis=1, kind="stable")[:, :k]]
    return out


def evaluate(model, rows: Rows, batch_size: int = 256, exclude_seen: bool = False,
             features: dict | None = None, ctx: distributed.Context = distributed.SINGLE) -> dict[str, float]:
    """Metrics for the last item of each row given everything before it, via recommend() over
    the full catalogue (the model never receives the target, nor its side features). Under
    torchrun each rank scores its shard of the rows (with their features)."""
    rows = as_ragged(rows)
    features = features and {c: as_ragged(v) for c, v in features.items()}
    if ctx.active:  # shard row indices: the rows and their features are cut alike
        return distributed.sharded_mean(ctx, lambda index: evaluate(
            model, rows.take(index), batch_size, exclude_seen,
            features and {c: v.take(index) for c, v in features.items()}), range(len(rows)))
    histories, targets = split_history_target(rows)
    side = features and {c: v.drop_last(1) for c, v in features.items()}
    tops = [
        recommend(model, histories[i : i + batch_size], k=max(CUTOFFS), exclude_seen=exclude_seen,
                  features=side and {c: v[i : i + batch_size] for c, v in side.items()})[0]
        for i in range(0, len(histories), batch_size)
    ]
    return ranking_metrics(np.concatenate(tops), targets)


def evaluate_popularity(train_rows: Rows, eval_rows: Rows, num_items: int,
                        exclude_seen: bool = False) -> dict[str, float]:
    """The popularity baseline (most frequent training items) on the same targets as evaluate()."""
    histories, targets = split_history_target(eval_rows)
    if exclude_seen:
        counts = popularity_counts(train_rows, num_items, FIRST_ITEM_ID)
        return ranking_metrics(popularity_top_unseen(counts, histories, max(CUTOFFS)), targets)
    top = popularity_top(train_rows, num_items, FIRST_ITEM_ID, max(CUTOFFS))
    return ranking_metrics(np.broadcast_to(top, (len(targets), len(top))), targets)


def _group_auc_parts(scores, labels, groups):
    """Per group (rows of equal `groups`): (group ids, positives, negatives, AUC numerator).

    One lexsort by (group, score) ranks every row within its group; tied scores get their
    average rank; the Mann-Whitney U of a group is its positives' rank sum - P(P+1)/2."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    groups = np.asarray(groups)
    if not (len(scores) == len(labels) == len(groups)):
        raise ValueError(f"scores ({len(scores)}), labels ({len(labels)}) and groups "
                         f"({len(groups)}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("AUC needs finite scores")
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_of = np.cumsum(new_group) - 1
    start = np.flatnonzero(new_group)
    rank = np.arange(len(s)) - start[group_of] + 1.0  # 1-based rank within the group
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    tie_of = np.cumsum(new_tie) - 1
    rank = (np.bincount(tie_of, weights=rank) / np.bincount(tie_of))[tie_of]
    n_groups = len(start)
    pos = np.bincount(group_of, weights=y, minlength=n_groups)
    neg = np.bincount(group_of, minlength=n_groups) - pos
    u = np.bincount(group_of, weights=np.where(y, rank, 0.0), minlength=n_groups) - pos * (pos + 1) / 2
    return g[start], pos, neg, u


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties get their average rank)."""
    _, pos, neg, u = _group_auc_parts(scores, labels, np.zeros(len(scores), dtype=np.int64))
    if pos.sum() == 0 or neg.sum() == 0:
        raise ValueError("AUC needs both positive and negative labels")
    return float(u[0] / (pos[0] * neg[0]))


def group_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """GAUC: the AUC within each group (user) that has both labels, averaged with the group's
    row count as weight; groups with one label only carry no ranking signal and are skipped."""
    _, pos, neg, u = _group_auc_parts(scores, labels, groups)
    both = (pos > 0) & (neg > 0)
    if not both.any():
        raise ValueError("GAUC needs a group with both positive and negative labels")
    weight = (pos + neg)[both]
    return float(np.sum(weight * u[both] / (pos[both] * neg[both])) / weight.sum())


def log_loss(probabilities: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of predicted probabilities (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(probabilities, dtype=float), eps, 1 - eps)
    y = np.asarray(labels, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def strict_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target over the full catalogue, ties counted AGAINST it: the
    number of other items scoring at least as high. scores [B, N] (excluded items -inf)."""
    scores = np.asarray(scores)
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores >= target_scores[:, None]).sum(axis=1) - 1


def block_seen(scores: np.ndarray, histories: Rows) -> np.ndarray:
    """scores [B, N] with every item of row b's history set to -inf (in place; returned)."""
    histories = as_ragged(histories)
    scores[row_ids(histories.offsets), histories.values.astype(np.int64)] = -np.inf
    return scores


def rank_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """NDCG@k, Recall@k and MRR (uncut) from 0-based ranks; NaN for no rows."""
    ranks = np.asarray(ranks, dtype=float)
    if not len(ranks):
        return {f"ndcg@{k}": float("nan"), f"recall@{k}": float("nan"), "mrr": float("nan"), "rows": 0}
    found = ranks < k
    return {f"ndcg@{k}": float(np.mean(np.where(found, 1.0 / np.log2(ranks + 2.0), 0.0))),
            f"recall@{k}": float(np.mean(found)), "mrr": float(np.mean(1.0 / (ranks + 1.0))),
            "rows": int(len(ranks))}


__all__ = ["CUTOFFS", "ranking_metrics", "popularity_counts", "popularity_top",
           "popularity_top_unseen", "evaluate", "evaluate_popularity", "binary_auc", "group_auc",
           "log_loss", "block_seen", "strict_ranks", "rank_metrics"]
