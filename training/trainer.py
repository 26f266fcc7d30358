"""Training with the model's task (CLM by default), early stopping on validation NDCG@10, and a
checkpoint of the best epoch."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from seqrec.config import structure
from seqrec.preprocessing.ops import LIST_SUFFIX
from seqrec.preprocessing.pipeline import read_split
from seqrec.preprocessing.workflow import FIRST_ITEM_ID, ITEM_LIST, PAD_ID, item_vocabulary, load_workflow

from . import distributed
from .checkpoint import save_checkpoint
from .data import gather_units, pad_right, split_history_target
from .features import (check_side_features, map_features, pad_features, read_feature_lists,
                       side_list_columns, slice_rows, with_cardinalities)
from .metrics import CUTOFFS, popularity_counts, popularity_top, popularity_top_unseen, ranking_metrics
from .model import ModelConfig, SequenceRecommender
from .recommend import recommend


Precision = Literal["fp32", "bf16"]
PRECISIONS = get_args(Precision)
LR_DECAYS = ("none", "linear", "cosine")


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based): a linear warm-up
    over `warmup_steps`, then constant, or a linear / cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none" or total_steps <= warmup_steps:
        return 1.0
    done = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return 1.0 - done if decay == "linear" else 0.5 * (1.0 + np.cos(np.pi * done))


def lr_scheduler(optimizer, cfg: "TrainConfig", steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of `cfg` (warmup_steps, lr_decay over all `cfg.epochs`), stepped per batch."""
    total = cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, total, cfg.lr_decay))


def resolve_device(name: str, ctx: distributed.Context = distributed.SINGLE) -> torch.device:
    """The configured device, checked; under torchrun each rank takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device {name!r}: choose cpu, cuda, cuda:N or auto")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch build or machine has no CUDA device "
                             "(use device: cpu or auto)")
        if ctx.active:
            name = f"cuda:{ctx.local_rank}"
    return torch.device(name)


@dataclass
class TrainConfig:
    data_dir: str = "artifacts/ml-100k/data"
    output_dir: str = "artifacts/ml-100k/model"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimizer steps
    lr_decay: str = "none"  # after the warm-up: none (constant) | linear | cosine, to 0 at the last epoch
    patience: int = 5
    seed: int = 42
    eval_batch_size: int = 256
    steps_per_epoch: int | None = None  # cap (CLM-last's prefix breakdown makes long epochs)
    eval_exclude_seen: bool = False  # evaluation never recommends items already in the history
    resume: bool = False  # continue from output_dir/trainer_state.pt (written after every epoch)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when present); torchrun: cuda:LOCAL_RANK
    precision: Precision = "fp32"  # fp32 | bf16 (autocast of the training step; evaluation stays fp32)
    model: ModelConfig = field(default_factory=ModelConfig)  # backbone, task, d_model, ...

    def __post_init__(self):
        # An invalid backbone x task pair or option fails here, before any data is read.
        self.model = structure(ModelConfig, self.model, "model")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay {self.lr_decay!r}: choose from {LR_DECAYS}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps {self.warmup_steps} must be >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose from {PRECISIONS}")
        resolve_device(self.device)  # a CUDA device on a machine without one fails here
        check_side_features(self.data_dir, self.model)  # unknown side columns, named


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
    valid_history: list[float] = field(default_factory=list)  # valid NDCG@10 after each epoch


def evaluate(model: SequenceRecommender, lists, batch_size: int = 256,
             exclude_seen: bool = False, features: dict | None = None,
             ctx: distributed.Context = distributed.SINGLE) -> dict[str, float]:
    """Metrics for the last item of each list given everything before it, via recommend() over
    the full catalogue (the model never receives the target, nor its side features). Under
    torchrun each rank scores its shard of the lists (with their features)."""
    if ctx.active:  # shard row indices: the lists and their features are cut alike
        return distributed.sharded_mean(ctx, lambda index: evaluate(
            model, [lists[i] for i in index], batch_size, exclude_seen,
            features and {c: [v[i] for i in index] for c, v in features.items()}),
            list(range(len(lists))))
    histories, targets = split_history_target(lists)
    side = slice_rows(features, lambda x, n: x[:n], [len(h) for h in histories])
    tops = [
        recommend(model, histories[i : i + batch_size], k=max(CUTOFFS), exclude_seen=exclude_seen,
                  features=side and {c: v[i : i + batch_size] for c, v in side.items()})[0]
        for i in range(0, len(histories), batch_size)
    ]
    return ranking_metrics(np.concatenate(tops), targets)


def evaluate_popularity(train_lists, eval_lists, num_items: int,
                        exclude_seen: bool = False) -> dict[str, float]:
    histories, targets = split_history_target(eval_lists)
    if exclude_seen:
        counts = popularity_counts(train_lists, num_items, FIRST_ITEM_ID)
        return ranking_metrics(popularity_top_unseen(counts, histories, max(CUTOFFS)), targets)
    top = popularity_top(train_lists, num_items, FIRST_ITEM_ID, max(CUTOFFS))
    return ranking_metrics(np.broadcast_to(top, (len(targets), len(top))), targets)


STATE_FILE = "trainer_state.pt"


def _save_state(path: Path, **state) -> None:
    """Tensors and plain Python values only, so that resuming loads it with weights_only=True."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written state


