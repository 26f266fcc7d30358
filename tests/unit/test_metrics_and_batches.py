"""Metrics by hand and the batch layout (padding, CLM-last prefixes) on small arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.training.data import pad_right
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.evaluation import binary_auc, ranking_metrics


def test_ranking_metrics_by_hand():
    top = np.array([[5, 6, 7], [1, 2, 3], [9, 8, 7]])
    m = ranking_metrics(top, np.array([5, 3, 4]), cutoffs=(2, 3))
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 3)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)


def test_pad_right_keeps_the_most_recent_items():
    out = pad_right([np.arange(1, 8), np.array([9])], max_len=4)
    assert out.tolist() == [[4, 5, 6, 7], [9, 0, 0, 0]]


def test_clm_last_prefixes_are_index_ranges():
    from seqrec.training.data import Ragged
    from seqrec.training.loop import training_units

    model = SequenceRecommender(ModelConfig(num_items=12, max_len=2, task="clm-last", d_model=8,
                                            n_layers=1, n_heads=1))
    rows = Ragged.from_lists([np.array([5, 6, 7]), np.array([5]), np.array([8, 9]), np.array([4, 5, 6, 7])])
    examples = training_units(model, rows, model.cfg.max_len)
    out = examples.batch(torch.arange(len(examples)))[0]
    # every item after the first is a target once, read after at most max_len history items
    assert out.tolist() == [[5, 6, 0], [5, 6, 7], [8, 9, 0], [4, 5, 0], [4, 5, 6], [5, 6, 7]]
    assert examples.targets == 6


def test_map_auc_and_unseen_popularity_by_hand():
    from seqrec.training.evaluation import popularity_ranks

    m = ranking_metrics(np.array([[5, 6, 7], [1, 2, 3]]), np.array([6, 9]), cutoffs=(3,))
    assert m["map@3"] == pytest.approx(0.5 / 2)  # one relevant item: AP = 1 / rank
    assert binary_auc(np.array([0.9, 0.1, 0.8, 0.3]), np.array([1, 0, 0, 1])) == pytest.approx(3 / 4)
    assert binary_auc(np.ones(4), np.array([1, 0, 0, 1])) == pytest.approx(0.5)  # ties
    assert binary_auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    counts = np.array([-np.inf, -np.inf, -np.inf, 5, 9, 1, 7])
    # order by count: 4 (9), 6 (7), 3 (5), 5 (1)
    ranks = popularity_ranks(counts, [np.array([4]), np.array([6, 3])], np.array([3, 5]))
    assert ranks["seen_kept"].tolist() == [2, 3]
    assert ranks["seen_excluded"].tolist() == [1, 1]
