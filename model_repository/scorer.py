"""Export the trained model's scoring as a `torch.export` program (scorer.pt2), so the served model
step needs torch only: no training code, no NVTabular.

The program maps a right-padded batch of encoded histories [B, T] to next-item scores
[B, num_items], as `recommend()` does. It is only written after it gave the same top-k (ids equal,
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

from seqrec.training.data import pad_right
from seqrec.training.recommend import recommend

SCORER_FILE = "scorer.pt2"
PAD_ID = 0


class _LastPositionScorer(torch.nn.Module):
    """Scores read at each row's last real position (what recommend() does for CLM models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        lengths = (items != PAD_ID).sum(dim=1)
        hidden = self.model.hidden_states(items)
        return self.model.logits(hidden[torch.arange(items.shape[0]), lengths - 1])


def export_scorer(model, histories: Sequence[np.ndarray], folder: Path, k: int = 20) -> str | None:
    """Write folder/scorer.pt2 when it reproduces recommend(); return why not otherwise."""
    model.eval()
    max_len = model.cfg.max_len
    histories = [np.asarray(h[-max_len:], dtype=np.int64) for h in histories if len(h)]
    if not histories:
        return "no histories to check the exported program against"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = pad_right(histories[:4], max_len)
            dims = {0: torch.export.Dim("batch", min=1, max=4096),
                    1: torch.export.Dim("length", min=1, max=max_len)}
            program = torch.export.export(_LastPositionScorer(model).eval(), (example,),
                                          dynamic_shapes={"items": dims})
            with torch.no_grad():
                scores = program.module()(pad_right(histories, max_len))
    except Exception as err:  # noqa: BLE001 - any failure means: serve through recommend()
        return f"torch.export failed: {type(err).__name__}: {str(err)[:200]}"
    top = torch.topk(scores, k, dim=1)
    want_ids, want_scores = recommend(model, histories, k=k)
    if not (np.array_equal(top.indices.numpy(), want_ids)
            and np.allclose(top.values.float().numpy(), want_scores, atol=1e-5, rtol=0)):
        return "the exported program does not reproduce recommend() for this model"
    torch.export.save(program, str(Path(folder) / SCORER_FILE))
    return None
