"""Side features: per-interaction columns next to the items (`<col>-list` in the session parquet)
embedded and combined with the item embedding before the backbone.

Categorical columns (Categorify codes) get an nn.Embedding each, sized from the saved workflow's
cardinality. Continuous columns are standardised with training statistics (optionally after
log1p, for heavy-tailed gaps in seconds) and embedded by one linear layer or by a soft one-hot
embedding (per column: learned bin logits, softmax weights over learned bin vectors). The parts
are combined with the item embedding by concatenation + a linear projection to d_model, or by
summation (every part is then d_model wide).

Positions: padding contributes nothing (zeroed); a mask position (MLM/PLM/RTD, the appended
inference mask included) shows the mask embedding ALONE, neither its item nor its side features,
so training cannot peek at a masked interaction's features and inference needs no value for the
next interaction's (unknown) features.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Mapping, Sequence, get_args

import numpy as np
import torch
from torch import nn

from seqrec.config import derived
from seqrec.errors import ConfigError
from seqrec.preprocessing.arrays import LIST_SUFFIX, list_column

from .data import Ragged, as_ragged, pad_right

if TYPE_CHECKING:
    from .model import ModelConfig

Combine = Literal["concat", "sum"]
ContinuousEmbedding = Literal["linear", "soft-one-hot"]
COMBINES, CONTINUOUS_EMBEDDINGS = get_args(Combine), get_args(ContinuousEmbedding)

# features of a batch: column name -> [B, T] tensor (int64 codes or float32 values)
Features = Mapping[str, torch.Tensor]


@dataclass
class SideFeatureConfig:
    categorical: list[str] = field(default_factory=list)  # columns whose `<col>-list` holds codes
    continuous: list[str] = field(default_factory=list)  # columns whose `<col>-list` holds numbers
    log_scale: list[str] = field(default_factory=list)  # continuous ones log1p'd first (gaps)
    combine: Combine = "concat"  # concat (+ projection to d_model) | sum
    continuous_embedding: ContinuousEmbedding = "linear"  # linear | soft-one-hot
    categorical_dim: int = 16  # width of each categorical embedding (concat; sum uses d_model)
    continuous_dim: int = 16  # width of the continuous part (concat; sum uses d_model)
    soft_one_hot_bins: int = 16
    # categorical column -> codes, reserved ones included (from the workflow's Categorify)
    cardinalities: dict[str, int] = derived("the workflow's Categorify", default_factory=dict)

    def __post_init__(self):
        # the choices again: this class is also built in code, not only by the recipe loader
        if self.combine not in COMBINES:
            raise ConfigError("combine", f"{self.combine!r}: choose from {COMBINES}")
        if self.continuous_embedding not in CONTINUOUS_EMBEDDINGS:
            raise ConfigError("continuous_embedding", f"{self.continuous_embedding!r}: "
                              f"choose from {CONTINUOUS_EMBEDDINGS}")
        both = sorted(set(self.categorical) & set(self.continuous))
        if both:
            raise ConfigError("", f"{both} listed as categorical and continuous")
        stray = sorted(set(self.log_scale) - set(self.continuous))
        if stray:
            raise ConfigError("log_scale", f"{stray} are not continuous columns")
        if min(self.categorical_dim, self.continuous_dim, self.soft_one_hot_bins) < 1:
            raise ConfigError("", "dims and soft_one_hot_bins must be >= 1")

    @property
    def columns(self) -> list[str]:
        return list(self.categorical) + list(self.continuous)

    def to_dict(self) -> dict:
        return asdict(self)


def check_columns(cfg: SideFeatureConfig, schema) -> None:
    """Every configured column must be a list column of the data with the right kind; `schema` is
    the saved workflow's output schema (merlin), read before any training."""
    available = {c.name[: -len(LIST_SUFFIX)]: c for c in schema if c.name.endswith(LIST_SUFFIX)}
    available.pop("item_id", None)
    unknown = [c for c in cfg.columns if c not in available]
    if unknown:
        raise ConfigError("side_features", f"unknown column(s) {unknown}; the data has "
                          f"{sorted(available)} (as <col>{LIST_SUFFIX})")
    not_cat = [c for c in cfg.categorical if "embedding_sizes" not in available[c].properties]
    if not_cat:
        raise ConfigError("side_features.categorical", f"{not_cat} were not encoded by Categorify; "
                          "list them under continuous or categorise them in preprocessing")


