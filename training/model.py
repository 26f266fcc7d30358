"""Item-sequence transformer: item embeddings -> Hugging Face backbone -> head tied to the items.
The task (CLM, CLM-last, MLM, PLM, RTD) decides the attention, the loss and how inference reads
the next-item position."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.config import derived, structure
from seqrec.preprocessing.arrays import FIRST_ITEM_ID, PAD_ID

from . import read_position
from .backbones import BACKBONES, CAUSAL, build_backbone, run_backbone
from .features import Features, SideFeatureConfig, SideFeatureEncoder, missing_features
from .softmax_loss import item_cross_entropy
from .tasks import TASKS, resolve_attention
from .tasks.base import MASK_ID
from .tasks.rtd import GENERATORS

Loss = Literal["full", "sampled"]
LOSSES = get_args(Loss)
# Backbones that feed inputs_embeds straight into attention (no embedding LayerNorm of their
# own): item embeddings at init scale are then dwarfed by XLNet's relative-position terms, and
# the masked tasks crawl (XLNet PLM on short sessions: valid NDCG@10 0.028 -> 0.068).
INPUT_NORM_BACKBONES = ("xlnet",)
POSITIONS = ("start", "end")
GENERIC_DEFAULTS = {"mask_last_prob": 0.0, "embedding_std": 0.02}  # where the task sets none


@dataclass
class ModelConfig:
    # size of the encoded id space, reserved ids (pad/null/oov) included
    num_items: int = derived("the data's item vocabulary", default=0)
    # positions the backbone knows: the history window (tasks/base.py::Task.history_window)
    max_len: int = derived("the data's window (etl.max_len)", default=200)
    backbone: str = "gpt2"  # see backbones.BACKBONES
    task: str = "clm"  # clm | clm-last | mlm | plm | rtd (see tasks.TASKS)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2  # MLM / RTD: share of positions masked
    # None = the measured default of the task / backbone (Task.DEFAULTS, INPUT_NORM_BACKBONES;
    # bench/masked.py). MLM / RTD / PLM: share of training rows whose last item is also masked,
    # so training sees what inference does: a mask after the history with nothing to its right.
    mask_last_prob: float | None = None
    label_smoothing: float = 0.0  # item cross-entropy
    embedding_std: float | None = None  # init std of the item (and mask) embeddings, tied to the head
    embedding_norm: bool | None = None  # LayerNorm on the input embeddings
    # Numbering of a learned absolute position table: "start" (the first item is 0) or "end"
    # (the last real position is max_len - 1 whatever the row's length, as left padding gives:
    # the appended mask and the items just before it always have the same positions). "end"
    # measured no gain for the masked tasks (bench/masked.py), so "start" stays the default.
    positions: str = "start"
    plm_probability: float = 1 / 6  # PLM: share of positions that are targets
    plm_max_span: int = 5  # PLM: longest target span
    # RTD: weight of the discriminator loss. ELECTRA's 50 drowns the item loss on recommendation
    # data (bench/masked.py: MovieLens valid NDCG@10 0.0195 at 50, 0.0287 at 10 and at 1)
    rtd_lambda: float = 1.0
    rtd_generator: str = "tied"  # RTD: "tied" (the main backbone) or "separate" (a smaller one)
    rtd_generator_layers: int = 1  # RTD: layers of a separate generator
    loss: Loss = "full"  # "full" softmax, or "sampled" (in-batch + popularity negatives, logQ)
    n_negatives: int = 1024  # sampled softmax: popularity-sampled negatives per batch
    attention_window: int = 32  # Longformer: sliding window (even; capped by max_len)
    pretrained: str | None = None  # a local HF folder for from_pretrained (never downloaded here)
    hf_overrides: dict = field(default_factory=dict)  # extra HF config attributes
    side_features: SideFeatureConfig | None = None  # a mapping is read as one (checkpoints)

    def __post_init__(self):
        self.attention = resolve_attention(self.backbone, self.task)
        for name, value in {**GENERIC_DEFAULTS, "embedding_norm": self.backbone in INPUT_NORM_BACKBONES,
                            **TASKS[self.task].DEFAULTS}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions {self.positions!r}: choose from {POSITIONS}")
        if self.rtd_generator not in GENERATORS:
            raise ValueError(f"rtd_generator {self.rtd_generator!r}: choose from {GENERATORS}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: choose from {LOSSES}")
        if not 0 < self.mask_prob < 1 or not 0 < self.plm_probability < 1:
            raise ValueError("mask_prob and plm_probability must lie in (0, 1)")
        if not 0 <= self.mask_last_prob <= 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("mask_last_prob must lie in [0, 1] and label_smoothing in [0, 1)")
        if self.embedding_std <= 0:
            raise ValueError(f"embedding_std {self.embedding_std} must be > 0")
        if isinstance(self.side_features, dict):  # a saved config.json (`{}`: none, older saves)
            self.side_features = (structure(SideFeatureConfig, self.side_features, "side_features",
                                            allow_derived=True) if self.side_features else None)
        # None when there are no side columns: item-only models stay exactly as they were
        self.side = self.side_features if self.side_features and self.side_features.columns else None

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceRecommender(nn.Module):
    """Scores every item as the next one; right-padded encoded id batches in."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.task = TASKS[cfg.task](cfg)
        self.item_embedding = nn.Embedding(cfg.num_items, cfg.d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.item_embedding.weight, std=cfg.embedding_std)
        # The mask is a learnable input vector, not an item id: it can never be recommended. Same
        # scale as the items, so a mask position is not an outlier the backbone must first learn.
        self.mask_embedding = (nn.Parameter(torch.randn(cfg.d_model) * cfg.embedding_std)
                               if self.task.uses_mask_token else None)
        self.input_norm = nn.LayerNorm(cfg.d_model) if cfg.embedding_norm else None
        self.backbone = build_backbone(cfg)
        self.output_bias = nn.Parameter(torch.zeros(cfg.num_items))
        self.side = None  # item-only models keep exactly their parameters
        if cfg.side is not None:
            missing = [c for c in cfg.side.categorical if c not in cfg.side.cardinalities]
            if missing:
                raise ValueError(f"side_features: no cardinality for categorical {missing} "
                                 "(train() reads it from the workflow)")
            self.side = SideFeatureEncoder(cfg.side, cfg.d_model)
        self.task_modules = nn.ModuleDict(self.task.build_modules(self))
        if cfg.loss == "sampled":
            # Sampling distribution of the negatives (item popularity); set by set_item_counts.
            self.register_buffer("item_probs", torch.ones(cfg.num_items))
            self.item_probs[:FIRST_ITEM_ID] = 0

    def set_item_counts(self, counts: torch.Tensor) -> None:
        """Training frequencies -> the negative-sampling distribution (add-one smoothed)."""
        probs = counts.float().to(self.item_probs.device) + 1.0
        probs[:FIRST_ITEM_ID] = 0
        self.item_probs.copy_(probs / probs.sum())

    def embed(self, items: torch.Tensor, features: Features | None = None) -> torch.Tensor:
        emb = self.item_embedding(items.clamp(min=0))
        if self.side is not None:
            missing = missing_features(self.cfg.side, features)
            if missing:
                raise ValueError(f"this model was trained with side features; missing {missing}")
            emb = self.side(emb, features, items != PAD_ID)
        # A mask position shows the mask embedding alone: not its item, not its side features.
        if self.mask_embedding is not None:
            emb = torch.where((items == MASK_ID)[..., None], self.mask_embedding.to(emb.dtype), emb)
        if self.input_norm is not None:
            emb = self.input_norm(emb)
        return emb

    def hidden_states(self, items: torch.Tensor, perm_mask=None, target_mapping=None,
                      backbone: nn.Module | None = None, features: Features | None = None) -> torch.Tensor:
        """items: [B, T] encoded ids (MASK_ID = mask), right-padded with PAD_ID -> [B, T, d]
        (or [B, P, d] for XLNet's query stream with a target_mapping). features: side-feature
        tensors [B, T] aligned with items (models trained with side features only)."""
        mask = (items != PAD_ID).long()
        return run_backbone(backbone if backbone is not None else self.backbone, self.embed(items, features),
                            mask, self.cfg.attention, perm_mask, target_mapping, self.position_ids(mask))

    def position_ids(self, mask: torch.Tensor) -> torch.Tensor | None:
        """[B, T] positions counted back from the row's last real position (cfg.positions "end"):
        max_len - 1 there, padding at 0 (never attended); None numbers from the start."""
        if self.cfg.positions != "end":
            return None
        steps = torch.arange(mask.shape[1], device=mask.device)[None]
        return ((steps - mask.sum(1, keepdim=True) + self.cfg.max_len).clamp(min=0) * mask)

    def hidden_at(self, items: torch.Tensor, positions: torch.Tensor,
                  features: Features | None = None) -> torch.Tensor:
        """Hidden state [B, d] at one position per row (items as hidden_states); the last block
        runs at that position only where that is exact (training/read_position.py)."""
        if self.cfg.attention == CAUSAL and read_position.supports(self.backbone):
            mask = (items != PAD_ID).long()
            return read_position.hidden_at(self.backbone, self.embed(items, features), mask,
                                           positions, self.position_ids(mask))
        hidden = self.hidden_states(items, features=features)
        return hidden[torch.arange(items.shape[0], device=items.device), positions]  # shape: stays symbolic in torch.export

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the whole id space; reserved ids can never be recommended."""
        scores = hidden @ self.item_embedding.weight.T + self.output_bias
        scores[..., :FIRST_ITEM_ID] = float("-inf")
        return scores

    def item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of [N, d] hidden states against [N] target items: full softmax, or
        (cfg.loss == "sampled", training only) a sampled softmax for huge catalogues."""
        if self.cfg.loss == "sampled" and self.training:
            return self.sampled_item_loss(hidden, targets)
        # the logits() scores, never materialised whole (training/softmax_loss.py)
        return item_cross_entropy(hidden, self.item_embedding.weight, self.output_bias, targets,
                                  FIRST_ITEM_ID, self.cfg.label_smoothing)

    def sampled_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mixed negatives: the other rows' targets (in-batch, drawn ~ popularity) plus
        n_negatives drawn from item popularity. Subtracting log Q (the sampling probability)
        makes the sampled softmax an unbiased stand-in for the full one, which would otherwise
        over-punish popular items."""
        negatives = torch.multinomial(self.item_probs, self.cfg.n_negatives, replacement=True)
        candidates = torch.cat([targets, negatives])
        weights = self.item_embedding.weight[candidates]
        logits = hidden @ weights.T + self.output_bias[candidates]
        logits = logits - torch.log(self.item_probs[candidates])
        # A candidate equal to the row's target (other than its own slot) is not a negative.
        own = torch.arange(len(targets), device=targets.device)
        hits = candidates[None, :] == targets[:, None]
        hits[own, own] = False
        return F.cross_entropy(logits.masked_fill(hits, float("-inf")), own,
                               label_smoothing=self.cfg.label_smoothing)

    def loss(self, items: torch.Tensor, features: Features | None = None) -> torch.Tensor:
        return self.task.loss(self, items, features)


__all__ = ["ModelConfig", "SequenceRecommender", "BACKBONES", "TASKS", "MASK_ID"]
