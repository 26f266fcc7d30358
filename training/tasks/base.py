"""What every task shares: training units, inference at the next position, masking helpers."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from seqrec.preprocessing.arrays import PAD_ID

from ..data import sliding_windows

if TYPE_CHECKING:
    from ..model import ModelConfig, SequenceRecommender

# In input tensors, MASK_ID marks a position fed with the learnable mask embedding (not an item).
MASK_ID = -1
# Masked tasks sit at the popularity level for a few hundred optimizer steps before they learn
# (bench/peers on MovieLens-100k at batch 64, 38 steps an epoch: XLNet MLM flat for 4 epochs, best
# at epoch 9; ELECTRA RTD rising from epoch 5): early stopping must not end a run inside that stall.
MASKED_STALL_STEPS = 400


class Task:
    name: ClassVar[str]
    ATTENTION: ClassVar[tuple[str, ...]]  # attention kinds it can train with, preferred first
    # True: inference appends a mask after the history and scores that position (bidirectional
    # models cannot read "the next item" from the last history position).
    uses_mask_token: ClassVar[bool] = False
    # ModelConfig options left unset (None) take these values for this task (measured best, see
    # bench/masked.py)
    DEFAULTS: ClassVar[dict] = {}

    def __init__(self, cfg: "ModelConfig"):
        self.cfg = cfg

    def build_modules(self, model: "SequenceRecommender") -> dict[str, nn.Module]:
        """Extra trainable parts (a discriminator head, a generator); saved with the model."""
        return {}

    @property
    def min_steps_before_stopping(self) -> int:
        """Optimizer steps before early stopping may end a run (train.min_steps unset): the
        masked tasks' stall (every task read at an appended mask is one), 0 for the causal ones."""
        return MASKED_STALL_STEPS if self.uses_mask_token else 0

    # Items a training window shares with the one before it: 1 for causal tasks, whose first
    # window item is an input only (so every later item is a target once); 0 for masked ones,
    # where any item may be a target.
    WINDOW_OVERLAP: ClassVar[int] = 0

    def history_window(self, max_len: int) -> int:
        """History items the model reads at inference: the last max_len, or max_len - 1 for a
        task read at an appended mask. With training_span this is the ONE definition of the
        window, shared by the training batches and the scorer (training/scoring.py): a training
        example is at most one history window plus the item after it, so every position the
        scorer reads is a position training fills."""
        return max_len - int(self.uses_mask_token)

    def training_span(self, max_len: int) -> int:
        """Most items in one training example: a history window plus its next item."""
        return self.history_window(max_len) + 1

    def training_units(self, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, start, end): one training example is row[start:end] (row-local). Default:
        sliding windows of training_span items laid from the end of each row, so a long history
        is trained on whole, not only its last window."""
        span = self.training_span(max_len)
        return sliding_windows(lengths, span, span - self.WINDOW_OVERLAP)

    def window_targets(self, lengths: np.ndarray) -> int:
        """Item positions the windows of these lengths train as targets (for the summary): all
        but each window's first (causal), or every one (masked: any may be masked)."""
        return int(np.sum(np.asarray(lengths) - self.WINDOW_OVERLAP))

    def loss(self, model: "SequenceRecommender", items: torch.Tensor, features=None) -> torch.Tensor:
        """features: side-feature tensors [B, T] aligned with items, or None."""
        raise NotImplementedError

    def loss_elements(self, items: torch.Tensor) -> int:
        """How many terms the batch's mean loss averages; weights a rank's part of a global batch
        in distributed training. Default: the real positions (masked / permuted targets are a
        random share of them, so this is their expected count up to a constant)."""
        return int((items != PAD_ID).sum())

    def inference_hidden(self, model: "SequenceRecommender", items: torch.Tensor,
                         positions: torch.Tensor, features=None) -> torch.Tensor:
        """Hidden state [B, d] at the position whose next item is scored."""
        return model.hidden_at(items, positions, features)


def bernoulli_mask(items: torch.Tensor, prob: float) -> torch.Tensor:
    """Mask each real position with probability `prob`, and at least one per row (a row with no
    target would contribute nothing). Vectorised over the batch."""
    real = items != PAD_ID
    masked = (torch.rand(items.shape, device=items.device) < prob) & real
    return ensure_one(masked, real)


def mask_last(masked: torch.Tensor, items: torch.Tensor, prob: float) -> torch.Tensor:
    """Also mask the last real item of each row with probability `prob` (in place): the row then
    ends in a mask with nothing after it, as at inference, where a mask follows the history."""
    if prob <= 0:
        return masked
    rows = torch.nonzero(torch.rand(len(items), device=items.device) < prob).squeeze(1)
    last = (items[rows] != PAD_ID).sum(1) - 1
    keep = last >= 0
    masked[rows[keep], last[keep]] = True
    return masked


def ensure_one(masked: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    lengths = real.sum(1)
    empty = ~masked.any(1) & (lengths > 0)
    pick = (torch.rand(len(masked), device=masked.device) * lengths).long()
    rows = torch.arange(len(masked), device=masked.device)
    masked[rows[empty], pick[empty]] = True
    return masked
