"""recommend(): the ONE scoring path. Offline evaluation and the served model both call it, so
what is measured is what is served."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data import pad_right
from .model import SequenceRecommender


@torch.no_grad()
def score_histories(model: SequenceRecommender, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Next-item scores [B, num_items] given only each history (encoded ids, oldest first).

    Histories keep their last max_len items; the score is read at the last real position, and a
    causal backbone never looks past it, so nothing after the history can leak in.
    """
    if any(len(h) == 0 for h in histories):
        raise ValueError("every history needs at least one item")
    model.eval()
    device = next(model.parameters()).device
    items = pad_right(histories, model.cfg.max_len).to(device)
    lengths = (items != 0).sum(dim=1)
    hidden = model.hidden_states(items)
    last = hidden[torch.arange(len(items), device=device), lengths - 1]
    return model.logits(last)


@torch.no_grad()
def recommend(
    model: SequenceRecommender,
    histories: Sequence[np.ndarray],
    k: int = 10,
    exclude_seen: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k encoded item ids [B, k] and their scores [B, k] (float32), best first."""
    scores = score_histories(model, histories)
    if exclude_seen:
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        seen = torch.from_numpy(np.concatenate(histories).astype(np.int64))
        scores[torch.from_numpy(rows), seen] = float("-inf")
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1)
    return top.indices.cpu().numpy(), top.values.float().cpu().numpy()
