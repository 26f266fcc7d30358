"""Masked LM: random positions are replaced by the learnable mask embedding and predicted from
both sides. At inference a mask is appended after the history (see Task.uses_mask_token)."""
from __future__ import annotations

from ..backbones import BIDIRECTIONAL
from .base import MASK_ID, Task, bernoulli_mask, mask_last


class MLM(Task):
    name = "mlm"
    ATTENTION = (BIDIRECTIONAL,)
    uses_mask_token = True
    # The last item is always a target too: training then holds what inference asks (a mask
    # after the history, nothing to its right); short sessions gain on validation.
    DEFAULTS = {"mask_last_prob": 1.0}

    def loss(self, model, items, features=None):
        masked = mask_last(bernoulli_mask(items, self.cfg.mask_prob), items, self.cfg.mask_last_prob)
        # a masked position shows the mask embedding alone (its side features are hidden too)
        hidden = model.hidden_states(items.masked_fill(masked, MASK_ID), features=features)
        return model.item_loss(hidden[masked], items[masked])
