"""The one evaluation protocol of the side-by-side benchmark, numpy only: every library's runner
(each in its own virtualenv) imports this file, so seqrec, Transformers4Rec and Cornac are scored
by the same code on the same rows.

- splits: `splits.npz` holds train / valid / test sequences as values + offsets in one encoded id
  space (seqrec's ETL ids; 0..first_item-1 are reserved), written by bench/peers/splits.py;
- candidates: every item that occurs in the training sequences;
- evaluation rows: items unknown to train are dropped (Cornac's `exclude_unknowns`); a row left
  with fewer than 2 items is skipped; the target is its last item, the history what precedes it;
- rank: the number of candidates scored at least as high as the target, the target itself not
  counted (ties count against the target), over the full candidate set;
- both seen-item policies in one pass: `kept` ranks every candidate, `excluded` removes the
  history's items from the candidates (the target stays a candidate);
- daily windows (`Windows`, the incremental protocol of the Transformers4Rec paper): train on all of
  day t, evaluate on day t+1's valid and test sessions (never trained on yet), go on to day t+1;
  candidates are the items of days <= t; valid and test are averaged over the evaluated days.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CUTOFF = 10
POLICIES = ("kept", "excluded")


@dataclass
class Rows:
    """Sequences as values + offsets (row r = values[offsets[r]:offsets[r + 1]])."""

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def lists(self) -> list[np.ndarray]:
        return np.split(self.values, self.offsets[1:-1])

    def padded_left(self, width: int) -> np.ndarray:
        """[rows, width] with each row's last `width` items right-aligned, 0 before them."""
        return _pad(self, width, left=True)

    def padded_right(self, width: int) -> np.ndarray:
        """[rows, width] with each row's last `width` items first, 0 after them."""
        return _pad(self, width, left=False)


def _pad(rows: Rows, width: int, left: bool) -> np.ndarray:
    lengths = np.minimum(rows.lengths, width)
    out = np.zeros((len(rows), width), dtype=np.int64)
    row = np.repeat(np.arange(len(rows)), lengths)
    within = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    source = np.repeat(rows.offsets[1:] - lengths, lengths) + within
    column = within + np.repeat(width - lengths, lengths) if left else within
    out[row, column] = rows.values[source]
    return out


