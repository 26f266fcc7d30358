"""Seeded writers of RecBole atomic files, byte for byte as RecBole's benchmark scripts write them.

Each writer returns what the reader must give back, computed from the generated values (plain
Python), never by parsing the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SEQ_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def random_sequences(n_users: int, n_items: int, seed: int, min_len: int = 3, max_len: int = 14
                     ) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    return {u: [int(i) for i in rng.integers(1, n_items + 1, rng.integers(min_len, max_len + 1))]
            for u in range(1, n_users + 1)}


def write_sequence_benchmark(folder: Path, name: str, sequences: dict[int, list[int]],
                             max_hist: int = 50) -> dict[str, dict[int, list[int]]]:
    """Leave-one-out files `<name>.{train,valid,test}.inter` of `sequences`.

    As RecBole's text-model benchmarks: train lists, for every prefix of the training part
    (longest first), the prefix's last `max_hist` items and the next item; valid and test hold
    one row per user (history capped at `max_hist`, then the target).
    Returns {split: {user: the sequence the reader must rebuild (history + target)}}."""
    folder.mkdir(parents=True, exist_ok=True)
    train_lines, valid_lines, test_lines = [SEQ_HEADER], [SEQ_HEADER], [SEQ_HEADER]
    want: dict[str, dict[int, list[int]]] = {"train": {}, "valid": {}, "test": {}}
    for user, seq in sequences.items():
        train, valid, test = seq[:-2], seq[-2], seq[-1]
        for target_idx in range(1, len(train)):
            hist = train[:-target_idx][-max_hist:]
            train_lines.append(f"{user}\t{' '.join(map(str, hist))}\t{train[-target_idx]}\n")
        if len(train) > 1:
            want["train"][user] = train
        hist = train[-max_hist:]
        valid_lines.append(f"{user}\t{' '.join(map(str, hist))}\t{valid}\n")
        want["valid"][user] = hist + [valid]
        hist = (train + [valid])[-max_hist:]
        test_lines.append(f"{user}\t{' '.join(map(str, hist))}\t{test}\n")
        want["test"][user] = hist + [test]
    for split, lines in (("train", train_lines), ("valid", valid_lines), ("test", test_lines)):
        (folder / f"{name}.{split}.inter").write_text("".join(lines))
    return want


WORDS = ["quantum", "widget", "deluxe", "pro", "mini", "blue", "set", "of", "3", "(2019)", "x-ray"]


def write_text_file(path: Path, n_items: int, seed: int) -> dict[int, str]:
    """`item_id:token text:token_seq`: one line of words per item."""
    rng = np.random.default_rng(seed)
    texts = {i: " ".join(WORDS[w] for w in rng.integers(0, len(WORDS), rng.integers(1, 8)))
             for i in range(1, n_items + 1)}
    lines = ["item_id:token\ttext:token_seq\n"] + [f"{i}\t{t}\n" for i, t in texts.items()]
    path.write_text("".join(lines))
    return texts


def write_item_file(path: Path, n_items: int, seed: int) -> dict[str, list]:
    """`item_id:token price:float brand:token categories:token_seq`, some fields empty."""
    rng = np.random.default_rng(seed)
    items = list(range(1, n_items + 1))
    price = [round(float(p), 2) for p in rng.uniform(0.5, 300, n_items)]
    brand = [["acme", "Zeta Co", "", '"q"'][b] for b in rng.integers(0, 4, n_items)]
    cats = [[f"c{c}" for c in rng.integers(0, 9, rng.integers(0, 4))] for _ in items]
    lines = ["item_id:token\tprice:float\tbrand:token\tcategories:token_seq\n"] + [
        f"{i}\t{p:.2f}\t{b}\t{' '.join(c)}\n" for i, p, b, c in zip(items, price, brand, cats)]
    path.write_text("".join(lines))
    return {"item_id": items, "price": price, "brand": brand, "categories": cats}
