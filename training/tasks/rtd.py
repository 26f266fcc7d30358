"""Replaced token detection (ELECTRA): a generator (an MLM) fills the masked positions with
sampled items; a discriminator head on the main backbone learns which positions were replaced.
loss = generator MLM + rtd_lambda * discriminator BCE (+ the main model's MLM when the generator
is a separate, smaller backbone, so the recommending model still learns to score items).
The item embeddings are shared by generator and discriminator."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.preprocessing.arrays import PAD_ID

from ..backbones import BIDIRECTIONAL, build_backbone
from .base import MASK_ID, Task, bernoulli_mask, mask_last

GENERATORS = ("tied", "separate")


class RTD(Task):
    name = "rtd"
    ATTENTION = (BIDIRECTIONAL,)
    uses_mask_token = True  # the main model recommends as an MLM
    # as MLM: the generator's masks include the last item, as the appended mask at inference
    # (bench/masked.py, MovieLens-100k: 0.0444 -> 0.0541 at batch 16, 0.0287 -> 0.0319 at 64)
    DEFAULTS = {"mask_last_prob": 1.0}

    def build_modules(self, model):
        modules = {"discriminator": nn.Linear(self.cfg.d_model, 1)}
        if self.cfg.rtd_generator == "separate":
            modules["generator"] = build_backbone(self.cfg, n_layers=self.cfg.rtd_generator_layers)
        return modules

    def _generator(self, model):
        return model.task_modules["generator"] if "generator" in model.task_modules else model.backbone

    def corrupt(self, model, items, features=None):
        """(generator loss, corrupted items, replaced [B, T] bool, masked [B, T] bool)."""
        masked = mask_last(bernoulli_mask(items, self.cfg.mask_prob), items, self.cfg.mask_last_prob)
        inputs = items.masked_fill(masked, MASK_ID)
        hidden = model.hidden_states(inputs, backbone=self._generator(model), features=features)[masked]
        gen_loss = model.item_loss(hidden, items[masked])
        with torch.no_grad():  # sampling is not differentiable: the generator learns from its MLM
            probs = torch.softmax(model.logits(hidden.detach()), dim=-1)
            sampled = torch.multinomial(probs, 1).squeeze(1)
        corrupted = items.clone()
        corrupted[masked] = sampled
        # A sample equal to the original is not a replacement (as in ELECTRA).
        return gen_loss, corrupted, corrupted != items, masked

    def discriminate(self, model, corrupted, features=None):
        """Replaced-position logits [B, T] from the main backbone. A replaced position keeps the
        side features of the interaction it replaced (the context the generator filled in)."""
        return model.task_modules["discriminator"](model.hidden_states(corrupted, features=features)).squeeze(-1)

    def loss(self, model, items, features=None):
        gen_loss, corrupted, replaced, masked = self.corrupt(model, items, features)
        real = items != PAD_ID
        logits = self.discriminate(model, corrupted, features)
        disc_loss = F.binary_cross_entropy_with_logits(logits[real], replaced[real].float())
        loss = gen_loss + self.cfg.rtd_lambda * disc_loss
        if "generator" in model.task_modules:
            hidden = model.hidden_states(items.masked_fill(masked, MASK_ID), features=features)
            loss = loss + model.item_loss(hidden[masked], items[masked])
        return loss
