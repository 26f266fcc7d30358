"""Labelled ranking examples from timed interactions: (user, history, candidate, label).

A history is an index range into one (user, time)-sorted item array: the user's interactions
strictly BEFORE the candidate's timestamp (ties with it excluded), the last `max_history` of
them. Nothing is copied per example, and nothing at or after the candidate's time is visible.

Two label protocols:
  ratings  every rated item is a candidate: rating >= positive_rating -> 1, else 0
  sampled  every interaction is a positive, plus one uniformly drawn item the user never
           interacted with as its negative, with the same history (the GPSD paper's protocol)
Users are split by the time of their last interaction: users whose last interaction is after
the `test_quantile` of those times are test users (all their examples), the rest train.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from seqrec.preprocessing.arrays import FIRST_ITEM_ID, PAD_ID

Protocol = Literal["ratings", "sampled"]
PROTOCOLS = get_args(Protocol)
MAX_REDRAWS = 50  # rounds of redrawing sampled negatives that hit an item the user has seen


@dataclass
class LabelConfig:
    protocol: Protocol = "ratings"
    positive_rating: float = 4.0  # ratings: >= this is a positive, below it a negative
    max_history: int = 50  # the last interactions before the candidate that the ranker sees
    test_quantile: float = 0.8  # users whose last interaction is later than this quantile: test
    seed: int = 0  # sampled negatives

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}: choose from {PROTOCOLS}")
        if self.max_history < 1:
            raise ValueError(f"max_history {self.max_history} must be >= 1")
        if not 0 < self.test_quantile < 1:
            raise ValueError(f"test_quantile {self.test_quantile} must lie in (0, 1)")


@dataclass
class Examples:
    """Examples over one sorted item array. items/times/users: [N] sorted by (user, time);
    the rest: [E], one per example; the history of example e is items[start[e]:end[e]]."""

    items: np.ndarray
    times: np.ndarray
    users: np.ndarray
    start: np.ndarray
    end: np.ndarray
    candidate: np.ndarray
    label: np.ndarray
    user: np.ndarray
    time: np.ndarray  # the candidate's timestamp

    def __len__(self) -> int:
        return len(self.candidate)

    def take(self, index: np.ndarray) -> "Examples":
        pick = lambda a: a[index]  # noqa: E731
        return Examples(self.items, self.times, self.users, pick(self.start), pick(self.end),
                        pick(self.candidate), pick(self.label), pick(self.user), pick(self.time))

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(histories [B, T] right-padded with PAD_ID, lengths [B], candidates [B]) as int64,
        T the batch's longest history (at least 1)."""
        start, end = self.start[index], self.end[index]
        lengths = end - start
        width = max(int(lengths.max(initial=0)), 1)
        cols = np.arange(width)
        keep = cols[None] < lengths[:, None]
        flat = np.where(keep, start[:, None] + cols[None], 0)
        hist = np.where(keep, self.items[flat] if len(self.items) else PAD_ID, PAD_ID)
        return (torch.from_numpy(hist.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64)),
                torch.from_numpy(self.candidate[index].astype(np.int64)))


def build_examples(users: np.ndarray, items: np.ndarray, times: np.ndarray, ratings: np.ndarray,
                   cfg: LabelConfig, num_items: int) -> Examples:
    """Interactions (encoded item ids, any order) -> labelled examples (see the module doc)."""
    users, items, times = (np.asarray(a, dtype=np.int64) for a in (users, items, times))
    ratings = np.asarray(ratings, dtype=float)
    if not (len(users) == len(items) == len(times) == len(ratings)):
        raise ValueError("users, items, times and ratings differ in length")
    if len(users) == 0:
        raise ValueError("no interactions to label")
    order = np.lexsort((times, users))
    users, items, times, ratings = users[order], items[order], times[order], ratings[order]
    n = len(users)
    new_user = np.r_[True, users[1:] != users[:-1]]
    user_start = np.flatnonzero(new_user)[np.cumsum(new_user) - 1]
    # Rows of equal (user, time) form a run; a history ends where the candidate's run starts.
    new_run = new_user | np.r_[True, times[1:] != times[:-1]]
    end = np.flatnonzero(new_run)[np.cumsum(new_run) - 1]
    start = np.maximum(user_start, end - cfg.max_history)
    rows = np.arange(n)
    if cfg.protocol == "ratings":
        label = (ratings >= cfg.positive_rating).astype(np.float32)
        return Examples(items, times, users, start, end, items.copy(), label, users.copy(), times.copy())
    negatives = _sample_unseen(users, items, num_items, np.random.default_rng(cfg.seed))
    both = np.r_[rows, rows]
    return Examples(items, times, users, start[both], end[both], np.r_[items, negatives],
                    np.r_[np.ones(n, np.float32), np.zeros(n, np.float32)], users[both], times[both])


def _sample_unseen(users: np.ndarray, items: np.ndarray, num_items: int, rng) -> np.ndarray:
    """One uniform item per interaction that its user never interacted with."""
    seen = np.unique(users * num_items + items)
    draw = rng.integers(FIRST_ITEM_ID, num_items, len(users))
    for _ in range(MAX_REDRAWS):
        bad = np.flatnonzero(np.isin(users * num_items + draw, seen))
        if not bad.size:
            return draw
        draw[bad] = rng.integers(FIRST_ITEM_ID, num_items, bad.size)
    raise ValueError("could not draw unseen negatives: a user has interacted with almost every item")


def split_users(examples: Examples, test_quantile: float) -> tuple[Examples, Examples]:
    """(train, test): test users are those whose last interaction is later than the
    `test_quantile` of all users' last-interaction times."""
    uniq, inverse = np.unique(examples.users, return_inverse=True)
    last = np.full(len(uniq), np.iinfo(np.int64).min)
    np.maximum.at(last, inverse, examples.times)
    cut = np.quantile(last, test_quantile)
    test_users = uniq[last > cut]
    is_test = np.isin(examples.user, test_users)
    if not is_test.any() or is_test.all():
        raise ValueError(f"test_quantile {test_quantile} leaves no train or no test users")
    return examples.take(np.flatnonzero(~is_test)), examples.take(np.flatnonzero(is_test))


def generative_rows(examples: Examples, users: np.ndarray, length: int) -> np.ndarray:
    """The sorted interactions of `users` cut into consecutive windows of `length` items:
    [W, length] right-padded (each window a next-item training sequence)."""
    keep = np.flatnonzero(np.isin(examples.users, users))
    u, it = examples.users[keep], examples.items[keep]
    new_user = np.r_[True, u[1:] != u[:-1]]
    group_start = np.flatnonzero(new_user)[np.cumsum(new_user) - 1]
    within = np.arange(len(u)) - group_start
    window = np.cumsum(new_user | (within % length == 0)) - 1
    out = np.full((int(window[-1]) + 1 if len(window) else 0, length), PAD_ID, dtype=np.int64)
    out[window, within % length] = it
    return out