def cardinalities(cfg: SideFeatureConfig, schema) -> dict[str, int]:
    """Embedding table sizes from the workflow's Categorify (reserved codes included)."""
    by_name = {c.name: c for c in schema}
    return {c: int(by_name[list_column(c)].properties["embedding_sizes"]["cardinality"])
            for c in cfg.categorical}


def read_feature_lists(frame, cfg: SideFeatureConfig | None) -> dict[str, list[np.ndarray]]:
    """Split frame -> column name -> per-row arrays aligned with the item lists."""
    if cfg is None:
        return {}
    return {c: list(frame[list_column(c)]) for c in cfg.columns}


def feature_columns(columns: Mapping[str, Ragged], cfg: SideFeatureConfig | None) -> dict[str, Ragged]:
    """List columns read by data.read_columns -> side feature name -> its rows (none: {})."""
    return {} if cfg is None else {c: columns[list_column(c)] for c in cfg.columns}


def slice_rows(features: Mapping[str, Sequence[np.ndarray]] | None,
               fn: Callable[[np.ndarray, int], np.ndarray], positions) -> dict | None:
    """Per-row arrays cut like their item rows: fn(row, position) for every row."""
    if not features:
        return None
    return {c: [fn(x, p) for x, p in zip(rows, positions)] for c, rows in features.items()}