@dataclass
class Splits:
    train: Rows
    valid: Rows
    test: Rows
    num_items: int  # size of the encoded id space (reserved ids included)
    first_item: int  # the first id that is an item
    name: str

    @property
    def candidates(self) -> np.ndarray:
        """Boolean [num_items]: the items that occur in training."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.train.values] = True
        return mask


def concat_rows(parts: list[Rows]) -> Rows:
    lengths = np.concatenate([p.lengths for p in parts])
    return Rows(np.concatenate([p.values for p in parts]), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


@dataclass
class Windows:
    """Sessions by day (each day's train / valid / test shares, as the ETL split them)."""

    days: list[dict[str, Rows]]
    day_names: list[str]
    num_items: int
    first_item: int
    name: str

    def whole(self, t: int) -> Rows:
        """All of day t's sessions: what is trained on once day t is over."""
        return concat_rows([self.days[t][s] for s in ("train", "valid", "test")])

    def at(self, t: int) -> Splits:
        """Evaluation after training on day t: candidates from days <= t, day t+1's rows."""
        seen = concat_rows([self.whole(d) for d in range(t + 1)])
        return Splits(train=seen, valid=self.days[t + 1]["valid"], test=self.days[t + 1]["test"],
                      num_items=self.num_items, first_item=self.first_item, name=f"{self.name}/{self.day_names[t + 1]}")


def save_windows(path: Path, windows: Windows) -> None:
    arrays = {f"day{d}_{s}_{part}": getattr(day[s], part)
              for d, day in enumerate(windows.days) for s in ("train", "valid", "test") for part in ("values", "offsets")}
    np.savez(path, num_items=windows.num_items, first_item=windows.first_item, name=windows.name,
             day_names=np.array(windows.day_names), **arrays)


def is_windows(path: Path) -> bool:
    return "day_names" in np.load(path).files


def load_windows(path: Path) -> Windows:
    z = np.load(path)
    names = [str(n) for n in z["day_names"]]
    days = [{s: Rows(z[f"day{d}_{s}_values"].astype(np.int64), z[f"day{d}_{s}_offsets"].astype(np.int64))
             for s in ("train", "valid", "test")} for d in range(len(names))]
    return Windows(days, names, int(z["num_items"]), int(z["first_item"]), str(z["name"]))


def average(reports: list[dict]) -> dict:
    """The mean of per-window `evaluate` reports (each metric, each policy); rows summed."""
    out = {p: {m: float(np.mean([r[p][m] for r in reports])) for m in reports[0][p]} for p in POLICIES}
    out["rows"] = int(sum(r["rows"] for r in reports))
    return out


def save_splits(path: Path, splits: Splits) -> None:
    arrays = {f"{s}_{part}": getattr(getattr(splits, s), part)
              for s in ("train", "valid", "test") for part in ("values", "offsets")}
    np.savez(path, num_items=splits.num_items, first_item=splits.first_item, name=splits.name, **arrays)


def load_splits(path: Path) -> Splits:
    z = np.load(path)
    rows = {s: Rows(z[f"{s}_values"].astype(np.int64), z[f"{s}_offsets"].astype(np.int64))
            for s in ("train", "valid", "test")}
    return Splits(**rows, num_items=int(z["num_items"]), first_item=int(z["first_item"]), name=str(z["name"]))


def known_rows(rows: Rows, candidates: np.ndarray) -> Rows:
    """The rows with items unknown to train removed, rows left with < 2 items dropped."""
    keep = candidates[rows.values]
    row_of = np.repeat(np.arange(len(rows)), rows.lengths)
    lengths = np.bincount(row_of[keep], minlength=len(rows))
    enough = lengths >= 2
    values = rows.values[keep][np.repeat(enough, lengths)]
    return Rows(values, np.concatenate([[0], np.cumsum(lengths[enough])]).astype(np.int64))


def history_target(rows: Rows) -> tuple[Rows, np.ndarray]:
    targets = rows.values[rows.offsets[1:] - 1]
    last = np.zeros(len(rows.values), dtype=bool)
    last[rows.offsets[1:] - 1] = True
    return Rows(rows.values[~last], rows.offsets - np.arange(len(rows.offsets))), targets


def ranks(scores: np.ndarray, targets: np.ndarray, candidates: np.ndarray,
          histories: Rows | None = None) -> np.ndarray:
    """0-based strict ranks of the targets: [rows]. scores [rows, num_items] (any float dtype);
    with `histories`, the history's items are removed from each row's candidates."""
    scores = np.where(candidates[None, :], scores.astype(np.float64), -np.inf)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets].copy()  # read before the seen items are masked
    if histories is not None:
        scores[np.repeat(rows, histories.lengths), histories.values] = -np.inf
    scores[rows, targets] = -np.inf  # the target does not outrank itself
    return (scores >= target_scores[:, None]).sum(axis=1)


def metrics(rank: np.ndarray, num_candidates: int) -> dict[str, float]:
    rank = np.asarray(rank, dtype=np.float64)
    hit = rank < CUTOFF
    return {
        f"ndcg@{CUTOFF}": float(np.mean(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0))),
        f"recall@{CUTOFF}": float(np.mean(hit)),
        f"mrr@{CUTOFF}": float(np.mean(np.where(hit, 1.0 / (rank + 1.0), 0.0))),
        "mrr": float(np.mean(1.0 / (rank + 1.0))),
        "auc": float(np.mean(1.0 - rank / max(num_candidates - 1, 1))),
    }


ScoreFn = Callable[[Rows], np.ndarray]  # histories -> [rows, num_items] scores


def evaluate(score: ScoreFn, rows: Rows, splits: Splits, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """{policy: metrics} of a model's `score` on evaluation rows (valid or test), both policies
    from the same scores. `score` receives histories of known items and owns its window."""
    candidates = splits.candidates
    histories, targets = history_target(known_rows(rows, candidates))
    out = {p: [] for p in POLICIES}
    for start in range(0, len(targets), batch_size):
        stop = min(start + batch_size, len(targets))
        part = Rows(histories.values[histories.offsets[start]:histories.offsets[stop]],
                    histories.offsets[start:stop + 1] - histories.offsets[start])
        scores = np.asarray(score(part))
        if scores.shape != (stop - start, splits.num_items):
            raise ValueError(f"scores of shape {scores.shape}, expected {(stop - start, splits.num_items)}")
        out["kept"].append(ranks(scores, targets[start:stop], candidates))
        out["excluded"].append(ranks(scores, targets[start:stop], candidates, part))
    n = int(candidates.sum())
    report = {p: metrics(np.concatenate(r), n) for p, r in out.items()}
    report["rows"] = int(len(targets))
    return report
