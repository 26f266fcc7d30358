"""Training with the model's task (CLM by default), early stopping on validation NDCG@10, and a
checkpoint of the best epoch."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from seqrec.config import structure_nested
from seqrec.preprocessing.arrays import ITEM_LIST, LIST_SUFFIX

from . import distributed
from .checkpoint import save_checkpoint
from .data import read_columns
from .evaluation import evaluate, evaluate_popularity
from .features import check_side_features, feature_columns, side_list_columns
from .loop import (LR_DECAYS, STATE_FILE, Precision, Trainer, check_run_options, data_window,
                   workflow_facts)
from .model import ModelConfig
from .run_log import RunLog


@dataclass
class TrainConfig:
    data_dir: str = "artifacts/ml-100k/data"
    output_dir: str = "artifacts/ml-100k/model"
    epochs: int = 40
    batch_size: int | None = None  # None: 64, smaller for masked tasks on small data (loop.default_batch_size)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimizer steps
    lr_decay: str = "none"  # after the warm-up: none (constant) | linear | cosine, to 0 at the last epoch
    patience: int = 5
    # early stopping never ends a run before this many optimizer steps; None: the task's
    # (masked tasks: MASKED_STALL_STEPS, they stall before they learn; causal tasks: 0)
    min_steps: int | None = None
    seed: int = 42
    eval_batch_size: int = 256
    steps_per_epoch: int | None = None  # cap (CLM-last's prefix breakdown makes long epochs)
    eval_exclude_seen: bool = False  # evaluation never recommends items already in the history
    resume: bool = False  # continue from output_dir/trainer_state.pt (written after every epoch)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when present); torchrun: cuda:LOCAL_RANK
    precision: Precision = "fp32"  # fp32 | bf16 (autocast of the training step; evaluation stays fp32)
    tensorboard: bool = True  # loss, learning rate and validation metrics per epoch in output_dir/tensorboard
    model: ModelConfig = field(default_factory=ModelConfig)  # backbone, task, d_model, ...

    def __post_init__(self):
        # An invalid backbone x task pair or option fails here, before any data is read.
        structure_nested(self)
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay {self.lr_decay!r}: choose from {LR_DECAYS}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size} must be >= 1 (or unset for the default)")
        if self.min_steps is not None and self.min_steps < 0:
            raise ValueError(f"min_steps {self.min_steps} must be >= 0 (or unset for the task's)")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be >= 0")
        check_run_options(self.precision, self.device)
        check_side_features(self.data_dir, self.model)  # unknown side columns, named


@dataclass
class TrainResult:
    output_dir: str
    epochs_run: int
    best_epoch: int
    losses: list[float]
    # evaluation reports (training/evaluation.py::summarise): the configured seen policy's
    # metrics, both policies, and per history-length bucket
    valid: dict
    test: dict
    popularity_valid: dict
    popularity_test: dict
    seconds: float
    valid_history: list[float] = field(default_factory=list)  # valid NDCG@10 after each epoch
    max_len: int = 0  # the model's window (history items it reads)
    train_interactions: int = 0  # items in the training sequences
    train_targets: int = 0  # of them, trained as a target each epoch (sliding windows)
    batch_size: int = 0  # the global batch trained with (the configured one, or the default rule's)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Trains in this process, or as one rank of `torchrun` (see training/distributed.py)."""
    ctx = distributed.setup("nccl" if cfg.device.startswith("cuda") else "gloo")
    try:
        result = _train(cfg, progress, ctx)
    except BaseException:
        distributed.teardown(ctx, barrier=False)  # the other ranks are stopped by torchrun
        raise
    distributed.teardown(ctx)
    return result


