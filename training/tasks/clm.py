"""Causal LM: each position predicts the item after it."""
from __future__ import annotations

import torch

from seqrec.preprocessing.arrays import PAD_ID

from ..backbones import BIDIRECTIONAL, CAUSAL
from ..data import target_windows
from ..features import map_features
from .base import Task


class CLM(Task):
    """Loss at every position. Needs causal attention: with bidirectional attention position t
    would see item t+1, its own target."""

    name = "clm"
    ATTENTION = (CAUSAL,)
    WINDOW_OVERLAP = 1  # a window's first item has no input before it

    def loss(self, model, items, features=None):
        inputs, targets = items[:, :-1], items[:, 1:]
        keep = targets != PAD_ID  # right padding: a real target always has a real input
        hidden = model.hidden_states(inputs, features=map_features(features, lambda f: f[:, :-1]))[keep]
        return model.item_loss(hidden, targets[keep])

    def loss_elements(self, items):
        return int((items[:, 1:] != PAD_ID).sum())  # the mean is over real target positions


class CLMLast(Task):
    """CoVE-style: every training sequence is broken into its prefixes [a]->b, [a,b]->c, ... and
    the loss is taken at the last position only: every item after the first is a target once,
    read after (at most) one history window before it. The prefixes are index ranges into the
    flat values, gathered per batch, so the data is never copied per prefix. Inference reads
    the last history position, exactly what was trained, so any attention works."""

    name = "clm-last"
    ATTENTION = (CAUSAL, BIDIRECTIONAL)

    def training_units(self, lengths, max_len):
        return target_windows(lengths, self.training_span(max_len))

    def window_targets(self, lengths):
        return len(lengths)  # the last item of each window

    def loss(self, model, items, features=None):
        rows = torch.arange(len(items), device=items.device)
        last = (items != PAD_ID).sum(1) - 1
        targets = items[rows, last]
        inputs = items.clone()
        inputs[rows, last] = PAD_ID  # the target's side features go with it (padding is zeroed)
        hidden = model.hidden_states(inputs[:, :-1], features=map_features(features, lambda f: f[:, :-1]))
        hidden = hidden[rows, last - 1]
        return model.item_loss(hidden, targets)

    def loss_elements(self, items):
        return len(items)  # one target per row
