"""Incremental training over time windows (the Transformers4Rec paper protocol): train on window
t, evaluate on window t+1 before it is ever trained on, continue training on t+1, and so on.
Reports per-window and average metrics, a JSON file and a PNG plot."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from seqrec.config import structure_nested
from seqrec.preprocessing.arrays import ITEM_LIST

from .checkpoint import save_checkpoint
from .data import Ragged, keep_rows, read_columns
from .evaluation import CUTOFFS, evaluate, evaluate_popularity, flat_metrics
from .features import feature_columns, side_list_columns
from .loop import STATE_FILE, Precision, Trainer, check_run_options, data_window, workflow_facts
from .model import ModelConfig
from .run_log import RunLog

SPLITS = ("train", "valid", "test")


@dataclass
class IncrementalConfig:
    data_dir: str  # written by `seqrec preprocess` with split: time-window
    output_dir: str
    epochs_per_window: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 42
    eval_split: Literal["valid", "test"] = "test"  # which sessions of window t+1 are scored
    eval_exclude_seen: bool = False
    steps_per_epoch: int | None = None  # cap on the optimizer steps of one epoch
    resume: bool = False  # continue from output_dir/trainer_state.pt (written after every epoch)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when present)
    precision: Precision = "fp32"  # fp32 | bf16 (autocast of the training step; evaluation stays fp32)
    tensorboard: bool = True  # loss and learning rate per epoch, window t+1's metrics, in output_dir/tensorboard
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        structure_nested(self)
        check_run_options(self.precision, self.device)
        if self.eval_split not in ("valid", "test"):
            raise ValueError(f"eval_split must be 'valid' or 'test', got {self.eval_split!r}")


def window_dirs(data_dir: str | Path) -> list[Path]:
    windows = sorted(p.parent for p in Path(data_dir).glob("*/train.parquet"))
    if len(windows) < 2:
        raise ValueError(f"{data_dir}: incremental training needs >= 2 time windows, found "
                         f"{len(windows)} (preprocess with split: time-window)")
    return windows


def _read(window: Path, split: str, columns: list[str]) -> dict[str, Ragged]:
    """One split of one window as list columns, sequences of >= 2 items."""
    data = read_columns(window / f"{split}.parquet", columns)
    return keep_rows(data, np.flatnonzero(data[ITEM_LIST].lengths >= 2))


def _concat(parts: list[dict[str, Ragged]]) -> dict[str, Ragged]:
    return {c: Ragged.concat([p[c] for p in parts]) for c in parts[0]}


def train_incremental(cfg: IncrementalConfig, progress: bool = True) -> dict:
    """Window by window: `epochs_per_window` epochs on all of window t, then evaluation on window
    t+1 (never trained on yet); the last window is trained on too (the model served next)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    windows = window_dirs(cfg.data_dir)
    num_items, model_options = workflow_facts(cfg.data_dir, cfg.model)  # side cardinalities, if any
    columns = [ITEM_LIST, *side_list_columns(model_options)]
    data = {w.name: {s: _read(w, s, columns) for s in SPLITS} for w in windows}
    max_len = data_window(cfg.data_dir, max(int(d[ITEM_LIST].lengths.max(initial=0))
                                             for parts in data.values() for d in parts.values()))
    model_cfg = replace(model_options, num_items=num_items, max_len=max_len)
    # The whole of window t is in the past once t+1 is evaluated: train on all of it.
    whole = {name: _concat(list(parts.values())) for name, parts in data.items()}
    first = whole[windows[0].name]  # standardised with the FIRST window only: later ones are future
    trainer = Trainer(model_cfg, first[ITEM_LIST], feature_columns(first, model_cfg.side), seed=cfg.seed,
                      lr=cfg.lr, weight_decay=cfg.weight_decay, device=cfg.device, batch_size=cfg.batch_size,
                      steps_per_epoch=cfg.steps_per_epoch, precision=cfg.precision)
    model = trainer.model
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / STATE_FILE
    # progress: epochs done (over all windows), the finished windows' reports, this window's losses
    done, per_window, losses = 0, [], []
    state = trainer.load_state(state_file) if cfg.resume else None
    if state is not None:
        done, per_window, losses = state["epochs_done"], state["windows"], state["window_losses"]
    log = RunLog(out, enabled=cfg.tensorboard)
    bar = tqdm(list(enumerate(windows)), desc="windows", unit="window", disable=not progress)
    for index, current in bar:
        part = whole[current.name]
        examples = None
        for epoch in range(cfg.epochs_per_window):
            if index * cfg.epochs_per_window + epoch < done:
                continue  # trained before the run was resumed
            examples = examples or trainer.units(part[ITEM_LIST], feature_columns(part, model_cfg.side) or None)
            losses.append(trainer.epoch(examples))
            done += 1
            log.epoch(done, losses[-1], trainer.optimizer.param_groups[0]["lr"])
            trainer.save_state(state_file, epochs_done=done, windows=per_window, window_losses=losses)
        if index + 1 == len(windows) or index < len(per_window):
            continue  # the last window is not evaluated; an earlier one was before resuming
        following = windows[index + 1]
        target = data[following.name][cfg.eval_split]
        metrics = evaluate(model, target[ITEM_LIST], exclude_seen=cfg.eval_exclude_seen,
                           features=feature_columns(target, model_cfg.side) or None)
        seen = Ragged.concat([whole[w.name][ITEM_LIST] for w in windows[: index + 1]])
        popularity = evaluate_popularity(seen, target[ITEM_LIST], num_items, cfg.eval_exclude_seen)
        per_window.append({"trained_on": current.name, "evaluated_on": following.name,
                           "sessions": len(target[ITEM_LIST]), "loss": losses[-1],
                           "model": metrics, "popularity": popularity})
        log.metrics(done, metrics, "next_window")
        losses = []
        trainer.save_state(state_file, epochs_done=done, windows=per_window, window_losses=losses)
        bar.set_postfix(window=following.name, ndcg10=f"{metrics['ndcg@10']:.4f}")
    log.close()
    save_checkpoint(model, out)
    names = flat_metrics(per_window[0]["model"]).keys()  # the breakdowns stay per window
    report = {
        "config": asdict(cfg),
        "windows": per_window,
        "average": {who: {m: float(np.mean([w[who][m] for w in per_window])) for m in names}
                    for who in ("model", "popularity")},
        "seconds": time.perf_counter() - started,
    }
    (out / "incremental.json").write_text(json.dumps(report, indent=2))
    plot_windows(per_window, out / "incremental.png")
    return report


def plot_windows(per_window: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    x = np.arange(len(per_window))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, (f"ndcg@{CUTOFFS[0]}", f"recall@{CUTOFFS[0]}")):
        for who, style in (("model", "o-"), ("popularity", "s--")):
            ax.plot(x, [w[who][metric] for w in per_window], style, label=who)
        ax.set_xticks(x, [w["evaluated_on"] for w in per_window], rotation=30, ha="right")
        ax.set_title(f"{metric} on window t+1")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