def _load_state(path: Path) -> dict:
    """The saved training state, read without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds more than tensors and plain values, which `seqrec train` "
                         f"never writes: refusing to unpickle it ({err})") from None


def _lists(frame: pd.DataFrame) -> list[np.ndarray]:
    return list(frame[ITEM_LIST])


def training_units(model: SequenceRecommender, lists, max_len: int):
    """The padded training matrix and its (row, end) examples for the model's task."""
    matrix = pad_right(lists, max_len)
    rows, ends = model.task.training_units((matrix != PAD_ID).sum(1).numpy())
    return matrix, torch.from_numpy(rows), torch.from_numpy(ends)


def run_epoch(model, optimizer, matrix, unit_rows, unit_ends, generator, batch_size: int,
              steps_per_epoch: int | None = None, features: dict | None = None,
              step_loss: distributed.StepLoss | None = None, precision: str = "fp32",
              scheduler=None) -> float:
    """One pass over the (shuffled, optionally capped) training examples; the mean loss.
    `batch_size` is the global batch: under torchrun each rank trains on its slice of it.
    features: side-feature matrices shaped like `matrix`, gathered with the same examples."""
    model.train()
    step_loss = step_loss or distributed.StepLoss(model, distributed.SINGLE)
    device = next(model.parameters()).device
    # bf16 autocast needs no loss scaling (fp16 would); parameters and optimizer stay fp32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    order = torch.randperm(len(unit_rows), generator=generator)
    if steps_per_epoch:
        order = order[: steps_per_epoch * batch_size]
    total, steps = 0.0, 0
    for i in range(0, len(order), batch_size):
        pick = order[i : i + batch_size]
        rows, ends = unit_rows[pick], unit_ends[pick]
        with autocast:  # the batch is gathered on the CPU, then moved: the matrix stays in host memory
            loss, value = step_loss(
                lambda part: (gather_units(matrix, rows[part], ends[part]).to(device),
                              map_features(features, lambda f: gather_units(f, rows[part], ends[part]).to(device))),
                len(pick))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, steps = total + value, steps + 1
    return distributed.all_sum(step_loss.ctx, [total])[0] / max(steps, 1)


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
    workflow = load_workflow(Path(cfg.data_dir) / "workflow")
    num_items = len(item_vocabulary(workflow))
    model_options = with_cardinalities(cfg.model, workflow.output_schema)  # side features, if any
    frames = {s: read_split(cfg.data_dir, s, side_list_columns(model_options)) for s in ("train", "valid", "test")}
    train_lists, valid_lists, test_lists = (_lists(frames[s]) for s in ("train", "valid", "test"))
    max_len = int(max(len(x) for x in test_lists))
    model_cfg = replace(model_options, num_items=num_items, max_len=max_len)
    device = resolve_device(cfg.device, ctx)
    model = SequenceRecommender(model_cfg)
    side = {s: read_feature_lists(frames[s], model_cfg.side) for s in frames}
    if model.side is not None:
        model.side.set_statistics({c: np.concatenate(v) for c, v in side["train"].items()})
    if model_cfg.loss == "sampled":
        model.set_item_counts(torch.bincount(torch.from_numpy(np.concatenate(train_lists)),
                                             minlength=num_items))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_loss = distributed.StepLoss(model, ctx)  # DDP under torchrun; model.loss otherwise

    # Training examples are (row, end) pairs into one padded matrix (see Task.training_units).
    train_matrix, unit_rows, unit_ends = training_units(model, train_lists, max_len)
    train_side = pad_features(model_cfg.side, side["train"], max_len)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = -(-len(unit_rows) // cfg.batch_size)
    scheduler = lr_scheduler(optimizer, cfg, min(steps, cfg.steps_per_epoch or steps))
    best, best_epoch, losses, bad_epochs, history = -1.0, 0, [], 0, []
    out = Path(cfg.output_dir)
    if ctx.main:  # only rank 0 writes
        out.mkdir(parents=True, exist_ok=True)
    first_epoch = 1
    state_file = out / STATE_FILE
    if cfg.resume and state_file.is_file():
        state = _load_state(state_file)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # states written before schedules existed had none
            scheduler.load_state_dict(state["scheduler"])
        history = state.get("valid_history", [])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        best, best_epoch, losses, bad_epochs = state["best"], state["best_epoch"], state["losses"], state["bad_epochs"]
        first_epoch = state["epoch"] + 1
    distributed.seed_rank(ctx, cfg.seed + 7919 * (first_epoch - 1))  # rank 0 keeps its stream
    bar = tqdm(range(first_epoch, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress or not ctx.main,
               initial=first_epoch - 1, total=cfg.epochs)
    for epoch in bar:
        if bad_epochs >= cfg.patience:  # a resumed run that had already stopped early
            break
        losses.append(run_epoch(model, optimizer, train_matrix, unit_rows, unit_ends, generator,
                                cfg.batch_size, cfg.steps_per_epoch, train_side, step_loss, cfg.precision,
                                scheduler))
        # the same metrics on every rank (rank 0's), so all ranks stop early together
        valid = evaluate(model, valid_lists, cfg.eval_batch_size, cfg.eval_exclude_seen, side["valid"], ctx)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", ndcg10=f"{valid['ndcg@10']:.4f}")
        history.append(valid["ndcg@10"])
        if valid["ndcg@10"] > best:
            best, best_epoch, bad_epochs = valid["ndcg@10"], epoch, 0
            if ctx.main:
                save_checkpoint(model, out)
        else:
            bad_epochs += 1
        # The last epoch's full training state (not the best weights), so a run can resume.
        if ctx.main:
            _save_state(state_file, epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        valid_history=[float(x) for x in history],
                        generator=generator.get_state(), torch_rng=torch.get_rng_state(),
                        best=float(best), best_epoch=int(best_epoch),
                        losses=[float(x) for x in losses], bad_epochs=int(bad_epochs))
        if bad_epochs >= cfg.patience:
            break
    from .checkpoint import load_checkpoint  # the best epoch, not the last

    if ctx.main:
        model = load_checkpoint(out).to(device)
    distributed.broadcast_weights(ctx, model)  # the best epoch's weights to every rank
    result = TrainResult(
        output_dir=str(out),
        epochs_run=len(losses),
        best_epoch=best_epoch,
        losses=losses,
        valid=evaluate(model, valid_lists, cfg.eval_batch_size, cfg.eval_exclude_seen, side["valid"], ctx),
        test=evaluate(model, test_lists, cfg.eval_batch_size, cfg.eval_exclude_seen, side["test"], ctx),
        popularity_valid=evaluate_popularity(train_lists, valid_lists, num_items, cfg.eval_exclude_seen),
        # the test-time popularity may count the valid targets too: they are history by then
        popularity_test=evaluate_popularity(valid_lists, test_lists, num_items, cfg.eval_exclude_seen),
        seconds=time.perf_counter() - started,
        valid_history=history,
    )
    if ctx.main:
        (out / "metrics.json").write_text(json.dumps({"train_config": asdict(cfg), **asdict(result),
                                                      "world_size": ctx.world_size}, indent=2))
    return result


__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "LIST_SUFFIX"]
