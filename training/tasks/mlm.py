"""Masked LM: random positions are replaced by the learnable mask embedding and predicted from
both sides. At inference a mask is appended after the history (see Task.uses_mask_token)."""
from __future__ import annotations

from ..backbones import BIDIRECTIONAL
from .base import MASK_ID, Task, bernoulli_mask


class MLM(Task):
    name = "mlm"
    ATTENTION = (BIDIRECTIONAL,)
    uses_mask_token = True

    def loss(self, model, items):
        masked = bernoulli_mask(items, self.cfg.mask_prob)
        hidden = model.hidden_states(items.masked_fill(masked, MASK_ID))
        return model.item_loss(hidden[masked], items[masked])
