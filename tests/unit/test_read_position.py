"""The read-position path (training/read_position.py) equals the full forward read at that
position: GPT-2 of one and several layers, right-padded rows of different lengths, a mask
embedding and side features through the model, and other backbones untouched."""
from __future__ import annotations

import torch

from seqrec.training import read_position
from seqrec.training.model import ModelConfig, SequenceRecommender


def _model(**kw):
    torch.manual_seed(0)
    cfg = dict(num_items=60, max_len=12, d_model=16, n_heads=2, n_layers=2, backbone="gpt2")
    cfg.update(kw)
    return SequenceRecommender(ModelConfig(**cfg)).eval()


def _rows():
    lengths = torch.tensor([12, 5, 1, 9])
    items = torch.randint(3, 60, (4, 12))
    items[torch.arange(12)[None] >= lengths[:, None]] = 0
    return items, lengths - 1


def _full(model, items, positions):
    hidden = model.hidden_states(items)
    return hidden[torch.arange(len(items)), positions]


def test_gpt2_read_position_equals_the_full_forward():
    for layers in (1, 2, 3):
        model = _model(n_layers=layers)
        assert read_position.supports(model.backbone)
        items, positions = _rows()
        with torch.no_grad():
            got = model.hidden_at(items, positions)
            want = _full(model, items, positions)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # a read position before the row's end (its later items unseen) as well
        with torch.no_grad():
            early = torch.tensor([3, 2, 0, 4])
            torch.testing.assert_close(model.hidden_at(items, early), _full(model, items, early),
                                       atol=1e-5, rtol=1e-5)


def test_positions_counted_from_the_end_reach_the_read_position_path():
    model = _model(positions="end")
    items, positions = _rows()
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_at(items, positions), _full(model, items, positions),
                                   atol=1e-5, rtol=1e-5)


def test_training_mode_and_other_backbones_take_the_full_forward():
    model = _model()
    model.train()
    assert not read_position.supports(model.backbone)
    llama = _model(backbone="llama")
    assert not read_position.supports(llama.backbone)
    items, positions = _rows()
    with torch.no_grad():
        torch.testing.assert_close(llama.hidden_at(items, positions), _full(llama, items, positions))
