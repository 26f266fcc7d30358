"""Plain-text tables for people reading a terminal."""
from __future__ import annotations

METRICS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20", "mrr@20", "mrr")
POLICY_NAMES = {"seen_kept": "seen kept", "seen_excluded": "seen excluded"}


def metrics_table(result) -> str:
    """Valid and test, model and popularity, under both seen-item policies (strict ranks over
    the full catalogue), then test NDCG@10 per history-length bucket."""
    rows = []
    for split, model, popularity in (("valid", result.valid, result.popularity_valid),
                                     ("test", result.test, result.popularity_test)):
        for policy, name in POLICY_NAMES.items():
            rows += [(f"model / {split} / {name}", model[policy]),
                     (f"popularity / {split} / {name}", popularity[policy])]
    lines = [f"{'':34s}" + "".join(f"{m:>10s}" for m in METRICS)]
    lines += [f"{name:34s}" + "".join(f"{vals[m]:10.4f}" for m in METRICS) for name, vals in rows]
    buckets = result.test.get("by_history_length", {})
    if buckets:
        policy = result.test["policy"]
        lines.append(f"\ntest ndcg@10 by history length ({POLICY_NAMES[policy]})")
        lines.append(f"{'history':>10s}{'sessions':>10s}{'model':>10s}{'popularity':>12s}")
        pop = result.popularity_test["by_history_length"]
        for label, part in buckets.items():
            lines.append(f"{label:>10s}{part['sessions']:10d}{part[policy]['ndcg@10']:10.4f}"
                         f"{pop[label][policy]['ndcg@10']:12.4f}")
    return "\n".join(lines)
