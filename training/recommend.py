"""recommend(): the ONE scoring path. Offline evaluation and the served model both call it, so
what is measured is what is served."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from seqrec.preprocessing.arrays import PAD_ID, row_ids

from .data import as_ragged, pad_right
from .features import check_aligned, map_features, pad_features
from .model import MASK_ID, SequenceRecommender


@torch.no_grad()
def score_histories(model: SequenceRecommender, histories: Sequence[np.ndarray],
                    features: dict | None = None) -> torch.Tensor:
    """Next-item scores [B, num_items] given only each history (encoded ids, oldest first) and,
    for a model trained with side features, `features`: column -> per-row arrays aligned with
    the histories (encoded as in the session parquet). Columns the model was not trained with
    are ignored, so an item-only model scores exactly as without them.

    Causal / CLM-last models read the last history position. Models trained with a mask (MLM,
    PLM, RTD) get the mask appended after the history (keeping its last max_len - 1 items) and
    are read there. Either way the input holds the history and nothing else, so nothing after it
    can leak in, and padding never changes a row's scores.
    """
    histories = as_ragged(histories)
    if (histories.lengths == 0).any():
        raise ValueError("every history needs at least one item")
    model.eval()
    device = next(model.parameters()).device
    with_mask = model.task.uses_mask_token
    keep = model.cfg.max_len - int(with_mask)
    items = pad_right(histories, keep).to(device)
    side = None
    if model.cfg.side is not None:
        check_aligned(histories, features, model.cfg.side)
        side = map_features(pad_features(model.cfg.side, features, keep), lambda f: f.to(device))
    lengths = (items != PAD_ID).sum(dim=1)
    if with_mask:
        items = torch.cat([items, torch.full_like(items[:, :1], PAD_ID)], dim=1)
        items[torch.arange(len(items), device=device), lengths] = MASK_ID
        positions = lengths
        # the appended mask shows the mask embedding alone: its side values (0) are never read
        side = map_features(side, lambda f: torch.cat([f, torch.zeros_like(f[:, :1])], dim=1))
    else:
        positions = lengths - 1
    return model.logits(model.task.inference_hidden(model, items, positions, side))


@torch.no_grad()
def recommend(
    model: SequenceRecommender,
    histories: Sequence[np.ndarray],
    k: int = 10,
    exclude_seen: bool = False,
    features: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k encoded item ids [B, k] and their scores [B, k] (float32), best first. `features`:
    side features aligned with the histories (see score_histories)."""
    histories = as_ragged(histories)
    scores = score_histories(model, histories, features)
    if exclude_seen:
        rows = torch.from_numpy(row_ids(histories.offsets)).to(scores.device)
        seen = torch.from_numpy(histories.values.astype(np.int64)).to(scores.device)
        scores[rows, seen] = float("-inf")
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1)
    return top.indices.cpu().numpy(), top.values.float().cpu().numpy()
