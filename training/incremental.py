"""Incremental training over time windows (the Transformers4Rec paper protocol): train on window
t, evaluate on window t+1 before it is ever trained on, continue training on t+1, and so on.
Reports per-window and average metrics, the sequences of each window too short to use, a JSON
file and a PNG plot."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

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
SHORT = "shorter than 2 items (no history before the target)"  # why a sequence is not used


@dataclass
class ServeConfig:
    """`seqrec incremental --serve`: where each window's model is published and served."""
    repository: str | None = None  # model repository (default: <output_dir>/model_repository)
    url: str | None = None  # gRPC address of a running server (explicit model control) serving
    # `repository`; None: the run starts its own tritonserver on 127.0.0.1 and stops it at the end
    key_file: str | None = None  # its model-control key (default: $SEQREC_REPOSITORY_KEY, else
    # the file `seqrec serve` wrote)
    request_rows: int = 64  # sessions per evaluation request (<= the export's max_batch_size)
    timeout_s: float = 300.0  # per reload and per request, retries included
    # `export` options of every published version (compile_scorer, instances, torch_threads,
    # top_k, max_batch_size, ...), checked by the export's own loader before training starts;
    # data_dir, model_dir, repository and exclude_seen come from the run
    export: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.request_rows < 1:
            raise ValueError(f"request_rows must be >= 1, got {self.request_rows}")


# after_window(index, trained_on, evaluated_on or None, model, evaluation rows or None, offline
# report or None) -> fields added to the window's record (served metrics under "served")
WindowHook = Callable[[int, str, "str | None", object, "dict | None", "dict | None"], dict]


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
    serve: ServeConfig = field(default_factory=ServeConfig)  # used with --serve only

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


def _read(window: Path, split: str, columns: list[str]) -> tuple[dict[str, Ragged], int]:
    """One split of one window as list columns, sequences of >= 2 items, and how many shorter
    ones it held (time-window data keeps 1-item sessions with etl.min_len: 1)."""
    data = read_columns(window / f"{split}.parquet", columns)
    long_enough = data[ITEM_LIST].lengths >= 2
    return keep_rows(data, np.flatnonzero(long_enough)), int((~long_enough).sum())


def read_windows(windows: list[Path], columns: list[str]
                 ) -> tuple[dict[str, dict[str, dict[str, Ragged]]], dict[str, dict[str, int]]]:
    """{window: {split: columns}} of the sequences used, and {window: {"<split>: <reason>": n}}
    of those left out, every split counted (0 included)."""
    data, dropped = {}, {}
    for w in windows:
        data[w.name], dropped[w.name] = {}, {}
        for s in SPLITS:
            data[w.name][s], dropped[w.name][f"{s}: {SHORT}"] = _read(w, s, columns)
    return data, dropped


def _concat(parts: list[dict[str, Ragged]]) -> dict[str, Ragged]:
    return {c: Ragged.concat([p[c] for p in parts]) for c in parts[0]}


def train_incremental(cfg: IncrementalConfig, progress: bool = True,
                      after_window: WindowHook | None = None) -> dict:
    """Window by window: `epochs_per_window` epochs on all of window t, then evaluation on window
    t+1 (never trained on yet); the last window is trained on too (the model served next).
    `after_window` runs once window t is trained and evaluated offline, before t+1 is trained on
    (`seqrec incremental --serve` publishes the model there and evaluates t+1 through the server)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    windows = window_dirs(cfg.data_dir)
    num_items, model_options = workflow_facts(cfg.data_dir, cfg.model)  # side cardinalities, if any
    columns = [ITEM_LIST, *side_list_columns(model_options)]
    data, dropped = read_windows(windows, columns)
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
        if index < len(per_window):
            continue  # evaluated before the run was resumed
        if index + 1 == len(windows):  # the last window is not evaluated
            if after_window is not None:
                after_window(index, current.name, None, model, None, None)
            continue
        following = windows[index + 1]
        target = data[following.name][cfg.eval_split]
        metrics = evaluate(model, target[ITEM_LIST], exclude_seen=cfg.eval_exclude_seen,
                           features=feature_columns(target, model_cfg.side) or None)
        seen = Ragged.concat([whole[w.name][ITEM_LIST] for w in windows[: index + 1]])
        popularity = evaluate_popularity(seen, target[ITEM_LIST], num_items, cfg.eval_exclude_seen)
        record = {"trained_on": current.name, "evaluated_on": following.name,
                  "sessions": len(target[ITEM_LIST]), "loss": losses[-1],
                  "model": metrics, "popularity": popularity}
        if after_window is not None:
            record.update(after_window(index, current.name, following.name, model, target, metrics))
        per_window.append(record)
        log.metrics(done, metrics, "next_window")
        if "served" in record:
            log.metrics(done, record["served"], "served_next_window")
        losses = []
        trainer.save_state(state_file, epochs_done=done, windows=per_window, window_losses=losses)
        bar.set_postfix(window=following.name, ndcg10=f"{metrics['ndcg@10']:.4f}")
    log.close()
    save_checkpoint(model, out)
    names = flat_metrics(per_window[0]["model"]).keys()  # the breakdowns stay per window
    report = {
        "config": asdict(cfg),
        "windows": per_window,
        "dropped": dropped,
        "average": {who: {m: float(np.mean([w[who][m] for w in per_window])) for m in names}
                    for who in ("model", "popularity")},
        **({"served_average": {m: float(np.mean([w["served"][m] for w in per_window]))
                               for m in per_window[0]["served"]}}
           if all("served" in w for w in per_window) else {}),
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
