"""recommend(): the ONE scoring path. Offline evaluation and the served model both call it, so
what is measured is what is served."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from seqrec.preprocessing.workflow import PAD_ID

from .data import pad_right
from .model import MASK_ID, SequenceRecommender


@torch.no_grad()
def score_histories(model: SequenceRecommender, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Next-item scores [B, num_items] given only each history (encoded ids, oldest first).

    Causal / CLM-last models read the last history position. Models trained with a mask (MLM,
    PLM, RTD) get the mask appended after the history (keeping its last max_len - 1 items) and
    are read there. Either way the input holds the history and nothing else, so nothing after it
    can leak in, and padding never changes a row's scores.
    """
    if any(len(h) == 0 for h in histories):
        raise ValueError("every history needs at least one item")
    model.eval()
    device = next(model.parameters()).device
    with_mask = model.task.uses_mask_token
    items = pad_right(histories, model.cfg.max_len - int(with_mask)).to(device)
    lengths = (items != PAD_ID).sum(dim=1)
    if with_mask:
        items = torch.cat([items, torch.full_like(items[:, :1], PAD_ID)], dim=1)
        items[torch.arange(len(items), device=device), lengths] = MASK_ID
        positions = lengths
    else:
        positions = lengths - 1
    return model.logits(model.task.inference_hidden(model, items, positions))


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
