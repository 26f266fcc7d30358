"""The one scorer: encoded histories -> ranked next items. `recommend()` (offline evaluation) runs
it eagerly; `seqrec export` writes the same module as a torch.export program (scorer.pt2) that the
served model step runs. Everything that decides an answer is here, once:

- the model's window: the LAST `keep` items of each sent history (keep = max_len, or max_len - 1
  for models read at an appended mask), whatever the sent history's length;
- the read position: the last real item (causal models) or a mask appended after it (models
  trained with a mask: MLM, PLM, RTD);
- exclusions: reserved ids (padding, null, out-of-vocabulary) are never recommended;
  `exclude_seen` removes every item of the WHOLE sent history (not only the window the model
  reads); `exclude` removes caller-given encoded ids;
- top-k, best first. Excluded items score -inf, so when fewer than k remain the tail is -inf.

Memory: scores are [B, num_items]; exclusions are scattered into them ([B, T] + [B, E] indices),
never compared pairwise.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, PAD_ID

from .data import as_ragged, pad_right
from .features import check_aligned, pad_features
from .tasks.base import MASK_ID

SIDE_KEYS = ("categorical", "continuous")  # stacked side tensors: [B, T, C] int64 / [B, T, F] float32


def _window(x: torch.Tensor, start: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T, ...] right-padded -> [B, width, ...]: row b's entries from start[b], zero-padded
    on the right (padding does not change a row's scores)."""
    pad = x.new_zeros((x.shape[0], width, *x.shape[2:]))
    extended = torch.cat([x, pad], dim=1)
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return extended[rows, start[:, None] + torch.arange(width, device=x.device)[None]]


def window_width(longest: int, keep: int) -> int:
    """How wide the model's window is for a batch whose longest history has `longest` items:
    min(longest, keep), never 0."""
    return max(min(int(longest), int(keep)), 1)


class Scorer(nn.Module):
    """forward(items [B, T] int64 right-padded whole histories, exclude [B, E] int64 encoded ids
    (PAD_ID = none), depth [D, 0] (its length is k: a shape, so an exported program takes any k),
    side {"categorical": [B, T, C], "continuous": [B, T, F]} aligned with items, or None)
    -> (top ids [B, D] int64, top scores [B, D] float32), best first."""

    def __init__(self, model, exclude_seen: bool = False, fixed_width: bool = False):
        super().__init__()
        self.fixed_width = bool(fixed_width)  # for torch.export (see _window)
        self.model = model
        self.exclude_seen = bool(exclude_seen)
        self.with_mask = bool(model.task.uses_mask_token)
        self.keep = model.task.history_window(model.cfg.max_len)  # the one window definition

    def scores(self, items: torch.Tensor, side: dict | None = None,
               width: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item scores [B, num_items] read from each history's window."""
        lengths = (items != PAD_ID).sum(dim=1)
        start = (lengths - self.keep).clamp(min=0)
        w = window_width(items.shape[1], self.keep) if width is None else width.shape[0]
        window = _window(items, start, w)  # [B, W]
        n = lengths - start  # real items in the window
        features = None
        if side is not None:
            cfg = self.model.cfg.side
            stacked = {key: _window(side[key], start, w)
                       for key in SIDE_KEYS if key in side}
            features = {c: stacked["categorical"][..., j] for j, c in enumerate(cfg.categorical)}
            features.update({c: stacked["continuous"][..., j] for j, c in enumerate(cfg.continuous)})
        if self.with_mask:
            window = torch.cat([window, torch.full_like(window[:, :1], PAD_ID)], dim=1)
            rows = torch.arange(window.shape[0], device=window.device)
            window = window.index_put((rows, n), torch.full_like(n, MASK_ID))
            positions = n
            # the appended mask shows the mask embedding alone: its side values (0) are never read
            if features is not None:
                features = {c: torch.cat([f, torch.zeros_like(f[:, :1])], dim=1)
                            for c, f in features.items()}
        else:
            positions = n - 1
        hidden = self.model.task.inference_hidden(self.model, window, positions, features)
        return self.model.logits(hidden).float()

    @staticmethod
    def excluded(scores: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor,
                 exclude_seen: bool) -> torch.Tensor:
        """Scores [B, num_items] with every item that may not be recommended at -inf: reserved
        ids, caller-given `exclude` ids and, with `exclude_seen`, the whole sent history."""
        blocked = torch.full_like(scores[:, :1], float("-inf"))
        scores = torch.cat([blocked.expand(-1, FIRST_ITEM_ID), scores[:, FIRST_ITEM_ID:]], dim=1)
        if exclude_seen:  # the whole sent history; its padding is a reserved id already
            scores = scores.scatter(1, items, blocked.expand_as(items))
        return scores.scatter(1, exclude, blocked.expand_as(exclude))

    def forward(self, items: torch.Tensor, exclude: torch.Tensor, depth: torch.Tensor,
                side: dict | None = None, width: torch.Tensor | None = None):
        scores = self.excluded(self.scores(items, side, width), items, exclude, self.exclude_seen)
        top = torch.topk(scores, depth.shape[0], dim=1)
        return top.indices, top.values


def stack_side(cfg, padded: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Per-column [B, T] tensors -> the scorer's {"categorical": [B, T, C], "continuous": ...}."""
    if cfg is None or padded is None:
        return None
    out = {}
    if cfg.categorical:
        out["categorical"] = torch.stack([padded[c] for c in cfg.categorical], dim=-1)
    if cfg.continuous:
        out["continuous"] = torch.stack([padded[c].float() for c in cfg.continuous], dim=-1)
    return out


def scorer_inputs(model, histories: Sequence[np.ndarray], features: dict | None = None,
                  exclude: Sequence[Sequence[int]] | None = None):
    """Ragged encoded histories (+ side features, + encoded exclusions per row) -> the scorer's
    (items [B, T], exclude [B, E], side) tensors on the model's device, nothing cut off."""
    histories = as_ragged(histories)
    if (histories.lengths == 0).any():
        raise ValueError("every history needs at least one item")
    device = next(model.parameters()).device
    items = pad_right(histories).to(device)
    if exclude is None:
        excl = torch.full((len(histories), 1), PAD_ID, dtype=torch.int64)
    else:
        if len(exclude) != len(histories):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(histories)} histories")
        excl = pad_right([np.asarray(e, dtype=np.int64).reshape(-1) for e in exclude])
    side = None
    if model.cfg.side is not None:
        check_aligned(histories, features, model.cfg.side)
        side = stack_side(model.cfg.side, pad_features(model.cfg.side, features, None))
        side = {key: t.to(device) for key, t in side.items()}
    return items, excl.to(device), side


def width_tensor(items: torch.Tensor, keep: int) -> torch.Tensor:
    """The [W, 0] tensor whose length tells an exported scorer how wide its window is."""
    return torch.empty((window_width(items.shape[1], keep), 0), device=items.device)


def depth_tensor(k: int, device=None) -> torch.Tensor:
    """The [k, 0] tensor whose length tells the scorer how many items to rank."""
    return torch.empty((k, 0), device=device)
