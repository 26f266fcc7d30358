"""The discriminative ranker: a Llama-style causal transformer (RMSNorm, RoPE, SwiGLU: the
`llama` backbone) over the history followed by the candidate, one logit from the candidate's
position.

Input embedding = item + category (the item's genre) + segment (0 history, 1 candidate). The same
module trained generatively (`generative_loss`: next item by a sampled softmax over
L2-normalised embeddings, next category by a full softmax) is the pretrained source the
initialisation strategies copy from. Parameter names follow SequenceRecommender's
(`item_embedding`, `backbone`), so a checkpoint of seqrec's CLM training transfers by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, PAD_ID

from ..backbones import CAUSAL, build_backbone, run_backbone
from ..model import ModelConfig

CANDIDATE_SEGMENT = 1
# Parameters the generative task never trains: never transferred (see strategies.py).
RANKER_ONLY = ("segment_embedding.", "head.")


@dataclass
class RankerModelConfig:
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    embedding_std: float = 0.02

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.d_model, self.n_layers, self.n_heads) < 1:
            raise ValueError("d_model, n_layers and n_heads must be >= 1")


class Ranker(nn.Module):
    def __init__(self, cfg: RankerModelConfig, item_category: np.ndarray, num_categories: int,
                 max_history: int):
        """item_category: [num_items] category id of every encoded item id (0 for reserved ids)."""
        super().__init__()
        self.cfg, self.max_history = cfg, max_history
        num_items = len(item_category)
        self.register_buffer("item_category", torch.as_tensor(np.asarray(item_category), dtype=torch.long))
        self.item_embedding = nn.Embedding(num_items, cfg.d_model, padding_idx=PAD_ID)
        self.category_embedding = nn.Embedding(num_categories, cfg.d_model, padding_idx=PAD_ID)
        self.segment_embedding = nn.Embedding(2, cfg.d_model)
        for table in (self.item_embedding, self.category_embedding, self.segment_embedding):
            nn.init.normal_(table.weight, std=cfg.embedding_std)
        self.backbone = build_backbone(self.backbone_config(num_items))
        self.head = nn.Linear(cfg.d_model, 1)

    def backbone_config(self, num_items: int) -> ModelConfig:
        c = self.cfg
        return ModelConfig(num_items=num_items, max_len=self.max_history + 1, backbone="llama", task="clm",
                           d_model=c.d_model, n_layers=c.n_layers, n_heads=c.n_heads, dropout=c.dropout)

    def embed(self, items: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """[B, T] items and segments -> [B, T, d]."""
        return (self.item_embedding(items) + self.category_embedding(self.item_category[items])
                + self.segment_embedding(segments))

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """histories [B, T] right-padded, lengths [B], candidates [B] -> logits [B]. The candidate
        sits right after the history, so a causal mask lets it see the whole history."""
        b, t = histories.shape
        rows = torch.arange(b, device=histories.device)
        items = torch.cat([histories, histories.new_full((b, 1), PAD_ID)], dim=1)
        items[rows, lengths] = candidates
        segments = torch.zeros_like(items)
        segments[rows, lengths] = CANDIDATE_SEGMENT
        mask = (torch.arange(t + 1, device=items.device)[None] <= lengths[:, None]).long()
        hidden = run_backbone(self.backbone, self.embed(items, segments), mask, CAUSAL)
        return self.head(hidden[rows, lengths]).squeeze(-1)

    def generative_loss(self, items: torch.Tensor, n_negatives: int, temperature: float,
                        category_weight: float) -> torch.Tensor:
        """Next-item + next-category loss over [B, T] right-padded sequences (segment 0).

        Next item: sampled softmax of the L2-normalised hidden state against the normalised
        target and `n_negatives` uniformly drawn items (shared by the batch), divided by the
        temperature. Next category: full softmax over the category table."""
        mask = items != PAD_ID
        hidden = run_backbone(self.backbone, self.embed(items, torch.zeros_like(items)), mask.long(), CAUSAL)
        valid = mask[:, :-1] & mask[:, 1:]
        h = hidden[:, :-1][valid]  # [N, d]
        target = items[:, 1:][valid]  # [N]
        if not len(target):
            raise ValueError("generative pretraining needs sequences of at least 2 items")
        negatives = torch.randint(FIRST_ITEM_ID, self.item_embedding.num_embeddings, (n_negatives,),
                                  device=items.device)
        hn = F.normalize(h, dim=-1)
        pos = (hn * F.normalize(self.item_embedding(target), dim=-1)).sum(-1, keepdim=True)
        neg = hn @ F.normalize(self.item_embedding(negatives), dim=-1).T
        neg = neg.masked_fill(negatives[None] == target[:, None], float("-inf"))  # not a negative
        item_loss = F.cross_entropy(torch.cat([pos, neg], dim=1) / temperature,
                                    torch.zeros(len(target), dtype=torch.long, device=items.device))
        category_loss = F.cross_entropy(h @ self.category_embedding.weight.T, self.item_category[target])
        return item_loss + category_weight * category_loss


# The HF backbone's own word-embedding table: a vocabulary of 2, never used (inputs_embeds).
UNUSED = "backbone.embed_tokens.weight"


def sparse_names(model: nn.Module) -> list[str]:
    """The ranker's embedding tables (sparse parameters); the rest (transformer, head) is dense."""
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, nn.Embedding) and not name.startswith("backbone.")]


def dense_parameter_count(model: nn.Module) -> int:
    sparse = set(sparse_names(model)) | {UNUSED}
    return sum(p.numel() for n, p in model.named_parameters() if n not in sparse)


def category_table(vocabulary: np.ndarray, genres: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    """encoded id -> category id (0: reserved ids, 1: an item without a genre, 2..: genres in
    sorted order) from the item vocabulary (encoded -> original id) and original id -> genre."""
    names = sorted({g for g in genres.values() if g})
    code = pd.Series({g: i + 2 for i, g in enumerate(names)})
    table = pd.Series(vocabulary).map(pd.Series(genres)).map(code).fillna(1).to_numpy(np.int64)
    table[:FIRST_ITEM_ID] = PAD_ID
    return table, names
