"""The metrics' former home; they live in training/evaluation.py (imported from here too)."""
from .evaluation import (CUTOFFS, binary_auc, popularity_counts, popularity_top,  # noqa: F401
                         popularity_top_unseen, ranking_metrics)
