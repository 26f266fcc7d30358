"""What every library's runner shares (numpy + torch only, so it runs in each peer's own
virtualenv): the command line, the training budget (epochs, early stopping on validation
NDCG@10 with seen items kept, a wall-clock cap) and the JSON result."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import protocol  # noqa: E402  (beside this file in every virtualenv)

SELECT_ON = ("kept", f"ndcg@{protocol.CUTOFF}")


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--splits", required=True)
    p.add_argument("--combo", required=True, help="backbone-task, e.g. gpt2-clm, bert-mlm")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--dropout", type=float, required=True)
    p.add_argument("--epochs", type=int, default=30, help="daily windows: epochs per day")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=300.0, help="training wall-clock cap")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    return p.parse_args()


def fit(args, splits, train_epoch, score, snapshot, restore) -> dict:
    """Epochs of `train_epoch()` while validation improves (patience) and time remains; the best
    epoch's state restored, then valid and test scored by the shared protocol."""
    started = time.perf_counter()
    best, best_epoch, bad, history, state = -1.0, 0, 0, [], None
    epoch_seconds = []
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        loss = train_epoch()
        epoch_seconds.append(time.perf_counter() - t)
        valid = protocol.evaluate(score, splits.valid, splits)
        value = valid[SELECT_ON[0]][SELECT_ON[1]]
        history.append({"epoch": epoch, "loss": float(loss), "valid_ndcg@10": value})
        print(f"epoch {epoch} loss {loss:.4f} valid ndcg@10 {value:.4f}", flush=True)
        if value > best:
            best, best_epoch, bad, state = value, epoch, 0, snapshot()
        else:
            bad += 1
        if bad >= args.patience:
            break
        if time.perf_counter() - started > args.max_seconds:
            break
    restore(state)
    return {
        "valid": protocol.evaluate(score, splits.valid, splits),
        "test": protocol.evaluate(score, splits.test, splits),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "history": history,
        "seconds_per_epoch": float(sum(epoch_seconds) / len(epoch_seconds)),
        "train_seconds": time.perf_counter() - started,
        "stopped_by": ("patience" if bad >= args.patience else
                       "epochs" if len(history) == args.epochs else "time cap"),
    }


def fit_windows(args, windows, train_epoch, score) -> dict:
    """The incremental protocol (protocol.Windows): for each day t but the last, `args.epochs`
    epochs of `train_epoch(rows)` on all of day t, continuing from day t-1's model, then day t+1's
    valid and test rows scored; no early stopping (day t+1 is the future). valid / test: means
    over the evaluated days."""
    started = time.perf_counter()
    per_window, epoch_seconds = [], []
    for t in range(len(windows.days) - 1):
        rows = windows.whole(t)
        for _ in range(args.epochs):
            e = time.perf_counter()
            loss = train_epoch(rows)
            epoch_seconds.append(time.perf_counter() - e)
        per_window.append(evaluate_window(windows, t, score, loss))
        print(f"day {windows.day_names[t]} loss {loss:.4f} next-day valid ndcg@10 "
              f"{per_window[-1]['valid']['kept']['ndcg@10']:.4f}", flush=True)
    return window_result(per_window, epoch_seconds, time.perf_counter() - started)


def evaluate_window(windows, t: int, score, loss: float | None, splits=None) -> dict:
    """Day t+1's valid and test rows scored after training on day t (loss: day t's, None where
    the library does not report one); `splits`: windows.at(t) where the caller has built it."""
    splits = windows.at(t) if splits is None else splits
    return {"trained_on": windows.day_names[t], "evaluated_on": windows.day_names[t + 1],
            "loss": None if loss is None else float(loss),
            "valid": protocol.evaluate(score, splits.valid, splits), "test": protocol.evaluate(score, splits.test, splits)}


def window_result(per_window: list[dict], epoch_seconds: list[float], train_seconds: float) -> dict:
    return {
        "protocol": "incremental: train on day t, evaluate on day t+1 (means over the days)",
        "valid": protocol.average([w["valid"] for w in per_window]),
        "test": protocol.average([w["test"] for w in per_window]),
        "windows": per_window,
        "epochs_run": len(epoch_seconds),
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "train_seconds": train_seconds,
    }


def write(args, library: str, result: dict) -> None:
    keys = ("combo", "lr", "dropout", "epochs", "patience", "max_seconds", "max_len", "d_model",
            "layers", "heads", "batch_size", "seed", "threads")
    out = {"library": library, "config": {k: getattr(args, k) for k in keys}, **result}
    Path(args.out).write_text(json.dumps(out, indent=2))