def map_features(features: Features | None, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict | None:
    """The same indexing applied to every feature tensor (e.g. x[:, :-1], the items' slice)."""
    return None if features is None else {c: fn(t) for c, t in features.items()}


class SoftOneHot(nn.Module):
    """Soft one-hot embedding of F scalar columns: per column, bin logits w*x + b (learned), a
    softmax over the bins, and the weighted sum of learned bin vectors -> [..., F, dim]."""

    def __init__(self, n_columns: int, bins: int, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(n_columns, bins))
        self.shift = nn.Parameter(torch.randn(n_columns, bins))
        self.bins = nn.Parameter(torch.randn(n_columns, bins, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(x[..., None] * self.scale + self.shift, dim=-1)  # [..., F, bins]
        return torch.einsum("...fn,fnd->...fd", weights, self.bins)


class SideFeatureEncoder(nn.Module):
    """(item embeddings [B, T, d], features) -> input embeddings [B, T, d]."""

    def __init__(self, cfg: SideFeatureConfig, d_model: int):
        super().__init__()
        self.cfg = cfg
        concat = cfg.combine == "concat"
        cat_dim = cfg.categorical_dim if concat else d_model
        self.categorical = nn.ModuleDict({
            c: nn.Embedding(cfg.cardinalities[c], cat_dim, padding_idx=0) for c in cfg.categorical})
        for emb in self.categorical.values():
            nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                emb.weight[0].zero_()
        n_cont = len(cfg.continuous)
        cont_dim = cfg.continuous_dim if concat else d_model
        self.continuous = None
        if n_cont and cfg.continuous_embedding == "linear":
            self.continuous = nn.Linear(n_cont, cont_dim)
        elif n_cont:
            self.continuous = SoftOneHot(n_cont, cfg.soft_one_hot_bins, cont_dim)
        # Training-split statistics (set_statistics), saved with the weights.
        self.register_buffer("mean", torch.zeros(n_cont))
        self.register_buffer("std", torch.ones(n_cont))
        self.register_buffer("log", torch.tensor([c in cfg.log_scale for c in cfg.continuous],
                                                 dtype=torch.bool))
        self.projection = None
        if concat:
            width = d_model + len(cfg.categorical) * cat_dim
            if n_cont:
                width += cont_dim * (n_cont if cfg.continuous_embedding == "soft-one-hot" else 1)
            self.projection = nn.Linear(width, d_model)
            # Start as the item-only model plus the side parts: the item block of the projection is
            # the identity, so the input item embedding stays the one the output head is tied to.
            with torch.no_grad():
                self.projection.weight[:, :d_model] = torch.eye(d_model)
                self.projection.bias.zero_()

    def set_statistics(self, values: Mapping[str, np.ndarray]) -> None:
        """Standardisation from the training split's flat values of each continuous column."""
        if not self.cfg.continuous:
            return
        stacked = [self._log(np.asarray(values[c], dtype=np.float64), c in self.cfg.log_scale)
                   for c in self.cfg.continuous]
        self.mean.copy_(torch.tensor([v.mean() if len(v) else 0.0 for v in stacked]))
        self.std.copy_(torch.tensor([max(v.std(), 1e-6) if len(v) else 1.0 for v in stacked]))

    @staticmethod
    def _log(values, on: bool):
        return np.log1p(np.clip(values, 0, None)) if on else values

    def continuous_values(self, features: Features) -> torch.Tensor:
        """[B, T, F] standardised continuous values (float32)."""
        x = torch.stack([features[c].float() for c in self.cfg.continuous], dim=-1)
        x = torch.where(self.log, torch.log1p(x.clamp(min=0)), x)
        return (x - self.mean) / self.std

    def forward(self, item_emb: torch.Tensor, features: Features, real: torch.Tensor) -> torch.Tensor:
        parts = [self.categorical[c](features[c].clamp(min=0)) for c in self.cfg.categorical]
        if self.continuous is not None:
            cont = self.continuous(self.continuous_values(features))
            if cont.dim() == item_emb.dim() + 1:  # soft one-hot: [B, T, F, dim]
                cont = cont.flatten(-2) if self.projection is not None else cont.sum(-2)
            parts.append(cont)
        if self.projection is not None:
            out = self.projection(torch.cat([item_emb, *parts], dim=-1))
        else:
            out = item_emb + sum(parts)
        return out * real[..., None].to(out.dtype)  # padding contributes nothing


def missing_features(cfg: SideFeatureConfig | None, features) -> list[str]:
    """Configured columns absent from `features` (an error for a model that needs them)."""
    if cfg is None:
        return []
    return [c for c in cfg.columns if not features or c not in features]


def workflow_schema(data_dir: str | Path):
    """The saved workflow's output schema, read without fitting anything."""
    from seqrec.preprocessing.workflow import load_workflow

    return load_workflow(Path(data_dir) / "workflow").output_schema


def pad_features(cfg: SideFeatureConfig | None, features, max_len: int | None) -> dict | None:
    """Per-row feature arrays -> right-padded [B, T] tensors (int64 codes, float32 values),
    cut exactly like the item rows (training.data.pad_right keeps the LAST max_len)."""
    if cfg is None or not features:
        return None
    out = {c: pad_right(features[c], max_len) for c in cfg.categorical}
    out.update({c: pad_right(features[c], max_len, dtype=np.float32) for c in cfg.continuous})
    return out


def flat_features(cfg: SideFeatureConfig | None, features) -> dict | None:
    """Per-row feature arrays -> their flat values as tensors (int64 codes, float32 values),
    aligned with the flat item values: training windows gather both with the same index."""
    if cfg is None or not features:
        return None
    out = {c: torch.from_numpy(as_ragged(features[c]).values.astype(np.int64, copy=False))
           for c in cfg.categorical}
    out.update({c: torch.from_numpy(as_ragged(features[c]).values.astype(np.float32, copy=False))
                for c in cfg.continuous})
    return out


def check_aligned(histories: Sequence[np.ndarray], features, cfg: SideFeatureConfig) -> None:
    """Every configured column present, with one value per history item."""
    missing = missing_features(cfg, features)
    if missing:
        raise ValueError(f"this model was trained with side features; missing {missing}")
    lengths = as_ragged(histories).lengths
    for c in cfg.columns:
        if len(features[c]) != len(histories):
            raise ValueError(f"side feature {c!r} has {len(features[c])} rows for {len(histories)} histories")
        got = as_ragged(features[c]).lengths
        bad = np.flatnonzero(got != lengths)
        if bad.size:
            raise ValueError(f"side feature {c!r} row {bad[0]} has {got[bad[0]]} values for "
                             f"{lengths[bad[0]]} items")


def check_side_features(data_dir: str | Path, model: "ModelConfig") -> None:
    """Config-time check of `model.side_features` against the data's saved workflow schema (when
    the data is there already; train() checks again before reading it)."""
    if model.side is not None and (Path(data_dir) / "workflow").is_dir():
        try:
            check_columns(model.side, workflow_schema(data_dir))
        except ConfigError as err:
            raise err.under("model") from None


def with_cardinalities(model: "ModelConfig", schema) -> "ModelConfig":
    """The model config with the categorical cardinalities of the workflow filled in (and the
    columns checked): the checkpoint then rebuilds the same tables without the workflow."""
    if model.side is None:
        return model
    check_columns(model.side, schema)
    return replace(model, side_features=replace(model.side, cardinalities=cardinalities(model.side, schema)))


def side_list_columns(model: "ModelConfig") -> list[str]:
    """The parquet columns a model with this config reads besides the items."""
    return [] if model.side is None else [list_column(c) for c in model.side.columns]
