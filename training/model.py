"""Item-sequence transformer: item embeddings -> Hugging Face backbone -> head tied to the items."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from seqrec.preprocessing.workflow import FIRST_ITEM_ID, PAD_ID

BACKBONES = ("gpt2",)


@dataclass
class ModelConfig:
    num_items: int  # size of the encoded id space, reserved ids (pad/null/oov) included
    max_len: int = 200  # positions the backbone knows; histories keep their last max_len items
    backbone: str = "gpt2"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not available; choose from {BACKBONES}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def _backbone(cfg: ModelConfig) -> nn.Module:
    hf = GPT2Config(
        vocab_size=1,  # unused: seqrec feeds inputs_embeds and owns the item embeddings
        n_positions=cfg.max_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
    )
    return GPT2Model(hf)


class SequenceRecommender(nn.Module):
    """Scores every item as the next one after each position of a right-padded id batch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.item_embedding = nn.Embedding(cfg.num_items, cfg.d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        self.backbone = _backbone(cfg)
        self.output_bias = nn.Parameter(torch.zeros(cfg.num_items))

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        """items: [B, T] encoded ids, right-padded with PAD_ID -> [B, T, d_model]."""
        mask = (items != PAD_ID).long()
        out = self.backbone(inputs_embeds=self.item_embedding(items), attention_mask=mask)
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the whole id space; reserved ids can never be recommended."""
        scores = hidden @ self.item_embedding.weight.T + self.output_bias
        scores[..., :FIRST_ITEM_ID] = float("-inf")
        return scores
