"""Offline evaluation: the strict rank of every held-out target over the full catalogue, the
ranking metrics from it (NDCG, Recall, MRR and MAP at k, full MRR), under both seen-item policies
at once and per history-length bucket; for the model (through the one scorer, as served) and
for the popularity baseline; and AUC, per-user GAUC and log loss for binary scores (the RTD
discriminator, the ranker).

Strict rank: a target's 0-based rank is the number of OTHER items scoring at least as high, so
ties count against it (a model scoring every item alike ranks its target last, not by whatever
order a top-k happened to return). A target that may not be recommended (reserved id, or seen
under `seen_excluded`) is a miss.

Everything works on whole arrays, streamed in chunks: the model's scores are [batch, items] one
batch at a time; popularity ranks come from the sorted counts and each chunk's (row, item)
pairs, never a [sessions, items] matrix (1M sessions x 100k items would be 100 GB of booleans).
"""
from __future__ import annotations

import numpy as np
import torch

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, row_ids

from . import distributed
from .data import Ragged, Rows, as_ragged, split_history_target
from .scoring import Scorer, scorer_inputs

CUTOFFS = (10, 20)
CHUNK_ROWS = 8192  # rows per chunk of the popularity ranks
MISS = np.iinfo(np.int64).max  # the rank of a target that cannot be recommended
POLICIES = ("seen_kept", "seen_excluded")  # history items allowed in the ranking, or not
# lower edges of the history-length buckets: 1, 2-4, 5-9, ..., 200+
HISTORY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200)
BUCKET_KEY = "by_history_length"


def bucket_names(edges=HISTORY_BUCKETS) -> list[str]:
    ends = list(edges[1:])
    return [f"{a}" if b == a + 1 else f"{a}-{b - 1}" for a, b in zip(edges, ends)] + [f"{edges[-1]}+"]


def metric_names(cutoffs=CUTOFFS, full: bool = True) -> list[str]:
    names = [f"{m}@{k}" for k in cutoffs for m in ("ndcg", "recall", "mrr", "map")]
    return names + ["mrr"] if full else names


def rank_sums(ranks: np.ndarray, cutoffs=CUTOFFS, full: bool = True) -> np.ndarray:
    """Per-row metric values [rows, metrics] (in metric_names order) from 0-based ranks; summed
    or averaged over rows by the callers."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = ranks != MISS
    r = np.where(hit, ranks, 0).astype(float)
    columns = []
    for k in cutoffs:
        found = hit & (ranks < k)
        # AP@k with the one held-out target as the only relevant item is 1 / (rank + 1), i.e.
        # equal to MRR@k (kept for comparison with tables that report MAP).
        reciprocal = np.where(found, 1.0 / (r + 1.0), 0.0)
        columns += [np.where(found, 1.0 / np.log2(r + 2.0), 0.0), found.astype(float), reciprocal, reciprocal]
    if full:
        columns.append(np.where(hit, 1.0 / (r + 1.0), 0.0))
    return np.stack(columns, axis=1) if columns else np.zeros((len(ranks), 0))


def rank_metrics(ranks: np.ndarray, cutoffs=CUTOFFS, full: bool = True) -> dict[str, float]:
    """Means over rows of the metrics of these ranks."""
    values = rank_sums(ranks, cutoffs, full)
    means = values.mean(axis=0) if len(values) else np.zeros(values.shape[1])
    return dict(zip(metric_names(cutoffs, full), map(float, means)))


def ranking_metrics(top_ids: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    """Metrics at k from top-k lists (top_ids [B, K] best first, K >= max cutoff; targets [B]),
    e.g. a served answer: a target's rank is its place in its list."""
    hits = top_ids == targets[:, None]
    ranks = np.where(hits.any(axis=1), hits.argmax(axis=1), MISS)
    return rank_metrics(ranks, cutoffs, full=False)


def top_k_depth(cutoffs=CUTOFFS) -> int:
    """How many answers a ranked list needs for top_k_ranks to be exact at every cutoff."""
    return max(cutoffs) + 1


