"""Retrieval + ranking, once: the generative model's scorer (training/scoring.py) retrieves the
top `candidates` items of each history, the ranker scores history + candidate for all of them
in ONE batched pass, and the answer is the top-k by the ranker with both scores.

`TwoStage` is the module: `two_stage_recommend()` runs it offline, and `seqrec export` writes the
same module as the served program (checked against it on real histories), so what is measured
offline is what is served.

- Stage one is the retrieval scorer unchanged: its window, read position and exclusions
  (reserved ids, `exclude_seen`, caller-given ids) decide which items may be candidates.
- Stage two reads the LAST `max_history` items of each whole sent history (the window the
  ranker was trained with), the candidate appended after them (segment 1).
- Order: the ranker's logit, best first; a candidate the retrieval left at -inf (fewer than
  `candidates` items remain after exclusions) stays last with ranker score -inf. The ranker's
  score is its click probability (sigmoid of the logit).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from seqrec.preprocessing.arrays import PAD_ID

from ..scoring import Scorer, _window, depth_tensor, scorer_inputs
from .model import Ranker, RankerModelConfig
from .trainer import METRICS_FILE, RANKER_FILE, VOCABULARY_FILE


class TwoStage(nn.Module):
    """forward(items, exclude, depth, side, width) as the Scorer's -> (ids [B, D] int64,
    retrieval scores [B, D] float32, ranker probabilities [B, D] float32), ranked by the ranker;
    D (the depth's length) <= candidates."""

    def __init__(self, scorer: Scorer, ranker: Ranker, candidates: int):
        super().__init__()
        num_items = scorer.model.cfg.num_items
        if ranker.item_embedding.num_embeddings != num_items:
            raise ValueError(f"the ranker has {ranker.item_embedding.num_embeddings} item ids but the "
                             f"retrieval model {num_items}: they need the same item vocabulary")
        if not 1 <= candidates <= num_items:
            raise ValueError(f"candidates must be between 1 and {num_items}, got {candidates}")
        self.scorer, self.ranker, self.candidates = scorer, ranker, int(candidates)
        self.keep = scorer.keep  # the retrieval window (the served step sizes `width` by it)

    def forward(self, items: torch.Tensor, exclude: torch.Tensor, depth: torch.Tensor,
                side: dict | None = None, width: torch.Tensor | None = None):
        pool, retrieval = self.scorer(items, exclude, items.new_empty((self.candidates, 0)), side, width)
        b, n = pool.shape
        h = self.ranker.max_history
        lengths = (items != PAD_ID).sum(dim=1)
        start = (lengths - h).clamp(min=0)
        history = _window(items, start, h)  # [B, H]: the last H items, right-padded
        logits = self.ranker(history.repeat_interleave(n, dim=0),
                             (lengths - start).repeat_interleave(n), pool.reshape(-1)).reshape(b, n)
        found = torch.isfinite(retrieval)
        logits = torch.where(found, logits.float(), torch.full_like(retrieval, float("-inf")))
        top = torch.topk(logits, depth.shape[0], dim=1)
        probability = torch.where(torch.isfinite(top.values), torch.sigmoid(top.values), top.values)
        return pool.gather(1, top.indices), retrieval.gather(1, top.indices), probability


def load_ranker(folder: str | Path) -> Ranker:
    """A `seqrec rank` output (ranker.pt + metrics.json) as the trained Ranker, in eval mode."""
    folder = Path(folder)
    for needed in (folder / RANKER_FILE, folder / METRICS_FILE):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: {folder} is not a `seqrec rank` output")
    cfg = json.loads((folder / METRICS_FILE).read_text())["rank_config"]
    state = torch.load(folder / RANKER_FILE, map_location="cpu", weights_only=True)
    ranker = Ranker(RankerModelConfig(**cfg["model"]), state["item_category"].numpy(),
                    int(state["category_embedding.weight"].shape[0]), int(cfg["labels"]["max_history"]))
    ranker.load_state_dict(state)
    return ranker.eval()


def ranker_vocabulary(folder: str | Path) -> np.ndarray:
    """The item vocabulary (encoded -> original id) the ranker in `folder` was trained on: the
    one it saved, else that of the ETL output it names."""
    folder = Path(folder)
    if (folder / VOCABULARY_FILE).is_file():
        return np.load(folder / VOCABULARY_FILE)
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

    data_dir = Path(json.loads((folder / METRICS_FILE).read_text())["rank_config"]["data_dir"])
    if not (data_dir / "workflow").is_dir():
        raise FileNotFoundError(f"{folder} holds no {VOCABULARY_FILE} and the ETL output it was "
                                f"trained on ({data_dir}) is gone: its item vocabulary is unknown")
    return item_vocabulary(load_workflow(data_dir / "workflow"))


def check_vocabulary(ranker_dir: str | Path, vocabulary: np.ndarray, model_dir: str | Path) -> None:
    """The ranker and the retrieval model must mean the same items by the same encoded ids."""
    theirs = ranker_vocabulary(ranker_dir)
    if len(theirs) != len(vocabulary) or not np.array_equal(theirs, vocabulary):
        differ = (f"{len(theirs)} vs {len(vocabulary)} ids" if len(theirs) != len(vocabulary) else
                  f"first difference at encoded id {int(np.flatnonzero(theirs != vocabulary)[0])}")
        raise ValueError(f"the ranker in {ranker_dir} and the model in {model_dir} were trained on "
                         f"different item vocabularies ({differ}): train both on the same ETL output")


def two_stage_module(model, ranker: Ranker, candidates: int, exclude_seen: bool = False) -> TwoStage:
    """The module offline scoring runs and the export writes."""
    return TwoStage(Scorer(model, exclude_seen), ranker, candidates).eval()


@torch.no_grad()
def two_stage_recommend(model, ranker: Ranker, histories: Sequence[np.ndarray], k: int = 10,
                        candidates: int = 100, exclude_seen: bool = False, features: dict | None = None,
                        exclude: Sequence[Sequence[int]] | None = None):
    """Offline two-stage scoring of encoded histories -> (ids [B, k] encoded, retrieval scores
    [B, k], ranker probabilities [B, k]) as numpy, ranked by the ranker (see the module doc)."""
    if not 1 <= k <= candidates:
        raise ValueError(f"k must be between 1 and candidates ({candidates}), got {k}")
    module = two_stage_module(model, ranker, candidates, exclude_seen)
    items, excl, side = scorer_inputs(model, histories, features, exclude)
    ids, retrieval, probability = module(items, excl, depth_tensor(k, items.device), side)
    return ids.cpu().numpy(), retrieval.cpu().numpy(), probability.cpu().numpy()
