"""The five ways to initialise the ranker from a generatively trained model (GPSD):

  none           everything random (a ranker trained from scratch)
  full           sparse (embedding tables) and dense (transformer) parameters copied
  sparse         only the embedding tables copied; the transformer starts random
  full_freeze    as full, then the copied embedding tables are frozen
  sparse_freeze  as sparse, then the copied embedding tables are frozen (the paper's choice)

The segment embedding and the logit head exist only in the ranker and are never copied. A
table the source does not have (the category table of a seqrec CLM checkpoint) stays random
and trainable: freezing it would freeze noise.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from .model import RANKER_ONLY, sparse_names

Strategy = Literal["none", "full", "sparse", "full_freeze", "sparse_freeze"]
STRATEGIES = get_args(Strategy)


def apply_strategy(model: nn.Module, source: dict[str, torch.Tensor], strategy: str) -> dict[str, list[str]]:
    """Copy from a source state dict into `model` as `strategy` says; {"copied": names,
    "frozen": names}. A copied tensor must match in shape (same item vocabulary, same size)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose from {STRATEGIES}")
    if strategy == "none":
        return {"copied": [], "frozen": []}
    sparse = set(sparse_names(model))
    own = dict(model.named_parameters())
    wanted = [n for n in own if not n.startswith(RANKER_ONLY)
              and (n in sparse or strategy.startswith("full"))]
    copied = [n for n in wanted if n in source]
    if "item_embedding.weight" not in copied:
        raise ValueError("the generative model has no item_embedding.weight to transfer")
    missing_dense = [n for n in wanted if n not in sparse and n not in source]
    if missing_dense:
        raise ValueError(f"{strategy} transfer: the generative model lacks {missing_dense[:3]} "
                         f"(a different backbone?)")
    for name in copied:
        if tuple(source[name].shape) != tuple(own[name].shape):
            raise ValueError(f"{strategy} transfer: {name} is {tuple(source[name].shape)} in the "
                             f"generative model but {tuple(own[name].shape)} in the ranker (same item "
                             f"vocabulary and d_model / n_layers / n_heads needed)")
    with torch.no_grad():
        for name in copied:
            own[name].copy_(source[name])
    frozen = [n for n in copied if n in sparse] if strategy.endswith("_freeze") else []
    for name in frozen:
        own[name].requires_grad_(False)
    return {"copied": copied, "frozen": frozen}
