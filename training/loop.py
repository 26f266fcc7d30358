"""What `train` and `incremental` share: reading the workflow's facts, building the model and its
optimizer on the configured device, the epoch over (row, end) training examples, and the
training state written after every epoch so a run can resume where it stopped."""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Literal, get_args
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .data import Rows, as_ragged, gather_windows
from .features import flat_features, map_features, with_cardinalities
from .model import ModelConfig, SequenceRecommender

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
STATE_FILE = "trainer_state.pt"

# The batch when none is configured. A masked task (MLM, PLM, RTD) sits at the popularity level
# until it has taken enough optimizer steps, whatever the epochs (bench/masked.py, MovieLens BERT
# MLM: 31 steps per epoch at batch 64 stall where batch 16 learns), so its batch shrinks until an
# epoch has MASKED_MIN_STEPS steps, never below MASKED_MIN_BATCH (small batches cost time per
# example on CPU); large data keeps DEFAULT_BATCH_SIZE.
DEFAULT_BATCH_SIZE = 64
MASKED_MIN_STEPS = 150
MASKED_MIN_BATCH = 16


def default_batch_size(model: SequenceRecommender, n_examples: int) -> int:
    """The global batch for `n_examples` training examples per epoch when none is configured."""
    if not model.task.uses_mask_token:
        return DEFAULT_BATCH_SIZE
    return int(np.clip(n_examples // MASKED_MIN_STEPS, MASKED_MIN_BATCH, DEFAULT_BATCH_SIZE))


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


def check_run_options(precision: str, device: str) -> None:
    """Config-time checks of the options both loops take."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {PRECISIONS}")
    resolve_device(device)  # a CUDA device on a machine without one fails here


def workflow_facts(data_dir: str | Path, model_options: ModelConfig) -> tuple[int, ModelConfig]:
    """(size of the encoded id space, the model config with the side features' cardinalities) from
    the saved workflow. The only place training reads it, so NVTabular is imported here alone."""
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow

    workflow = load_workflow(Path(data_dir) / "workflow")
    return len(item_vocabulary(workflow)), with_cardinalities(model_options, workflow.output_schema)


SUMMARY_FILE = "etl_summary.json"  # written by the ETL beside its splits


def data_window(data_dir: str | Path, longest: int) -> int:
    """The model's max_len: the ETL's `max_len` (its summary), whatever the stored histories'
    length (they may be longer: etl.history_cap); `longest` (the longest stored sequence) for
    data written before the summary said so."""
    import json

    summary = Path(data_dir) / SUMMARY_FILE
    if summary.is_file():
        window = json.loads(summary.read_text()).get("config", {}).get("max_len")
        if window:
            return int(window)
    return int(longest)


@dataclass
class Examples:
    """Training examples: windows values[starts[u]:starts[u] + lengths[u]] of the flat item
    values (see Task.training_units), and the side-feature values, flat like the items (None
    for an item-only model)."""

    values: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    side: dict | None = None
    targets: int = 0  # item positions an epoch trains as targets (Task.window_targets)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, pick: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        """The examples `pick` as right-padded [B, W] items (+ side features alike)."""
        starts, lengths = self.starts[pick], self.lengths[pick]
        return (gather_windows(self.values, starts, lengths),
                map_features(self.side, lambda f: gather_windows(f, starts, lengths)))


def training_units(model: SequenceRecommender, rows: Rows, max_len: int, features: dict | None = None) -> Examples:
    """Sliding training windows over whole (long) rows for the model's task."""
    rows = as_ragged(rows)
    unit_rows, starts, ends = model.task.training_units(rows.lengths, max_len)
    flat_starts = rows.offsets[:-1][unit_rows] + starts
    return Examples(torch.from_numpy(rows.values.astype(np.int64, copy=False)),
                    torch.from_numpy(flat_starts), torch.from_numpy(ends - starts),
                    flat_features(model.cfg.side, features),
                    targets=model.task.window_targets(ends - starts))


def run_epoch(model, optimizer, examples: Examples, generator, batch_size: int,
              steps_per_epoch: int | None = None, step_loss: distributed.StepLoss | None = None,
              precision: str = "fp32", scheduler=None) -> float:
    """One pass over the (shuffled, optionally capped) training examples; the mean loss.
    `batch_size` is the global batch: under torchrun each rank trains on its slice of it."""
    model.train()
    step_loss = step_loss or distributed.StepLoss(model, distributed.SINGLE)
    device = next(model.parameters()).device
    # bf16 autocast needs no loss scaling (fp16 would); parameters and optimizer stay fp32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    order = torch.randperm(len(examples), generator=generator)
    if steps_per_epoch:
        order = order[: steps_per_epoch * batch_size]
    total, steps = 0.0, 0
    for i in range(0, len(order), batch_size):
        pick = order[i : i + batch_size]

        def part_batch(part, pick=pick):  # gathered on the CPU, then moved: values stay in host memory
            items, side = examples.batch(pick[part])
            return items.to(device), map_features(side, lambda f: f.to(device))

        with autocast:
            loss, value = step_loss(part_batch, len(pick))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, steps = total + value, steps + 1
    return distributed.all_sum(step_loss.ctx, [total])[0] / max(steps, 1)


def _plain(value):
    """numpy scalars (metrics) -> Python numbers, through dicts and lists: what weights_only loads."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


class Trainer:
    """The model, its optimizer and the epoch's random stream on one device, for either loop.

    Built in one order (model, statistics, device, optimizer, sampler), so a seed gives the same
    run whichever loop builds it."""

    def __init__(self, model_cfg: ModelConfig, statistics_rows: Rows, statistics_features: dict | None, *,
                 seed: int, lr: float, weight_decay: float, device: str, batch_size: int | None,
                 steps_per_epoch: int | None = None, precision: str = "fp32",
                 ctx: distributed.Context = distributed.SINGLE):
        """statistics_*: the rows whose side-feature values standardise the continuous columns
        and whose item counts drive sampled negatives (the training split, or the first window).
        batch_size None: `default_batch_size` of each epoch's examples."""
        self.ctx = ctx
        self.device = resolve_device(device, ctx)
        self.model = model = SequenceRecommender(model_cfg)
        if model.side is not None:
            model.side.set_statistics({c: as_ragged(v).values for c, v in statistics_features.items()})
        if model_cfg.loss == "sampled":
            values = torch.from_numpy(as_ragged(statistics_rows).values.astype(np.int64))
            model.set_item_counts(torch.bincount(values, minlength=model_cfg.num_items))
        model.to(self.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.step_loss = distributed.StepLoss(model, ctx)  # DDP under torchrun; model.loss otherwise
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size, self.steps_per_epoch, self.precision = batch_size, steps_per_epoch, precision
        self.scheduler = None

    def schedule(self, examples: "Examples", epochs: int, warmup_steps: int, decay: str) -> None:
        """A per-batch learning-rate schedule: linear warm-up over `warmup_steps`, then constant
        or a linear / cosine decay to 0 at the end of `epochs` epochs over `examples`."""
        total = epochs * self.epoch_steps(examples)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup_steps, total, decay))

    def epoch_steps(self, examples: "Examples") -> int:
        """Optimizer steps in one epoch over `examples` (capped by steps_per_epoch)."""
        steps = -(-len(examples) // self.batch_for(examples))
        return min(steps, self.steps_per_epoch or steps)

    def batch_for(self, examples: "Examples") -> int:
        """The global batch an epoch over `examples` trains with."""
        return self.batch_size or default_batch_size(self.model, len(examples))

    def units(self, rows: Rows, features: dict | None = None) -> Examples:
        return training_units(self.model, rows, self.model.cfg.max_len, features)

    def epoch(self, examples: Examples) -> float:
        """One epoch over the examples; the mean training loss."""
        return run_epoch(self.model, self.optimizer, examples, self.generator, self.batch_for(examples),
                         self.steps_per_epoch, self.step_loss, self.precision, self.scheduler)

    def save_state(self, path: Path, **progress) -> None:
        """The full training state (not the best weights) plus the loop's own progress (plain
        values: resuming loads it with weights_only=True); written aside and renamed, never
        half-written. Only the main process writes."""
        if not self.ctx.main:
            return
        state = dict(_plain(progress), model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     generator=self.generator.get_state(), torch_rng=torch.get_rng_state())
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_state(self, path: Path) -> dict | None:
        """Restore a saved state; the loop's progress, or None when there is none to resume."""
        if not path.is_file():
            return None
        try:  # tensors and plain values only: a state file cannot run code when resumed
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{path} holds more than tensors and plain values, which seqrec "
                             f"never writes: refusing to unpickle it ({err})") from None
        self.model.load_state_dict(state.pop("model"))
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.generator.set_state(state.pop("generator"))
        torch.set_rng_state(state.pop("torch_rng"))
        scheduler = state.pop("scheduler", None)  # states written before schedules existed had none
        if self.scheduler is not None and scheduler is not None:
            self.scheduler.load_state_dict(scheduler)
        return state
