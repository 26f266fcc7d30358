"""Recformer's objectives: masked language modelling on item text (BERT's 15% with 80/10/10), the
item-item contrastive loss with in-batch next items as negatives, and the fine-tuning loss over
an item matrix."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from seqrec.preprocessing.token_pack import MASK_TOKEN, SPECIAL_TOKENS, TYPE_CLS

IGNORE = -100
FIRST_WORD = len(SPECIAL_TOKENS)  # random replacement tokens are drawn from the words only


def mask_tokens(batch: dict[str, torch.Tensor], vocab_size: int, generator: torch.Generator,
                prob: float = 0.15) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(the batch with masked input_ids, labels [B, L]: the original id where chosen, IGNORE
    elsewhere). Of the real non-[CLS] tokens `prob` are chosen; of those 80% become [MASK], 10% a
    random word, 10% stay."""
    ids = batch["input_ids"]
    device = ids.device
    real = (batch["attention_mask"] > 0) & (batch["token_types"] != TYPE_CLS)

    def uniform():
        return torch.rand(ids.shape, generator=generator).to(device)

    chosen = real & (uniform() < prob)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    draw = uniform()
    to_mask = chosen & (draw < 0.8)
    to_random = chosen & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(FIRST_WORD, vocab_size, ids.shape, generator=generator).to(device)
    masked = torch.where(to_mask, torch.full_like(ids, MASK_TOKEN), ids)
    masked = torch.where(to_random, random_ids, masked)
    return {**batch, "input_ids": masked}, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the chosen tokens (0 when none were chosen)."""
    chosen = labels != IGNORE
    if not chosen.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen].float(), labels[chosen])


def contrastive_loss(scores: torch.Tensor, next_items: torch.Tensor) -> torch.Tensor:
    """In-batch item-item contrastive loss. scores [B, B]: sequence b x next item of example j
    (already / temperature); the diagonal holds the positives. Another example's next item that
    IS this example's next item is no negative: it is left out."""
    same = next_items[:, None] == next_items[None, :]
    eye = torch.eye(len(next_items), dtype=torch.bool, device=scores.device)
    scores = scores.float().masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(scores, torch.arange(len(next_items), device=scores.device))


def finetune_loss(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Softmax over the item matrix. scores [B, N] (/ temperature); candidates [N] bool: the items
    training may rank (items held out of training are no negatives either)."""
    scores = scores.float().masked_fill(~candidates[None, :], float("-inf"))
    return F.cross_entropy(scores, targets)
