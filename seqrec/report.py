"""Plain-text tables for people reading a terminal."""
from __future__ import annotations

METRICS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20", "mrr@20")


def metrics_table(result) -> str:
    rows = [
        ("model / valid", result.valid),
        ("popularity / valid", result.popularity_valid),
        ("model / test", result.test),
        ("popularity / test", result.popularity_test),
    ]
    lines = [f"{'':20s}" + "".join(f"{m:>11s}" for m in METRICS)]
    lines += [f"{name:20s}" + "".join(f"{vals[m]:11.4f}" for m in METRICS) for name, vals in rows]
    return "\n".join(lines)
