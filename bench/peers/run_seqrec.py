"""seqrec on the shared splits: `seqrec train` on the seqrec data folder the splits were written
from (the same train / valid / test sequences), with its own early stopping on validation; the
best epoch is then scored through `score_histories` by the shared protocol. Daily windows:
`seqrec incremental`'s training (train_incremental on the ETL's day folders), each day's model
scored on the next day by the shared protocol from its after-window hook."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import protocol
from runner import arguments, evaluate_window, window_result, write


def scorer(model):
    from seqrec.training.recommend import score_histories

    def score(histories: protocol.Rows) -> np.ndarray:
        return score_histories(model, histories.lists()).numpy()
    return score


def model_options(args) -> dict:
    backbone, task = args.combo.split("-", 1)
    return {"backbone": backbone, "task": task, "d_model": args.d_model, "n_layers": args.layers,
            "n_heads": args.heads, "dropout": args.dropout}


def daily(args) -> None:
    from seqrec.training.incremental import IncrementalConfig, train_incremental

    windows = protocol.load_windows(args.splits)
    data_dir = Path(args.splits).with_suffix(".data_dir").read_text().strip()
    per_window, marks = [], [time.perf_counter()]

    def after_window(index, trained_on, evaluated_on, model, rows, metrics):
        if evaluated_on is None:
            return {}
        if trained_on != windows.day_names[index]:
            raise SystemExit(f"seqrec's window {trained_on} is not the splits' day {windows.day_names[index]}")
        marks.append(time.perf_counter())  # training time of this day ends here
        per_window.append(evaluate_window(windows, index, scorer(model), None))
        marks.append(time.perf_counter())
        return {}

    with tempfile.TemporaryDirectory() as out:
        cfg = IncrementalConfig(data_dir=data_dir, output_dir=out, epochs_per_window=args.epochs, lr=args.lr,
                                batch_size=args.batch_size, seed=args.seed, eval_split="valid", tensorboard=False,
                                model=model_options(args))
        report = train_incremental(cfg, progress=False, after_window=after_window)
    for w, record in zip(per_window, report["windows"]):
        w["loss"] = record["loss"]
    # per day: training = from the previous mark to this day's evaluation (seqrec's own
    # evaluation of the day included, a small share)
    train_spans = [marks[2 * i + 1] - marks[2 * i] for i in range(len(per_window))]
    epoch_seconds = [s / args.epochs for s in train_spans for _ in range(args.epochs)]
    write(args, "seqrec", window_result(per_window, epoch_seconds, sum(train_spans)))


def main() -> None:
    from seqrec.training.checkpoint import load_checkpoint
    from seqrec.training.trainer import TrainConfig, train

    args = arguments()
    torch.set_num_threads(args.threads)
    if protocol.is_windows(Path(args.splits)):
        return daily(args)
    splits = protocol.load_splits(args.splits)
    data_dir = Path(args.splits).with_suffix(".data_dir").read_text().strip()
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data_dir=data_dir, output_dir=out, epochs=args.epochs, patience=args.patience,
                          lr=args.lr, batch_size=args.batch_size, seed=args.seed, tensorboard=False,
                          model=model_options(args))
        started = time.perf_counter()
        result = train(cfg, progress=False)
        train_seconds = time.perf_counter() - started
        model = load_checkpoint(Path(out))
    if model.cfg.max_len != args.max_len:
        raise SystemExit(f"the data folder's window is {model.cfg.max_len}, the benchmark's {args.max_len}")

    score = scorer(model)
    write(args, "seqrec", {
        "valid": protocol.evaluate(score, splits.valid, splits),
        "test": protocol.evaluate(score, splits.test, splits),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "history": [{"epoch": e + 1, "loss": l, "valid_ndcg@10": v}
                    for e, (l, v) in enumerate(zip(result.losses, result.valid_history))],
        "seconds_per_epoch": train_seconds / max(result.epochs_run, 1),
        "train_seconds": train_seconds,
        "train_targets": getattr(result, "train_targets", None),
    })


if __name__ == "__main__":
    main()
