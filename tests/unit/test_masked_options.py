"""The masked-task options: last-item masking, the learning-rate schedule, input normalisation
and embedding scale, label smoothing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqrec.preprocessing.workflow import FIRST_ITEM_ID, PAD_ID
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.tasks.base import bernoulli_mask, mask_last
from seqrec.training.data import Ragged
from seqrec.training.loop import (DEFAULT_BATCH_SIZE, MASKED_MIN_BATCH, MASKED_MIN_STEPS, Trainer,
                                  default_batch_size, lr_factor)
from seqrec.training.trainer import TrainConfig


def _items():
    torch.manual_seed(0)
    items = torch.randint(FIRST_ITEM_ID, 50, (64, 9))
    lengths = torch.randint(1, 10, (64,))
    return items.masked_fill(torch.arange(9)[None] >= lengths[:, None], PAD_ID), lengths


def test_mask_last_always_masks_the_last_real_item_and_nothing_else_new():
    items, lengths = _items()
    base = bernoulli_mask(items, 0.2)
    masked = mask_last(base.clone(), items, 1.0)
    rows = torch.arange(len(items))
    assert masked[rows, lengths - 1].all()
    other = masked.clone()
    other[rows, lengths - 1] = base[rows, lengths - 1]
    assert torch.equal(other, base)  # only the last positions changed
    assert not masked[items == PAD_ID].any()


def test_mask_last_probability_is_per_row():
    items, lengths = _items()
    items = items.repeat(50, 1)
    lengths = lengths.repeat(50)
    none = torch.zeros_like(items, dtype=torch.bool)
    share = mask_last(none, items, 0.3)[torch.arange(len(items)), lengths - 1].float().mean()
    assert 0.25 < float(share) < 0.35
    assert not mask_last(torch.zeros_like(none), items, 0.0).any()


def test_lr_factor_warms_up_then_decays():
    assert lr_factor(0, 10, 100, "none") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "none") == 1.0
    assert lr_factor(50, 10, 100, "none") == 1.0
    assert lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "linear") == 0.0
    assert lr_factor(5, 0, 100, "none") == 1.0


def test_schedule_options_are_checked():
    with pytest.raises(ValueError, match="lr_decay 'step'"):
        TrainConfig(lr_decay="step")
    with pytest.raises(ValueError, match="warmup_steps -1"):
        TrainConfig(warmup_steps=-1)


@pytest.mark.parametrize("options, message", [
    ({"mask_last_prob": 1.5}, "mask_last_prob"), ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"embedding_std": 0.0}, "embedding_std")])
def test_bad_masked_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(num_items=10, backbone="bert", task="mlm", **options)


def test_embedding_scale_and_input_norm():
    cfg = ModelConfig(num_items=500, max_len=10, backbone="xlnet", task="plm", embedding_std=0.125,
                      embedding_norm=True)
    model = SequenceRecommender(cfg)
    assert model.item_embedding.weight[FIRST_ITEM_ID:].std().item() == pytest.approx(0.125, rel=0.1)
    assert model.mask_embedding.std().item() == pytest.approx(0.125, rel=0.5)
    emb = model.embed(torch.tensor([[FIRST_ITEM_ID, FIRST_ITEM_ID + 1, -1]]))
    assert emb.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(cfg.d_model), rel=0.05)


def test_label_smoothing_raises_the_loss_of_a_confident_model():
    torch.manual_seed(0)
    hidden, targets = torch.randn(8, 64) * 10, torch.randint(FIRST_ITEM_ID, 100, (8,))
    losses = []
    for smoothing in (0.0, 0.1):
        model = SequenceRecommender(ModelConfig(num_items=100, max_len=5, label_smoothing=smoothing))
        with torch.no_grad():
            model.item_embedding.weight.copy_(torch.randn(100, 64))
            model.item_embedding.weight[targets] = hidden / 10
        losses.append(model.item_loss(hidden, targets).item())
    assert math.isfinite(losses[1]) and losses[1] > losses[0]


def test_a_checkpoint_saved_before_the_masked_options_loads_as_it_was(tmp_path):
    """config.json without embedding_norm & co. means the model of that time (no input LayerNorm
    on XLNet): today's defaults must not add layers its model.pt does not have."""
    import json

    import torch

    from seqrec.training.checkpoint import load_checkpoint, save_checkpoint
    from seqrec.training.model import ModelConfig, SequenceRecommender

    old = SequenceRecommender(ModelConfig(num_items=20, max_len=8, backbone="xlnet", task="plm",
                                          d_model=16, n_layers=1, n_heads=2, embedding_norm=False))
    save_checkpoint(old, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("mask_last_prob", "label_smoothing", "embedding_std", "embedding_norm"):
        saved.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = load_checkpoint(tmp_path)
    assert loaded.cfg.embedding_norm is False
    for name, tensor in old.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_positions_from_the_end_put_the_last_real_item_at_the_last_position():
    cfg = ModelConfig(num_items=50, max_len=8, backbone="bert", task="mlm", positions="end", dropout=0.0)
    model = SequenceRecommender(cfg).eval()
    items = torch.tensor([[5, 6, 7, -1, PAD_ID, PAD_ID], [5, 6, 7, 8, 9, -1]])
    pos = model.position_ids((items != PAD_ID).long())
    assert pos.tolist() == [[4, 5, 6, 7, 0, 0], [2, 3, 4, 5, 6, 7]]
    # the same history read in a wider batch, or numbered from the start, differs only as it should
    wide = torch.cat([items[:1], torch.full((1, 4), PAD_ID)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(wide)[0, :4], model.hidden_states(items[:1])[0, :4])
        start = SequenceRecommender(ModelConfig(**{**cfg.to_dict(), "positions": "start"}))
        start.load_state_dict(model.state_dict())
        assert not torch.allclose(start.eval().hidden_states(items[:1])[0, :4],
                                  model.hidden_states(items[:1])[0, :4])
    with pytest.raises(ValueError, match="positions 'middle'"):
        ModelConfig(num_items=50, backbone="bert", task="mlm", positions="middle")


def _trainer(backbone, task, n_rows, batch_size=None):
    rng = np.random.default_rng(0)
    rows = Ragged.from_lists([rng.integers(FIRST_ITEM_ID, 40, 6) for _ in range(n_rows)])
    cfg = ModelConfig(backbone=backbone, task=task, d_model=8, n_layers=1, n_heads=1, num_items=40, max_len=8)
    trainer = Trainer(cfg, rows, None, seed=0, lr=1e-3, weight_decay=0.0, device="cpu", batch_size=batch_size)
    return trainer, trainer.units(rows)


def test_default_batch_gives_masked_tasks_enough_steps_per_epoch():
    causal, _ = _trainer("gpt2", "clm", 4)
    masked, _ = _trainer("bert", "mlm", 4)
    for n in (1, MASKED_MIN_STEPS * MASKED_MIN_BATCH, 10 ** 7):
        assert default_batch_size(causal.model, n) == DEFAULT_BATCH_SIZE
    assert default_batch_size(masked.model, 10) == MASKED_MIN_BATCH  # never below the floor
    assert default_batch_size(masked.model, 10 ** 7) == DEFAULT_BATCH_SIZE  # large data keeps 64
    for n in range(MASKED_MIN_STEPS * MASKED_MIN_BATCH, MASKED_MIN_STEPS * DEFAULT_BATCH_SIZE, 997):
        batch = default_batch_size(masked.model, n)
        assert MASKED_MIN_BATCH <= batch < DEFAULT_BATCH_SIZE
        assert -(-n // batch) >= MASKED_MIN_STEPS  # an epoch's steps


@pytest.mark.parametrize("batch_size", [None, 7])
def test_trainer_epoch_takes_the_configured_or_default_batch(batch_size):
    trainer, examples = _trainer("bert", "mlm", 50, batch_size)
    expected = batch_size or default_batch_size(trainer.model, len(examples))
    assert trainer.batch_for(examples) == expected
    trainer.schedule(examples, epochs=1, warmup_steps=0, decay="none")
    trainer.epoch(examples)
    assert trainer.scheduler.last_epoch == -(-len(examples) // expected)  # optimizer steps taken


def test_batch_size_is_checked():
    with pytest.raises(ValueError, match="batch_size 0"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize("backbone, task, want", [
    ("bert", "mlm", 1.0), ("electra", "rtd", 1.0), ("xlnet", "plm", 0.0), ("gpt2", "clm", 0.0)])
def test_last_item_masking_defaults_per_task_and_an_explicit_value_wins(backbone, task, want):
    """The tasks read at an appended mask (MLM, RTD) train with the last item masked."""
    assert ModelConfig(num_items=10, backbone=backbone, task=task).mask_last_prob == want
    assert ModelConfig(num_items=10, backbone=backbone, task=task, mask_last_prob=0.3).mask_last_prob == 0.3
