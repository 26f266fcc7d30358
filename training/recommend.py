"""recommend(): offline scoring through the one scorer (training/scoring.py), the module that
`seqrec export` also writes as the served program, so what is measured is what is served."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .model import SequenceRecommender
from .scoring import Scorer, depth_tensor, scorer_inputs


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
    model.eval()
    items, _, side = scorer_inputs(model, histories, features)
    return Scorer(model).scores(items, side)


@torch.no_grad()
def recommend(
    model: SequenceRecommender,
    histories: Sequence[np.ndarray],
    k: int = 10,
    exclude_seen: bool = False,
    features: dict | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k encoded item ids [B, k] and their scores [B, k] (float32), best first. Reserved ids
    are never recommended; `exclude_seen` drops every item of each whole history, `exclude` the
    given encoded ids per row; excluded places at the tail score -inf. `features`: side features
    aligned with the histories (see score_histories)."""
    model.eval()
    items, excl, side = scorer_inputs(model, histories, features, exclude)
    k = min(k, model.cfg.num_items)
    ids, scores = Scorer(model, exclude_seen)(items, excl, depth_tensor(k, items.device), side)
    return ids.cpu().numpy(), scores.cpu().numpy()
