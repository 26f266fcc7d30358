"""Training with causal LM loss (every position predicts the next item), early stopping on
validation NDCG@10, and a checkpoint of the best epoch."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from seqrec.preprocessing.ops import LIST_SUFFIX
from seqrec.preprocessing.pipeline import read_split
from seqrec.preprocessing.workflow import FIRST_ITEM_ID, ITEM_LIST, PAD_ID, item_vocabulary, load_workflow

from .checkpoint import save_checkpoint
from .data import pad_right, split_history_target
from .metrics import CUTOFFS, popularity_top, ranking_metrics
from .model import ModelConfig, SequenceRecommender
from .recommend import recommend


@dataclass
class TrainConfig:
    data_dir: str = "artifacts/ml-100k/data"
    output_dir: str = "artifacts/ml-100k/model"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    patience: int = 5
    seed: int = 42
    eval_batch_size: int = 256
    model: dict = field(default_factory=dict)  # ModelConfig overrides (d_model, n_layers, ...)


@dataclass
class TrainResult:
    output_dir: str
    epochs_run: int
    best_epoch: int
    losses: list[float]
    valid: dict[str, float]
    test: dict[str, float]
    popularity_valid: dict[str, float]
    popularity_test: dict[str, float]
    seconds: float


def evaluate(model: SequenceRecommender, lists, batch_size: int = 256) -> dict[str, float]:
    """Metrics for the last item of each list given everything before it, via recommend()."""
    histories, targets = split_history_target(lists)
    tops = [
        recommend(model, histories[i : i + batch_size], k=max(CUTOFFS))[0]
        for i in range(0, len(histories), batch_size)
    ]
    return ranking_metrics(np.concatenate(tops), targets)


def evaluate_popularity(train_lists, eval_lists, num_items: int) -> dict[str, float]:
    _, targets = split_history_target(eval_lists)
    top = popularity_top(train_lists, num_items, FIRST_ITEM_ID, max(CUTOFFS))
    return ranking_metrics(np.broadcast_to(top, (len(targets), len(top))), targets)


def clm_loss(model: SequenceRecommender, batch: torch.Tensor) -> torch.Tensor:
    """Every position predicts the item after it; padded targets are ignored."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model.logits(model.hidden_states(inputs))
    targets = targets.masked_fill(targets == PAD_ID, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _lists(frame: pd.DataFrame) -> list[np.ndarray]:
    return list(frame[ITEM_LIST])


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    workflow = load_workflow(Path(cfg.data_dir) / "workflow")
    num_items = len(item_vocabulary(workflow))
    train_lists = _lists(read_split(cfg.data_dir, "train"))
    valid_lists = _lists(read_split(cfg.data_dir, "valid"))
    test_lists = _lists(read_split(cfg.data_dir, "test"))
    max_len = int(max(len(x) for x in test_lists))
    model_cfg = ModelConfig(num_items=num_items, max_len=max_len, **cfg.model)
    model = SequenceRecommender(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # Sequences shorter than 2 give no (input, next item) pair.
    train_batch = pad_right([x for x in train_lists if len(x) >= 2], max_len)
    generator = torch.Generator().manual_seed(cfg.seed)
    best, best_epoch, losses, bad_epochs = -1.0, 0, [], 0
    out = Path(cfg.output_dir)
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train_batch), generator=generator)
        total, steps = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            batch = train_batch[order[i : i + cfg.batch_size]]
            batch = batch[:, : int((batch != PAD_ID).sum(1).max())]  # trim shared padding
            loss = clm_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
        valid = evaluate(model, valid_lists, cfg.eval_batch_size)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", ndcg10=f"{valid['ndcg@10']:.4f}")
        if valid["ndcg@10"] > best:
            best, best_epoch, bad_epochs = valid["ndcg@10"], epoch, 0
            save_checkpoint(model, out)
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    from .checkpoint import load_checkpoint  # the best epoch, not the last

    model = load_checkpoint(out)
    result = TrainResult(
        output_dir=str(out),
        epochs_run=len(losses),
        best_epoch=best_epoch,
        losses=losses,
        valid=evaluate(model, valid_lists, cfg.eval_batch_size),
        test=evaluate(model, test_lists, cfg.eval_batch_size),
        popularity_valid=evaluate_popularity(train_lists, valid_lists, num_items),
        # the test-time popularity may count the valid targets too: they are history by then
        popularity_test=evaluate_popularity(valid_lists, test_lists, num_items),
        seconds=time.perf_counter() - started,
    )
    (out / "metrics.json").write_text(json.dumps({"train_config": asdict(cfg), **asdict(result)}, indent=2))
    return result


__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "clm_loss", "LIST_SUFFIX"]
