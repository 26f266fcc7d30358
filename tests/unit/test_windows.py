"""Sliding training windows over long histories, and the one window definition shared by training
and the scorer: checked against brute-force references and through real models' gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, offsets_from_lengths
from seqrec.training.data import Ragged, gather_windows, sliding_windows, target_windows
from seqrec.training.loop import training_units
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.scoring import Scorer


def _covered(rows, starts, ends, lengths, first_target):
    """How often each (row, position) is a target of some window (positions from first_target on
    inside each window), by brute force."""
    hits = [np.zeros(n, dtype=int) for n in lengths]
    for r, s, e in zip(rows, starts, ends):
        hits[r][s + first_target:e] += 1
    return hits


@pytest.mark.parametrize("span,overlap", [(5, 1), (2, 1), (4, 0), (3, 0), (7, 1)])
def test_sliding_windows_cover_every_target_once(span, overlap):
    lengths = np.random.default_rng(span).integers(0, 30, size=60)
    lengths[:3] = [span, span + 1, span - overlap + 1]
    rows, starts, ends = sliding_windows(lengths, span, span - overlap)
    assert ((ends - starts >= 2) & (ends - starts <= span) & (starts >= 0)).all()
    assert (ends <= lengths[rows]).all()
    for r, (n, hit) in enumerate(zip(lengths, _covered(rows, starts, ends, lengths, overlap))):
        if overlap:  # causal: every item after the first is a target exactly once
            assert (hit[1:] == 1).all() and (n == 0 or hit[0] == 0), (r, n, hit)
        else:  # masked: every item in one window, but a lone oldest item (nothing to learn from)
            lone = n % span == 1
            assert (hit[int(lone):] == 1).all() and (not lone or hit[0] == 0), (r, n, hit)
    # the most recent window of each row is full (or the whole row)
    last = np.flatnonzero(np.r_[rows[1:] != rows[:-1], True]) if len(rows) else []
    first_of_row = {r: i for i, r in reversed(list(enumerate(rows)))}
    for r, i in first_of_row.items():
        assert ends[i] == lengths[r] and ends[i] - starts[i] == min(span, lengths[r])
    assert len(last) == len(first_of_row)


def test_target_windows_one_per_target_with_at_most_span_items():
    lengths = np.array([0, 1, 2, 9, 4])
    rows, starts, ends = target_windows(lengths, 3)
    expected = [(r, max(0, t + 1 - 3), t + 1) for r, n in enumerate(lengths) for t in range(1, n)]
    assert list(zip(rows.tolist(), starts.tolist(), ends.tolist())) == expected


def test_gather_windows_equals_slicing():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.integers(3, 50, size=40))
    starts = torch.tensor([0, 5, 37, 12])
    lengths = torch.tensor([3, 1, 3, 6])
    out = gather_windows(values, starts, lengths)
    for b in range(4):
        row = values[starts[b]:starts[b] + lengths[b]].tolist()
        assert out[b].tolist() == row + [0] * (6 - len(row))
    floats = gather_windows(values.float()[:, None].repeat(1, 2), starts, lengths)  # [N, C] values
    assert floats.shape == (4, 6, 2) and floats[1, 1:].eq(0).all()


def _model(task, backbone="gpt2", max_len=6):
    torch.manual_seed(0)
    return SequenceRecommender(ModelConfig(num_items=30, max_len=max_len, backbone=backbone, task=task,
                                           d_model=16, n_layers=1, n_heads=2, dropout=0.0))


@pytest.mark.parametrize("task", ["clm", "clm-last"])
def test_long_histories_train_every_interaction_as_a_target_once(task):
    lengths = np.array([40, 7, 1, 2, 13])
    rows = Ragged(np.arange(int(lengths.sum())) % 27 + FIRST_ITEM_ID, offsets_from_lengths(lengths))
    model = _model(task)
    examples = training_units(model, rows, model.cfg.max_len)
    assert examples.targets == int((lengths - 1).clip(min=0).sum())  # not only the last window's
    batch = examples.batch(torch.arange(len(examples)))[0]
    assert batch.shape[1] == model.cfg.max_len + 1  # a full history window plus its target


@pytest.mark.parametrize("backbone,task", [("gpt2", "clm"), ("gpt2", "clm-last"), ("bert", "mlm"),
                                           ("llama", "clm")])
def test_inference_window_positions_all_receive_training(backbone, task):
    """A history that fills the window is read at positions 0..keep-1 (+ the mask's); every one
    of them must get gradient from the training batches, else its position embedding (GPT-2's
    learned table) is untrained exactly where full windows are read."""
    max_len = 6
    model = _model(task, backbone, max_len)
    keep = Scorer(model).keep
    read = keep + int(model.task.uses_mask_token)  # positions the scorer feeds for a full window
    assert read == max_len  # the whole position table is used at inference...
    lengths = np.array([30, 25])
    rows = Ragged(np.arange(int(lengths.sum())) % 27 + FIRST_ITEM_ID, offsets_from_lengths(lengths))
    examples = training_units(model, rows, max_len)
    torch.manual_seed(1)
    model.train()
    model.loss(*examples.batch(torch.arange(len(examples)))).backward()
    table = [p for n, p in model.named_parameters() if "position" in n or n.endswith("wpe.weight")]
    if not table:  # rotary positions (Llama): no table; the widths must still agree
        widths = examples.lengths - int(not model.task.uses_mask_token)
        assert int(widths.max()) == read
        return
    grad = table[0].grad.abs().sum(1)
    assert (grad[:read] > 0).all(), grad  # ...and every position of it is trained


def test_scorer_keeps_the_task_window():
    assert Scorer(_model("clm")).keep == 6
    assert Scorer(_model("mlm", "bert")).keep == 5
