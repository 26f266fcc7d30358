"""FastDropout: nn.Dropout's semantics with a numpy-drawn mask, swapped into every backbone."""
import pytest
import torch
from torch import nn

from seqrec.training.backbones import BACKBONES, build_backbone
from seqrec.training.dropout import FastDropout
from seqrec.training.model import ModelConfig


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_the_right_share_and_keeps_the_expectation(p):
    layer = FastDropout(p).train()
    x = torch.ones(400, 500)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 200,000 draws: 5 standard deviations is ~0.0055 at p=0.5
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 0.01


def test_identity_in_evaluation_and_at_zero():
    x = torch.randn(8, 16)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.5)


def test_the_mask_follows_torch_seed_and_differs_between_calls():
    layer = FastDropout(0.5).train()
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a, b = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), a) and not torch.equal(a, b)


def test_gradient_is_the_scaled_mask_and_bf16_stays_bf16():
    layer = FastDropout(0.25).train()
    x = torch.randn(32, 32, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.allclose(x.grad, (y.detach() != 0).float() / 0.75)
    assert layer(torch.ones(4, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_is_built_with_fast_dropout(backbone):
    cfg = ModelConfig(num_items=50, max_len=12, backbone=backbone, task="clm-last", d_model=16,
                      n_layers=1, n_heads=2, dropout=0.1)
    model = build_backbone(cfg)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    if backbone != "llama":  # Llama's only dropout is inside its attention call (no module)
        assert any(isinstance(m, FastDropout) and m.p == pytest.approx(0.1) for m in model.modules())
