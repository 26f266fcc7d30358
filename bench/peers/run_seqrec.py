"""seqrec on the shared splits: `seqrec train` on the seqrec data folder the splits were written
from (the same train / valid / test sequences), with its own early stopping on validation; the
best epoch is then scored through `score_histories` by the shared protocol."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import protocol
from runner import arguments, write


def main() -> None:
    from seqrec.training.checkpoint import load_checkpoint
    from seqrec.training.recommend import score_histories
    from seqrec.training.trainer import TrainConfig, train

    args = arguments()
    torch.set_num_threads(args.threads)
    splits = protocol.load_splits(args.splits)
    data_dir = Path(args.splits).with_suffix(".data_dir").read_text().strip()
    backbone, task = args.combo.split("-", 1)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data_dir=data_dir, output_dir=out, epochs=args.epochs, patience=args.patience,
                          lr=args.lr, batch_size=args.batch_size, seed=args.seed, tensorboard=False,
                          model={"backbone": backbone, "task": task, "d_model": args.d_model,
                                 "n_layers": args.layers, "n_heads": args.heads, "dropout": args.dropout})
        started = time.perf_counter()
        result = train(cfg, progress=False)
        train_seconds = time.perf_counter() - started
        model = load_checkpoint(Path(out))
    if model.cfg.max_len != args.max_len:
        raise SystemExit(f"the data folder's window is {model.cfg.max_len}, the benchmark's {args.max_len}")

    def score(histories: protocol.Rows) -> np.ndarray:
        return score_histories(model, histories.lists()).numpy()

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
