"""Cornac 3.0.1's TransformerRec on the shared splits, in its own virtualenv
(bench/peers/setup_envs.sh). The library trains through its own `fit` and picks its epoch with its
own model selection (`model_selection="best"`, validation NDCG@10 after every epoch, the same
epoch budget as the other libraries); the chosen model is then scored through its `score()` by
the shared protocol. Cornac's own data path (USIT tuples, `NextItemEvaluation.from_splits` with
`exclude_unknowns`) maps our ids to its internal indices. Daily windows: TransformerRec has no
incremental fit (every `fit` builds a new model), so after each day t it is refit from scratch on
all days <= t for the same epochs per day as the others train on day t alone, keeping its last
epoch (day t+1 is the future: no validation guides it)."""
from __future__ import annotations

import time

import numpy as np
import torch
from cornac.eval_methods import NextItemEvaluation
from cornac.models import TransformerRec

import protocol
from runner import arguments, evaluate_window, window_result, write

# combo -> (backbone, objective, loss_at)
COMBOS = {
    "gpt2-clm": ("gpt2", "clm", "all"),
    "gpt2-clm-last": ("gpt2", "clm", "last"),
    "bert-clm-last": ("bert", "clm", "last"),
    "bert-mlm": ("bert", "mlm", "all"),
    "xlnet-mlm": ("xlnet", "mlm", "all"),
    "xlnet-plm": ("xlnet", "plm", "all"),
    "electra-rtd": ("electra", "rtd", "all"),
    "bert-rtd": ("bert", "rtd", "all"),
}


def usit(rows: protocol.Rows, prefix: str) -> list[tuple]:
    """One session per row (user = session), the row's order as its timestamps."""
    out = []
    for r, items in enumerate(rows.lists()):
        out += [(f"{prefix}{r}", f"{prefix}{r}", str(int(i)), t) for t, i in enumerate(items)]
    return out


def fitted(args, splits: protocol.Splits, select: bool):
    """TransformerRec fit on splits.train (validation-selected epoch when `select`); (its scorer
    over our id space, training seconds)."""
    backbone, objective, loss_at = COMBOS[args.combo]
    method = NextItemEvaluation.from_splits(
        train_data=usit(splits.train, "t"), test_data=usit(splits.test, "s"),
        val_data=usit(splits.valid, "v"), fmt="USIT", exclude_unknowns=True, seed=args.seed)
    model = TransformerRec(
        backbone=backbone, objective=objective, loss_at=loss_at, embedding_dim=args.d_model,
        batch_size=args.batch_size, learning_rate=args.lr, n_epochs=args.epochs, max_len=args.max_len,
        num_blocks=args.layers, num_heads=args.heads, dropout=args.dropout, seed=args.seed,
        **(dict(model_selection="best", val_eval_every=1, val_k=protocol.CUTOFF, val_metric="ndcg")
           if select else dict(model_selection="last")))
    started = time.perf_counter()
    model.fit(method.train_set, method.val_set if select else None)
    train_seconds = time.perf_counter() - started
    iid_map = method.train_set.iid_map  # our id (str) -> Cornac's index
    ours = np.array([int(k) for k in iid_map], dtype=np.int64)
    theirs = np.array(list(iid_map.values()), dtype=np.int64)
    to_theirs = np.full(splits.num_items, -1, dtype=np.int64)
    to_theirs[ours] = theirs

    def score(histories: protocol.Rows) -> np.ndarray:
        out = np.full((len(histories), splits.num_items), -np.inf, dtype=np.float32)
        for r, items in enumerate(histories.lists()):  # Cornac's scoring API takes one history
            scores = np.asarray(model.score(0, history_items=to_theirs[items].tolist()))
            out[r, ours] = scores[theirs]
        return out
    return score, train_seconds


def daily(args) -> None:
    windows = protocol.load_windows(args.splits)
    per_window, seconds = [], []
    for t in range(len(windows.days) - 1):
        splits = windows.at(t)
        score, train_seconds = fitted(args, splits, select=False)
        seconds.append(train_seconds)
        per_window.append(evaluate_window(windows, t, score, None, splits))
        print(f"day {windows.day_names[t]} next-day valid ndcg@10 {per_window[-1]['valid']['kept']['ndcg@10']:.4f}",
              flush=True)
    result = window_result(per_window, [s / args.epochs for s in seconds for _ in range(args.epochs)], sum(seconds))
    result["training"] = "refit from scratch on all days so far after each day (no incremental fit)"
    write(args, "cornac-3.0.1", result)


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    if args.combo not in COMBOS:
        raise SystemExit(f"Cornac's TransformerRec runs no {args.combo!r}")
    if protocol.is_windows(args.splits):
        return daily(args)
    splits = protocol.load_splits(args.splits)
    score, train_seconds = fitted(args, splits, select=True)
    write(args, "cornac-3.0.1", {
        "valid": protocol.evaluate(score, splits.valid, splits),
        "test": protocol.evaluate(score, splits.test, splits),
        "epochs_run": args.epochs,
        "selection": "Cornac's model_selection='best' on its validation NDCG@10 after every epoch",
        "seconds_per_epoch": train_seconds / args.epochs,
        "train_seconds": train_seconds,
    })


if __name__ == "__main__":
    main()