def _train(cfg: TrainConfig, progress: bool, ctx: distributed.Context) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    num_items, model_options = workflow_facts(cfg.data_dir, cfg.model)  # side cardinalities, if any
    columns = [ITEM_LIST, *side_list_columns(model_options)]
    data = {s: read_columns(Path(cfg.data_dir) / f"{s}.parquet", columns) for s in ("train", "valid", "test")}
    rows = {s: data[s][ITEM_LIST] for s in data}
    max_len = data_window(cfg.data_dir, rows["test"].lengths.max())
    model_cfg = replace(model_options, num_items=num_items, max_len=max_len)
    side = {s: feature_columns(data[s], model_cfg.side) for s in data}
    trainer = Trainer(model_cfg, rows["train"], side["train"], seed=cfg.seed, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, device=cfg.device, batch_size=cfg.batch_size,
                      steps_per_epoch=cfg.steps_per_epoch, precision=cfg.precision, ctx=ctx)
    model, device = trainer.model, trainer.device
    examples = trainer.units(rows["train"], side["train"])
    trainer.schedule(examples, cfg.epochs, cfg.warmup_steps, cfg.lr_decay)
    min_steps = model.task.min_steps_before_stopping if cfg.min_steps is None else cfg.min_steps
    min_epochs = -(-min_steps // max(trainer.epoch_steps(examples), 1))  # before patience may stop it
    best, best_epoch, losses, bad_epochs, history = -1.0, 0, [], 0, []
    out = Path(cfg.output_dir)
    if ctx.main:  # only rank 0 writes
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, enabled=cfg.tensorboard and ctx.main)
    first_epoch = 1
    state_file = out / STATE_FILE
    state = trainer.load_state(state_file) if cfg.resume else None
    if state is not None:
        history = state.get("valid_history", [])
        best, best_epoch, losses, bad_epochs = state["best"], state["best_epoch"], state["losses"], state["bad_epochs"]
        first_epoch = state["epoch"] + 1
    distributed.seed_rank(ctx, cfg.seed + 7919 * (first_epoch - 1))  # rank 0 keeps its stream

    def evaluate_split(split):
        return evaluate(model, rows[split], cfg.eval_batch_size, cfg.eval_exclude_seen, side[split] or None, ctx)

    bar = tqdm(range(first_epoch, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress or not ctx.main,
               initial=first_epoch - 1, total=cfg.epochs)
    for epoch in bar:
        if bad_epochs >= cfg.patience and epoch - 1 >= min_epochs:  # a resumed run that had stopped
            break
        losses.append(trainer.epoch(examples))
        # the same metrics on every rank (rank 0's), so all ranks stop early together
        valid = evaluate_split("valid")
        bar.set_postfix(loss=f"{losses[-1]:.3f}", ndcg10=f"{valid['ndcg@10']:.4f}")
        history.append(valid["ndcg@10"])
        log.epoch(epoch, losses[-1], trainer.optimizer.param_groups[0]["lr"])
        log.metrics(epoch, valid, "valid")
        if valid["ndcg@10"] > best:
            best, best_epoch, bad_epochs = valid["ndcg@10"], epoch, 0
            if ctx.main:
                save_checkpoint(model, out)
        else:
            bad_epochs += 1
        # The last epoch's full training state (not the best weights), so a run can resume.
        trainer.save_state(state_file, epoch=epoch, best=best, best_epoch=best_epoch, losses=losses,
                           bad_epochs=bad_epochs, valid_history=history)
        if bad_epochs >= cfg.patience and epoch >= min_epochs:
            break
    log.close()
    from .checkpoint import load_checkpoint  # the best epoch, not the last

    if ctx.main:
        model = load_checkpoint(out).to(device)
    distributed.broadcast_weights(ctx, model)  # the best epoch's weights to every rank
    result = TrainResult(
        output_dir=str(out),
        epochs_run=len(losses),
        best_epoch=best_epoch,
        losses=losses,
        valid=evaluate_split("valid"),
        test=evaluate_split("test"),
        popularity_valid=evaluate_popularity(rows["train"], rows["valid"], num_items, cfg.eval_exclude_seen),
        # the test-time popularity may count the valid targets too: they are history by then
        popularity_test=evaluate_popularity(rows["valid"], rows["test"], num_items, cfg.eval_exclude_seen),
        seconds=time.perf_counter() - started,
        valid_history=history,
        max_len=max_len,
        train_interactions=int(rows["train"].lengths.sum()),
        train_targets=examples.targets,
        batch_size=trainer.batch_for(examples),
    )
    if ctx.main:
        (out / "metrics.json").write_text(json.dumps({"train_config": asdict(cfg), **asdict(result),
                                                      "world_size": ctx.world_size}, indent=2))
    return result


__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "LIST_SUFFIX", "STATE_FILE"]
