"""Permutation LM (XLNet): spans of items are targets, predicted in a random factorisation order
through XLNet's query stream (perm_mask says who may see whom; target_mapping picks the targets).
Everything is built for the whole batch at once (Transformers4Rec loops over rows in Python)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from seqrec.preprocessing.arrays import PAD_ID

from ..backbones import PERMUTATION
from .base import MASK_ID, Task, ensure_one, mask_last


def span_mask(items: torch.Tensor, prob: float, max_span: int) -> torch.Tensor:
    """XLNet-style spans: per row a span length s in [1, max_span] and a context length
    ceil(s / prob); the sequence is cut into contexts and one span of s items is masked at a
    random offset inside each, so about `prob` of the items become targets."""
    b, t = items.shape
    dev = items.device
    span = torch.randint(1, max_span + 1, (b, 1), device=dev)
    context = torch.ceil(span / prob).long()
    pos = torch.arange(t, device=dev)[None]
    block, within = pos // context, pos % context
    offsets = (torch.rand(b, t, device=dev) * (context - span + 1)).long()  # one per block
    start = offsets.gather(1, block)
    real = items != PAD_ID
    masked = (within >= start) & (within < start + span) & real
    return ensure_one(masked, real)


def permutation_inputs(masked: torch.Tensor):
    """perm_mask [B, T, T] (1: i may not see j), target_mapping [B, P, T], target positions
    [B, P] and their validity [B, P], P = most targets in a row."""
    b, t = masked.shape
    dev = masked.device
    # A random order among the targets; the context (order -1) is seen by everyone and never
    # sees a target, and a target sees only targets earlier in the order.
    rank = torch.rand(b, t, device=dev).argsort(1).argsort(1)
    order = torch.where(masked, rank, torch.full_like(rank, -1))
    perm_mask = ((order[:, :, None] <= order[:, None, :]) & masked[:, None, :]).float()
    counts = masked.sum(1)
    p = int(counts.max())
    positions = torch.sort(masked.int(), dim=1, descending=True, stable=True).indices[:, :p]
    valid = torch.arange(p, device=dev)[None] < counts[:, None]
    target_mapping = F.one_hot(positions, t).float() * valid[..., None]
    return perm_mask, target_mapping, positions, valid


class PLM(Task):
    name = "plm"
    ATTENTION = (PERMUTATION,)
    uses_mask_token = True

    def loss(self, model, items, features=None):
        masked = mask_last(span_mask(items, self.cfg.plm_probability, self.cfg.plm_max_span), items,
                           self.cfg.mask_last_prob)
        perm_mask, target_mapping, positions, valid = permutation_inputs(masked)
        # The query stream never sees a target's own content (item and side features), so the
        # inputs stay the items.
        hidden = model.hidden_states(items, perm_mask=perm_mask, target_mapping=target_mapping,
                                     features=features)
        return model.item_loss(hidden[valid], items.gather(1, positions)[valid])

    def inference_hidden(self, model, items, positions, features=None):
        """The appended mask position is the one target: nobody sees its content."""
        b, t = items.shape
        target = F.one_hot(positions, t).float()  # [B, T]
        perm_mask = target[:, None, :].expand(b, t, t).contiguous()
        hidden = model.hidden_states(items, perm_mask=perm_mask, target_mapping=target[:, None, :],
                                     features=features)
        return hidden[:, 0]


__all__ = ["PLM", "span_mask", "permutation_inputs", "MASK_ID"]