def top_k_ranks(top_ids: np.ndarray, top_scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[B] strict ranks (as strict_ranks) from top-D lists alone (top_ids / top_scores [B, D],
    best first, e.g. a served answer; targets [B]): exact for every rank below D - 1, MISS for
    the rest (at or past D - 1 a tie outside the list may push the target further down). So the
    metrics at every cutoff <= D - 1 (top_k_depth) equal those of the full-catalogue ranks.

    The target's rank is the number of other listed items scoring at least as high; every item
    scoring that high is listed exactly when the last listed score is below the target's."""
    top_ids, top_scores = np.asarray(top_ids), np.asarray(top_scores, dtype=np.float64)
    targets = np.asarray(targets)
    hits = top_ids == targets[:, None]
    found = hits.any(axis=1)
    own = top_scores[np.arange(len(targets)), hits.argmax(axis=1)]  # [B]
    rank = (top_scores >= own[:, None]).sum(axis=1) - 1
    exact = found & np.isfinite(own) & (top_scores[:, -1] < own)
    return np.where(exact, rank, MISS).astype(np.int64)


def summarise(ranks: dict[str, np.ndarray], lengths: np.ndarray, exclude_seen: bool,
              ctx: distributed.Context = distributed.SINGLE) -> dict:
    """Ranks under each policy + history lengths -> the report: the configured policy's
    metrics at the top level (what early stopping and the tables read), then both policies in
    full and per history-length bucket. Under torchrun the sums are added over the ranks."""
    names = metric_names()
    bucket = np.searchsorted(np.asarray(HISTORY_BUCKETS), lengths, side="right") - 1
    buckets = len(HISTORY_BUCKETS)
    flat = [np.bincount(bucket, minlength=buckets).astype(float)]  # sessions per bucket
    for policy in POLICIES:
        values = rank_sums(ranks[policy])
        flat += [np.bincount(bucket, weights=values[:, j], minlength=buckets) for j in range(len(names))]
    total = np.array(distributed.all_sum(ctx, np.concatenate(flat).tolist())).reshape(-1, buckets)
    sessions, sums = total[0], total[1:].reshape(len(POLICIES), len(names), buckets)

    def means(values, count):
        return {n: float(v / count) if count else 0.0 for n, v in zip(names, values)}

    report = {p: means(sums[i].sum(axis=1), sessions.sum()) for i, p in enumerate(POLICIES)}
    by_length = {label: {"sessions": int(sessions[b]),
                         **{p: means(sums[i][:, b], sessions[b]) for i, p in enumerate(POLICIES)}}
                 for b, label in enumerate(bucket_names()) if sessions[b]}
    policy = "seen_excluded" if exclude_seen else "seen_kept"
    return {**report[policy], "policy": policy, "sessions": int(sessions.sum()), **report,
            BUCKET_KEY: by_length}


def flat_metrics(report: dict) -> dict[str, float]:
    """The configured policy's metrics of a report, without the breakdowns (for averages)."""
    return {k: v for k, v in report.items() if isinstance(v, float)}


def strict_ranks(scores, targets):
    """[B] 0-based strict rank of each target in its row of scores [B, items]: the other items
    scoring at least as high; MISS where the target scores -inf (it cannot be recommended).
    Tensors in, a tensor out; numpy arrays in, a numpy array out."""
    if isinstance(scores, np.ndarray):
        return strict_ranks(torch.from_numpy(scores), torch.from_numpy(np.asarray(targets, dtype=np.int64))).numpy()
    own = scores.gather(1, targets[:, None])
    rank = (scores >= own).sum(dim=1) - 1
    return torch.where(torch.isfinite(own[:, 0]), rank, torch.full_like(rank, MISS))


@torch.no_grad()
def model_ranks(model, histories: Ragged, targets: np.ndarray, batch_size: int = 256,
                features: dict | None = None) -> dict[str, np.ndarray]:
    """Each target's strict rank under both policies, the model's scores computed once per
    batch through the one scorer (what is served), [batch, items] at a time."""
    model.eval()
    scorer = Scorer(model)
    out = {p: [] for p in POLICIES}
    for i in range(0, len(histories), batch_size):
        part = features and {c: v[i:i + batch_size] for c, v in features.items()}
        items, exclude, side = scorer_inputs(model, histories[i:i + batch_size], part)
        scores = scorer.scores(items, side)
        target = torch.from_numpy(targets[i:i + batch_size]).to(items.device)
        for policy in POLICIES:
            blocked = scorer.excluded(scores, items, exclude, policy == "seen_excluded")
            out[policy].append(strict_ranks(blocked, target).cpu().numpy())
    return {p: np.concatenate(r) if r else np.zeros(0, dtype=np.int64) for p, r in out.items()}


def evaluate(model, rows: Rows, batch_size: int = 256, exclude_seen: bool = False,
             features: dict | None = None, ctx: distributed.Context = distributed.SINGLE) -> dict:
    """The report (see summarise) for the last item of each row given everything before it,
    ranked over the full catalogue (the model never receives the target, nor its side
    features). `exclude_seen` picks the top-level policy; both are always reported. Under
    torchrun each rank scores its shard of the rows (with their features)."""
    rows = as_ragged(rows)
    features = features and {c: as_ragged(v) for c, v in features.items()}
    if ctx.active:  # shard row indices: the rows and their features are cut alike
        index = np.asarray(distributed.shard(ctx, list(range(len(rows)))), dtype=np.int64)
        rows = rows.take(index)
        features = features and {c: v.take(index) for c, v in features.items()}
    histories, targets = split_history_target(rows)
    side = features and {c: v.drop_last(1) for c, v in features.items()}
    ranks = model_ranks(model, histories, targets, batch_size, side)
    return summarise(ranks, histories.lengths, exclude_seen, ctx)


def popularity_counts(train_rows: Rows, num_items: int, first_item_id: int = FIRST_ITEM_ID) -> np.ndarray:
    """Training count of every encoded id (float); reserved ids -inf, so they rank last."""
    counts = np.bincount(as_ragged(train_rows).values.astype(np.int64), minlength=num_items).astype(float)
    counts[:first_item_id] = -np.inf
    return counts


def popularity_ranks(counts: np.ndarray, histories: Rows, targets: np.ndarray,
                     chunk_rows: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """Each target's strict rank under both policies when items score their training counts.

    seen_kept: the items counted at least as often as the target, from the sorted counts.
    seen_excluded: minus the distinct history items among them (found on each chunk's
    (row, item) pairs); a target in its own history is a miss."""
    histories, targets = as_ragged(histories), np.asarray(targets, dtype=np.int64)
    own = counts[targets]
    at_least = len(counts) - np.searchsorted(np.sort(counts), own, side="left")
    kept = np.where(np.isfinite(own), at_least - 1, MISS)
    excluded = kept.copy()
    for start in range(0, len(histories), chunk_rows):
        part = histories[start:start + chunk_rows]
        items = part.values.astype(np.int64)
        rows = row_ids(part.offsets)
        order = np.lexsort((items, rows))
        items, rows = items[order], rows[order]
        distinct = np.ones(len(items), dtype=bool)
        distinct[1:] = (items[1:] != items[:-1]) | (rows[1:] != rows[:-1])
        items, rows = items[distinct], rows[distinct]
        target = targets[start:start + len(part)][rows]
        above = (counts[items] >= own[start:start + len(part)][rows]) & (items != target)
        seen_target = np.bincount(rows[items == target], minlength=len(part)) > 0
        fewer = kept[start:start + len(part)] - np.bincount(rows[above], minlength=len(part))
        excluded[start:start + len(part)] = np.where(seen_target | (kept[start:start + len(part)] == MISS),
                                                     MISS, fewer)
    return {"seen_kept": kept, "seen_excluded": excluded}


def evaluate_popularity(train_rows: Rows, eval_rows: Rows, num_items: int,
                        exclude_seen: bool = False) -> dict:
    """The popularity baseline (items scored by their training counts) on the same targets and
    with the same ranks, policies and buckets as evaluate()."""
    histories, targets = split_history_target(eval_rows)
    ranks = popularity_ranks(popularity_counts(train_rows, num_items, FIRST_ITEM_ID), histories, targets)
    return summarise(ranks, histories.lengths, exclude_seen)


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


def block_seen(scores: np.ndarray, histories: Rows) -> np.ndarray:
    """scores [B, N] with every item of row b's history set to -inf (in place; returned)."""
    histories = as_ragged(histories)
    scores[row_ids(histories.offsets), histories.values.astype(np.int64)] = -np.inf
    return scores


__all__ = ["CUTOFFS", "POLICIES", "HISTORY_BUCKETS", "MISS", "ranking_metrics", "rank_metrics",
           "top_k_depth", "top_k_ranks",
           "strict_ranks", "model_ranks", "popularity_counts", "popularity_ranks", "summarise",
           "flat_metrics", "evaluate", "evaluate_popularity", "binary_auc", "group_auc", "log_loss",
           "block_seen"]
