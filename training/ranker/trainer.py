"""`seqrec rank`: label MovieLens-100k ratings, initialise the ranker by one of the five
strategies (from a generative model pretrained here, or a checkpoint of seqrec's CLM training),
train it with binary cross-entropy for a fixed budget, and report AUC, GAUC and log loss on the
held-out users (and on training examples, for the train-test gap)."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from seqrec.config import structure_nested

from ..evaluation import binary_auc, group_auc, log_loss
from ..loop import LR_DECAYS, lr_factor, resolve_device
from .labels import Examples, LabelConfig, build_examples, generative_rows, split_users
from .model import Ranker, RankerModelConfig, category_table, dense_parameter_count
from .strategies import STRATEGIES, Strategy, apply_strategy

Source = Literal["pretrain", "checkpoint"]
RANKER_FILE, GENERATIVE_FILE, METRICS_FILE = "ranker.pt", "generative.pt", "metrics.json"


@dataclass
class PretrainConfig:
    """Generative pretraining of the ranker's own architecture on the training users' sequences."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    n_negatives: int = 256  # uniform negatives per batch for the next-item sampled softmax
    temperature: float = 0.05  # of the cosine similarities (L2-normalised embeddings)
    category_weight: float = 1.0  # weight of the next-category loss

    def __post_init__(self):
        if self.temperature <= 0 or self.n_negatives < 1 or self.epochs < 1:
            raise ValueError("pretrain: temperature must be > 0, n_negatives and epochs >= 1")


@dataclass
class InitConfig:
    strategy: Strategy = "sparse_freeze"  # none | full | sparse | full_freeze | sparse_freeze
    # pretrain: a generative model trained here first (train users only); checkpoint: the seqrec
    # CLM checkpoint in rank.generative_dir (llama backbone, same ETL item vocabulary)
    source: Source = "pretrain"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r}: choose from {STRATEGIES}")
        structure_nested(self)


