"""The hidden state at one read position per row, with the backbone's LAST block computed only
there. Scoring reads one position per session; every block but the last must run over the whole
window (the last block's keys and values come from it), the last block's attention query,
output projection and MLP are needed at the read position alone. For a 2-layer GPT-2 that is
about a third of the scorer's work. The blocks before it run with SDPA's causal flag alone, no
[B, T, T] padding mask built: the rows are right-padded, so a real position's past holds real
items only.

Exact for GPT-2 in eval mode (the same operations on the same numbers, one query row instead of
all; tests/unit/test_read_position.py checks it equal to the full forward, with padding, side
features and positions counted from the end); any other backbone, or a GPT-2 with options this does not reproduce, runs the full
forward and reads the position from it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2Model


def supports(backbone) -> bool:
    """Whether `hidden_at` runs the last block at the read position only for this backbone."""
    if not isinstance(backbone, GPT2Model) or backbone.training:
        return False
    cfg = backbone.config
    return not (cfg.add_cross_attention or cfg.scale_attn_by_inverse_layer_idx
                or cfg.reorder_and_upcast_attn or not cfg.scale_attn_weights)


def _heads(x: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """[B, T, heads * dim] -> [B, heads, T, dim]."""
    return x.view(x.shape[0], x.shape[1], heads, dim).transpose(1, 2)


def _causal_block(block, hidden: torch.Tensor) -> torch.Tensor:
    """One GPT-2 block over right-padded rows with the causal flag alone: a real position's past
    holds real items only, so no [B, T, T] padding mask is built (padding positions' states are
    never read: the last block masks them out)."""
    attn = block.attn
    q, k, v = (_heads(x, attn.num_heads, attn.head_dim)
               for x in attn.c_attn(block.ln_1(hidden)).split(attn.split_size, dim=2))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.head_dim ** -0.5)
    hidden = hidden + attn.resid_dropout(attn.c_proj(out.transpose(1, 2).flatten(2)))
    return hidden + block.mlp(block.ln_2(hidden))


def hidden_at(backbone: GPT2Model, embeds: torch.Tensor, mask: torch.Tensor,
              positions: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """embeds [B, T, d] (right-padded; mask [B, T] 1 = real) -> the final hidden state [B, d] at
    positions [B], as GPT2Model(inputs_embeds=embeds, attention_mask=mask,
    position_ids=position_ids) gives it there (position_ids None: 0..T-1)."""
    batch, length, _ = embeds.shape
    if position_ids is None:
        position_ids = torch.arange(length, device=embeds.device)[None]
    hidden = backbone.drop(embeds + backbone.wpe(position_ids))
    *front, last = backbone.h
    for block in front:
        hidden = _causal_block(block, hidden)
    rows = torch.arange(batch, device=embeds.device)
    attn = last.attn
    q, k, v = attn.c_attn(last.ln_1(hidden)).split(attn.split_size, dim=2)
    heads, dim = attn.num_heads, attn.head_dim
    q = _heads(q[rows, positions][:, None], heads, dim)  # [B, H, 1, D]
    k, v = _heads(k, heads, dim), _heads(v, heads, dim)
    # the read position sees itself and the real items before it (padding is to its right)
    seen = (torch.arange(length, device=embeds.device)[None] <= positions[:, None]) & mask.bool()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=seen[:, None, None, :],
                                         scale=dim ** -0.5)
    out = attn.resid_dropout(attn.c_proj(out.transpose(1, 2).reshape(batch, heads * dim)))
    hidden = hidden[rows, positions] + out
    hidden = hidden + last.mlp(last.ln_2(hidden))
    return backbone.ln_f(hidden)
