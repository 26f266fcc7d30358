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
import pandas as pd
import torch
from tqdm.auto import tqdm

from seqrec.config import structure
from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow

from .checkpoint import save_checkpoint
from .features import pad_features, read_feature_lists, side_list_columns, with_cardinalities
from .metrics import CUTOFFS
from .model import ModelConfig, SequenceRecommender
from .trainer import evaluate, evaluate_popularity, run_epoch, training_units


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
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        self.model = structure(ModelConfig, self.model, "model")
        if self.eval_split not in ("valid", "test"):
            raise ValueError(f"eval_split must be 'valid' or 'test', got {self.eval_split!r}")


def window_dirs(data_dir: str | Path) -> list[Path]:
    windows = sorted(p.parent for p in Path(data_dir).glob("*/train.parquet"))
    if len(windows) < 2:
        raise ValueError(f"{data_dir}: incremental training needs >= 2 time windows, found "
                         f"{len(windows)} (preprocess with split: time-window)")
    return windows


def _rows(window: Path, split: str, side_columns: list[str]) -> pd.DataFrame:
    """One split of one window: item lists (and side-feature lists), sequences of >= 2 items."""
    frame = pd.read_parquet(window / f"{split}.parquet", columns=[ITEM_LIST, *side_columns])
    return frame[frame[ITEM_LIST].map(len) >= 2].reset_index(drop=True)


class _Window:
    """A window's sequences as item lists plus their side features (when the model has any)."""

    def __init__(self, frames: list[pd.DataFrame], model: SequenceRecommender):
        frame = pd.concat(frames, ignore_index=True)
        self.lists = list(frame[ITEM_LIST])
        self.features = read_feature_lists(frame, model.cfg.side) or None

    def units(self, model: SequenceRecommender, max_len: int):
        matrix, rows, ends = training_units(model, self.lists, max_len)
        return matrix, rows, ends, pad_features(model.cfg.side, self.features, max_len)


def train_incremental(cfg: IncrementalConfig, progress: bool = True) -> dict:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    windows = window_dirs(cfg.data_dir)
    workflow = load_workflow(Path(cfg.data_dir) / "workflow")
    num_items = len(item_vocabulary(workflow))
    model_options = with_cardinalities(cfg.model, workflow.output_schema)  # side features, if any
    side_columns = side_list_columns(model_options)
    data = {w.name: {s: _rows(w, s, side_columns) for s in ("train", "valid", "test")} for w in windows}
    max_len = max(int(f[ITEM_LIST].map(len).max()) for parts in data.values() for f in parts.values() if len(f))
    model = SequenceRecommender(replace(model_options, num_items=num_items, max_len=max_len))
    whole = {name: _Window(list(parts.values()), model) for name, parts in data.items()}
    if model.side is not None:  # standardised with the FIRST window only: later ones are future
        model.side.set_statistics({c: np.concatenate(v) for c, v in whole[windows[0].name].features.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: list[np.ndarray] = []  # everything trained on so far, for the popularity baseline
    per_window = []
    bar = tqdm(windows[:-1], desc="windows", unit="window", disable=not progress)
    for current, following in zip(bar, windows[1:]):
        # The whole of window t is in the past once t+1 is evaluated: train on all of it.
        matrix, rows, ends, side = whole[current.name].units(model, max_len)
        losses = [run_epoch(model, optimizer, matrix, rows, ends, generator, cfg.batch_size, features=side)
                  for _ in range(cfg.epochs_per_window)]
        seen.extend(whole[current.name].lists)
        target = _Window([data[following.name][cfg.eval_split]], model)
        eval_lists = target.lists
        metrics = evaluate(model, eval_lists, exclude_seen=cfg.eval_exclude_seen, features=target.features)
        popularity = evaluate_popularity(seen, eval_lists, num_items, cfg.eval_exclude_seen)
        per_window.append({"trained_on": current.name, "evaluated_on": following.name,
                           "sessions": len(eval_lists), "loss": losses[-1],
                           "model": metrics, "popularity": popularity})
        bar.set_postfix(window=following.name, ndcg10=f"{metrics['ndcg@10']:.4f}")
    # The final model has also seen the last window: it is what would be served next.
    matrix, rows, ends, side = whole[windows[-1].name].units(model, max_len)
    for _ in range(cfg.epochs_per_window):
        run_epoch(model, optimizer, matrix, rows, ends, generator, cfg.batch_size, features=side)
    save_checkpoint(model, out)
    names = per_window[0]["model"].keys()
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