@dataclass
class RankConfig:
    data_dir: str = "artifacts/ml-100k/data"  # the ETL output: its workflow's item vocabulary
    output_dir: str = "artifacts/ml-100k/ranker"
    generative_dir: str | None = None  # a seqrec CLM checkpoint (init.source: checkpoint)
    dataset: Literal["movielens-100k"] = "movielens-100k"
    epochs: int = 2
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0
    lr_decay: str = "cosine"
    seed: int = 42
    device: str = "cpu"
    eval_batch_size: int = 1024
    train_eval_examples: int = 20_000  # training examples scored for the train-test gap
    labels: LabelConfig = field(default_factory=LabelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    model: RankerModelConfig = field(default_factory=RankerModelConfig)

    def __post_init__(self):
        structure_nested(self)
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay {self.lr_decay!r}: choose from {LR_DECAYS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        resolve_device(self.device)


@dataclass
class RankData:
    train: Examples
    test: Examples
    item_category: np.ndarray
    categories: list[str]


def load_movielens(data_dir: str | Path, labels: LabelConfig) -> RankData:
    """MovieLens-100k ratings labelled, with the ETL workflow's item encoding (the encoding the
    generative checkpoints of `seqrec train` use); interactions with unknown items are dropped."""
    from seqrec.preprocessing.arrays import FIRST_ITEM_ID
    from seqrec.preprocessing.datasets import read_movielens_100k, read_movielens_100k_genres
    from seqrec.preprocessing.workflow import encode_items, item_vocabulary, load_workflow

    workflow_dir = Path(data_dir) / "workflow"
    if not workflow_dir.is_dir():
        raise FileNotFoundError(f"{workflow_dir} not found: run `seqrec preprocess` first (the ranker "
                                f"uses its item vocabulary)")
    vocabulary = item_vocabulary(load_workflow(workflow_dir))
    frame = read_movielens_100k()
    items = encode_items(vocabulary, frame["item_id"].to_numpy())
    known = items >= FIRST_ITEM_ID
    examples = build_examples(frame["user_id"].to_numpy()[known], items[known],
                              frame["timestamp"].to_numpy()[known], frame["rating"].to_numpy()[known],
                              labels, len(vocabulary))
    train, test = split_users(examples, labels.test_quantile)
    table, names = category_table(vocabulary, read_movielens_100k_genres())
    return RankData(train, test, table, names)


def optimise(model: torch.nn.Module, n_units: int, loss_of: Callable[[np.ndarray], torch.Tensor], *,
             epochs: int, batch_size: int, lr: float, weight_decay: float, warmup_steps: int,
             decay: str, rng: np.random.Generator) -> list[float]:
    """AdamW over the trainable parameters, a per-step learning-rate schedule, shuffled batches
    of unit indices; the mean loss of every epoch."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = -(-n_units // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, epochs * steps, decay))
    losses = []
    for _ in range(epochs):
        model.train()
        order, total = rng.permutation(n_units), 0.0
        for i in range(0, n_units, batch_size):
            loss = loss_of(order[i:i + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss)
        losses.append(total / steps)
    return losses


def new_ranker(cfg: RankConfig, data: RankData) -> Ranker:
    return Ranker(cfg.model, data.item_category, len(data.categories) + 2, cfg.labels.max_history)


def pretrain(cfg: RankConfig, data: RankData, device: torch.device) -> tuple[dict, list[float]]:
    """The ranker's architecture trained generatively on the TRAINING users' sequences only (the
    test users' interactions never reach the ranker through its initialisation)."""
    p = cfg.init.pretrain
    torch.manual_seed(cfg.seed + 1)
    model = new_ranker(cfg, data).to(device)
    rows = torch.from_numpy(generative_rows(data.train, np.unique(data.train.user), cfg.labels.max_history + 1))

    def loss_of(index):
        batch = rows[index]
        batch = batch[:, : int((batch != 0).sum(1).max())].to(device)
        return model.generative_loss(batch, p.n_negatives, p.temperature, p.category_weight)

    losses = optimise(model, len(rows), loss_of, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                      weight_decay=p.weight_decay, warmup_steps=0, decay="cosine",
                      rng=np.random.default_rng(cfg.seed + 1))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, losses


def checkpoint_source(folder: str | Path | None, num_items: int) -> dict:
    """The state dict of a seqrec CLM checkpoint, checked: llama backbone, same item vocabulary."""
    from ..checkpoint import load_checkpoint

    if folder is None:
        raise ValueError("init.source checkpoint needs rank.generative_dir (a `seqrec train` output)")
    model = load_checkpoint(folder)
    if model.cfg.backbone != "llama":
        raise ValueError(f"{folder}: a {model.cfg.backbone!r} checkpoint; the ranker's transformer is "
                         f"llama (train the generative model with model.backbone: llama)")
    if model.cfg.num_items != num_items:
        raise ValueError(f"{folder}: {model.cfg.num_items} item ids, but the ranker's data has "
                         f"{num_items}: train both on the same ETL output")
    return model.state_dict()


@torch.no_grad()
def predict(model: Ranker, examples: Examples, batch_size: int) -> np.ndarray:
    """Click probabilities of every example, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(examples), batch_size):
        hist, lengths, cand = examples.batch(np.arange(i, min(i + batch_size, len(examples))))
        out.append(torch.sigmoid(model(hist.to(device), lengths.to(device), cand.to(device))).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def metrics(examples: Examples, probabilities: np.ndarray) -> dict[str, float]:
    return {"auc": binary_auc(probabilities, examples.label),
            "gauc": group_auc(probabilities, examples.label, examples.user),
            "logloss": log_loss(probabilities, examples.label)}


@dataclass
class RankResult:
    output_dir: str
    strategy: str
    dense_parameters: int
    losses: list[float]
    pretrain_losses: list[float]
    train: dict[str, float]
    test: dict[str, float]
    copied: list[str]
    frozen: list[str]
    seconds: float
    examples: dict[str, int]


def fit(cfg: RankConfig, data: RankData, source: dict | None, device: torch.device) -> tuple[Ranker, dict]:
    """A ranker initialised by cfg.init.strategy from `source`, trained for the fixed budget."""
    torch.manual_seed(cfg.seed)
    model = new_ranker(cfg, data)
    moved = apply_strategy(model, source or {}, cfg.init.strategy)
    model.to(device)
    train = data.train
    labels = torch.from_numpy(train.label)

    def loss_of(index):
        hist, lengths, cand = train.batch(index)
        logits = model(hist.to(device), lengths.to(device), cand.to(device))
        return F.binary_cross_entropy_with_logits(logits, labels[index].to(device))

    losses = optimise(model, len(train), loss_of, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, decay=cfg.lr_decay,
                      rng=np.random.default_rng(cfg.seed))
    return model, {**moved, "losses": losses}


def evaluate_ranker(cfg: RankConfig, model: Ranker, data: RankData) -> tuple[dict, dict]:
    """(train metrics on a fixed sample of training examples, test metrics)."""
    sample = np.random.default_rng(0).permutation(len(data.train))[: cfg.train_eval_examples]
    train = data.train.take(np.sort(sample))
    return (metrics(train, predict(model, train, cfg.eval_batch_size)),
            metrics(data.test, predict(model, data.test, cfg.eval_batch_size)))


def rank(cfg: RankConfig, data: RankData | None = None, source: dict | None = None) -> RankResult:
    """The whole run; writes output_dir/{ranker.pt, generative.pt (when pretrained), metrics.json}.
    `data` / `source` may be given to share them between runs (the scaling study)."""
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    data = data or load_movielens(cfg.data_dir, cfg.labels)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pretrain_losses: list[float] = []
    if cfg.init.strategy != "none" and source is None:
        if cfg.init.source == "checkpoint":
            source = checkpoint_source(cfg.generative_dir, len(data.item_category))
        else:
            source, pretrain_losses = pretrain(cfg, data, device)
            _save(source, out / GENERATIVE_FILE)
    model, fitted = fit(cfg, data, source, device)
    train_m, test_m = evaluate_ranker(cfg, model, data)
    _save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / RANKER_FILE)
    result = RankResult(output_dir=str(out), strategy=cfg.init.strategy,
                        dense_parameters=dense_parameter_count(model), losses=fitted["losses"],
                        pretrain_losses=pretrain_losses, train=train_m, test=test_m,
                        copied=fitted["copied"], frozen=fitted["frozen"],
                        seconds=time.perf_counter() - started,
                        examples={"train": len(data.train), "test": len(data.test)})
    (out / METRICS_FILE).write_text(json.dumps({"rank_config": asdict(cfg), **asdict(result)}, indent=2))
    return result


def _save(state: dict, path: Path) -> None:
    """Written aside and renamed: never a half-written file where a later run reads one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


__all__ = ["RankConfig", "InitConfig", "PretrainConfig", "RankResult", "RankData", "rank", "fit",
           "pretrain", "load_movielens", "metrics", "predict"]
