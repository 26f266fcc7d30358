"""The hidden state at one read position per row, with the backbone's LAST block computed only
there. Scoring reads one position per session; every block but the last must run over the whole
window (the last block's keys and values come from it), the last block's attention query,
output projection and MLP are needed at the read position alone. For a 2-layer GPT-2 that is
about a third of the scorer's work.

Exact for GPT-2 in eval mode (the same operations on the same numbers, one query row instead of
all; tests/unit/test_read_position.py checks it equal to the full forward, with padding and side
features); any other backbone, or a GPT-2 with options this does not reproduce, runs the full
forward and reads the position from it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2Model
from transformers.masking_utils import create_causal_mask


def supports(backbone) -> bool:
    """Whether `hidden_at` runs the last block at the read position only for this backbone."""
    if not isinstance(backbone, GPT2Model) or backbone.training:
        return False
    cfg = backbone.config
    return not (cfg.add_cross_attention or cfg.scale_attn_by_inverse_layer_idx
                or cfg.reorder_and_upcast_attn or not cfg.scale_attn_weights)


def hidden_at(backbone: GPT2Model, embeds: torch.Tensor, mask: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
    """embeds [B, T, d] (right-padded; mask [B, T] 1 = real) -> the final hidden state [B, d] at
    positions [B], as GPT2Model(inputs_embeds=embeds, attention_mask=mask) gives it there."""
    batch, length, _ = embeds.shape
    position_ids = torch.arange(length, device=embeds.device)[None]
    hidden = backbone.drop(embeds + backbone.wpe(position_ids))
    *front, last = backbone.h
    if front:
        causal = create_causal_mask(config=backbone.config, inputs_embeds=embeds,
                                    attention_mask=mask, past_key_values=None,
                                    position_ids=position_ids)
        for block in front:
            hidden = block(hidden, None, causal, None, position_ids=position_ids)
    rows = torch.arange(batch, device=embeds.device)
    attn = last.attn
    q, k, v = attn.c_attn(last.ln_1(hidden)).split(attn.split_size, dim=2)
    heads, dim = attn.num_heads, attn.head_dim
    q = q[rows, positions].view(batch, 1, heads, dim).transpose(1, 2)  # [B, H, 1, D]
    k = k.view(batch, length, heads, dim).transpose(1, 2)
    v = v.view(batch, length, heads, dim).transpose(1, 2)
    # the read position sees itself and the real items before it (padding is to its right)
    seen = (torch.arange(length, device=embeds.device)[None] <= positions[:, None]) & mask.bool()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=seen[:, None, None, :],
                                         scale=dim ** -0.5)
    out = attn.resid_dropout(attn.c_proj(out.transpose(1, 2).reshape(batch, heads * dim)))
    hidden = hidden[rows, positions] + out
    hidden = hidden + last.mlp(last.ln_2(hidden))
    return backbone.ln_f(hidden)
