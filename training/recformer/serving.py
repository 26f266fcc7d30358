"""The served text model's scorer: packed histories -> top-k over the item matrix, with the call
shape of the ID models' scorer (training/scoring.py), so the served model step and its runtime
(model_repository/runtime.py's Ranker) are the same for both.

score = cosine(sequence representation, item representation) / temperature, the item matrix
every item's text encoded alone by the same encoder; exclusions are Scorer.excluded's (reserved
ids, caller-given ids, and with exclude_seen the whole sent history).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqrec.client.contract import TEXT_KEYS

from ..scoring import Scorer
from .model import ITEM_MATRIX_FILE, Recformer, load_recformer


class TextScorer(nn.Module):
    """forward(items [B, T] encoded histories (for exclude_seen), exclude [B, E] encoded ids,
    depth [D, 0], packed {TEXT_KEYS: [B, L]}, width (unused: the packing sets the width))
    -> (top ids [B, D] int64, top scores [B, D] float32), best first."""

    def __init__(self, model: Recformer, item_matrix: torch.Tensor, exclude_seen: bool = False):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("items", item_matrix.float())
        self.exclude_seen = bool(exclude_seen)

    def scores(self, packed: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.scores(self.model.represent(packed), self.items).float()

    def forward(self, items: torch.Tensor, exclude: torch.Tensor, depth: torch.Tensor,
                packed: dict | None = None, width: torch.Tensor | None = None):
        if packed is None or set(packed) != set(TEXT_KEYS):
            raise ValueError(f"a text model scores packed histories: {list(TEXT_KEYS)}")
        scores = Scorer.excluded(self.scores(packed), items, exclude, self.exclude_seen)
        top = torch.topk(scores, depth.shape[0], dim=1)
        return top.indices, top.values


def load_text_scorer(folder: str | Path, exclude_seen: bool, device="cpu") -> TextScorer:
    """A served version folder's scorer: checkpoint/ (the Recformer) + item_matrix.npy."""
    folder = Path(folder)
    model = load_recformer(folder / "checkpoint", dropout=0.0)
    matrix = torch.from_numpy(np.load(folder / ITEM_MATRIX_FILE))
    if matrix.shape[1] != model.cfg.d_model:
        raise ValueError(f"{folder / ITEM_MATRIX_FILE}: {matrix.shape[1]} columns, the model has "
                         f"d_model {model.cfg.d_model}")
    return TextScorer(model, matrix, exclude_seen).to(device)
