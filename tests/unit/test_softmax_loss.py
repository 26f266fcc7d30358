"""The fused item cross-entropy against the plain way it replaces: logits over the whole id space
(reserved ids -inf), then F.cross_entropy."""
import pytest
import torch
import torch.nn.functional as F

from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training import softmax_loss
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.softmax_loss import item_cross_entropy


def _inputs(n=300, d=16, vocab=203, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) * 0.5).requires_grad_()
    bias = (torch.randn(vocab, generator=g) * 0.1).requires_grad_()
    targets = torch.randint(FIRST_ITEM_ID, vocab, (n,), generator=g)
    return hidden, weight, bias, targets


def _smoothed_reference(logits, targets, smoothing):
    """Label smoothing over the real items (the reserved ids' -inf would make it infinite)."""
    logp = logits[:, FIRST_ITEM_ID:].log_softmax(1)
    nll = -logp.gather(1, (targets - FIRST_ITEM_ID)[:, None]).squeeze(1)
    return ((1 - smoothing) * nll - smoothing * logp.mean(1)).mean()


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk", [1, 7 * 200, 1 << 20])  # one row per chunk, uneven chunks, one chunk
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_gradients_equal_the_plain_softmax(monkeypatch, chunk, smoothing):
    monkeypatch.setattr(softmax_loss, "CHUNK_ELEMENTS", chunk)
    hidden, weight, bias, targets = _inputs()
    logits = hidden @ weight.T + bias
    logits[:, :FIRST_ITEM_ID] = float("-inf")
    plain = (F.cross_entropy(logits, targets) if not smoothing
             else _smoothed_reference(logits, targets, smoothing))
    fused = item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID, smoothing)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    got = _grads(fused * 3, hidden, weight, bias)
    for g, want in zip(got, _grads(plain * 3, hidden, weight, bias)):
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)
    # reserved ids are never scored: their rows of the item table get no gradient
    assert not got[1][:FIRST_ITEM_ID].any() and got[1][FIRST_ITEM_ID:].abs().sum() > 0


def test_no_grad_gives_the_same_loss_and_a_reserved_target_an_infinite_one():
    hidden, weight, bias, targets = _inputs()
    with_grad = item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID)
    with torch.no_grad():
        without = item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID)
    assert without.item() == pytest.approx(with_grad.item(), rel=1e-6) and not without.requires_grad
    targets[5] = FIRST_ITEM_ID - 1  # OOV: -inf logit in the plain softmax
    assert item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID).item() == float("inf")


def test_bf16_autocast_stays_close_to_fp32():
    hidden, weight, bias, targets = _inputs(n=512, d=64, vocab=1003)
    fp32 = item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = item_cross_entropy(hidden, weight, bias, targets, FIRST_ITEM_ID)
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    g32, g16 = _grads(fp32, weight)[0], _grads(bf16, weight)[0]
    assert g16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.99


def test_the_model_loss_matches_its_own_logits():
    """item_loss is the cross-entropy of logits(): what inference ranks by is what training fits."""
    torch.manual_seed(0)
    model = SequenceRecommender(ModelConfig(num_items=50, max_len=6, d_model=16, n_heads=2))
    hidden, targets = torch.randn(40, 16), torch.randint(FIRST_ITEM_ID, 50, (40,))
    plain = F.cross_entropy(model.logits(hidden), targets)
    assert model.item_loss(hidden, targets).item() == pytest.approx(plain.item(), rel=1e-5)


def test_gpt2_runs_the_fused_tanh_gelu_it_was_configured_with():
    """The swapped activation computes HF's gelu_new in training and in evaluation (the GPT-2
    config is unchanged)."""
    from transformers.activations import NewGELUActivation

    from seqrec.training.backbones import TanhGELU

    model = SequenceRecommender(ModelConfig(num_items=50, max_len=6, d_model=16, n_heads=2, backbone="gpt2"))
    assert model.backbone.config.activation_function == "gelu_new"
    acts = [m.mlp.act for m in model.backbone.h]
    assert all(isinstance(a, TanhGELU) for a in acts)
    x = torch.randn(1000) * 4
    for mode in (True, False):  # the fused kernel, then the sigmoid form scoring runs
        acts[0].train(mode)
        torch.testing.assert_close(acts[0](x), NewGELUActivation()(x), rtol=1e-5, atol=1e-5)
