"""Export the trained model's scoring as a `torch.export` program (scorer.pt2), so the served model
step needs torch only: no training code, no NVTabular.

The program maps a right-padded batch of encoded histories [B, T] to next-item scores
[B, num_items], as `recommend()` does. For a model trained with side features it takes a second
argument, {"categorical": [B, T, C] int64, "continuous": [B, T, F] float32} (the keys the model
has), the columns in the model's order (SideFeatureConfig.categorical / .continuous). It is only written after it gave the same top-k (ids equal,
scores to 1e-5) as `recommend()` on real held-out histories; otherwise (a backbone that does
not export, or scores differently, e.g. one that appends a mask token) nothing is written and
the served model calls `recommend()` from the installed training code instead.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seqrec.preprocessing.arrays import PAD_ID
from seqrec.training.data import pad_right
from seqrec.training.features import pad_features
from seqrec.training.recommend import recommend

SCORER_FILE = "scorer.pt2"


class _LastPositionScorer(torch.nn.Module):
    """Scores read at each row's last real position (what recommend() does for CLM models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        lengths = (items != PAD_ID).sum(dim=1)
        hidden = self.model.hidden_states(items)
        return self.model.logits(hidden[torch.arange(items.shape[0]), lengths - 1])


class _SideFeatureScorer(_LastPositionScorer):
    """The same, for a model trained with side features: stacked side tensors in."""

    def forward(self, items: torch.Tensor, side: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.model.cfg.side
        features = {c: side["categorical"][..., j] for j, c in enumerate(cfg.categorical)}
        features.update({c: side["continuous"][..., j] for j, c in enumerate(cfg.continuous)})
        lengths = (items != PAD_ID).sum(dim=1)
        hidden = self.model.hidden_states(items, features=features)
        return self.model.logits(hidden[torch.arange(items.shape[0]), lengths - 1])


def stack_side(cfg, padded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-column [B, T] tensors -> the scorer's {"categorical": [B, T, C], "continuous": ...}."""
    out = {}
    if cfg.categorical:
        out["categorical"] = torch.stack([padded[c] for c in cfg.categorical], dim=-1)
    if cfg.continuous:
        out["continuous"] = torch.stack([padded[c].float() for c in cfg.continuous], dim=-1)
    return out


def export_scorer(model, histories: Sequence[np.ndarray], folder: Path, k: int = 20,
                  features: dict | None = None) -> str | None:
    """Write folder/scorer.pt2 when it reproduces recommend(); return why not otherwise.
    features: side features aligned with `histories` (models trained with them)."""
    model.eval()
    max_len = model.cfg.max_len
    side_cfg = model.cfg.side
    keep = [i for i, h in enumerate(histories) if len(h)]
    histories = [np.asarray(histories[i][-max_len:], dtype=np.int64) for i in keep]
    if side_cfg is not None:
        features = {c: [np.asarray(features[c][i][-max_len:]) for i in keep] for c in side_cfg.columns}
    if not histories:
        return "no histories to check the exported program against"

    def inputs(n):
        items = pad_right(histories[:n], max_len)
        if side_cfg is None:
            return (items,)
        part = {c: v[:n] for c, v in features.items()}
        return items, stack_side(side_cfg, pad_features(side_cfg, part, max_len))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch", min=1, max=4096)
            length = torch.export.Dim("length", min=1, max=max_len)
            dims = {0: batch, 1: length}
            if side_cfg is None:
                module, shapes = _LastPositionScorer(model), {"items": dims}
            else:
                module = _SideFeatureScorer(model)
                shapes = {"items": dims, "side": {key: dims for key in inputs(1)[1]}}
            program = torch.export.export(module.eval(), inputs(4), dynamic_shapes=shapes)
            with torch.no_grad():
                scores = program.module()(*inputs(len(histories)))
    except Exception as err:  # noqa: BLE001 - any failure means: serve through recommend()
        return f"torch.export failed: {type(err).__name__}: {str(err)[:200]}"
    top = torch.topk(scores, k, dim=1)
    want_ids, want_scores = recommend(model, histories, k=k, features=features)
    if not (np.array_equal(top.indices.numpy(), want_ids)
            and np.allclose(top.values.float().numpy(), want_scores, atol=1e-5, rtol=0)):
        return "the exported program does not reproduce recommend() for this model"
    torch.export.save(program, str(Path(folder) / SCORER_FILE))
    return None
