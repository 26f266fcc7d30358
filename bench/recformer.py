"""Cold start on MovieLens-100k (title, genres, year as item text): 20% of the items are held out
of ALL training (tokenizer, pretraining, fine-tuning; the ID model's training data too). Test rows
are split by their target: held out (cold) or not (warm). Every model ranks the full catalogue
(items of the row's own history excluded, strict ranks: ties count against the target):

- Recformer (configs/recformer-ml-100k-small.yaml: the budget a 2-core machine affords) with the
  [CLS] representation and with mean pooling, the same budget each; the better on validation is
  marked *. Each also with its zero-shot figure (pretraining only, before fine-tuning);
- the ID-based model: seqrec's GPT-2 CLM (configs/ml-100k.yaml's model) trained through the
  ordinary training code on the same warm-only training rows (valid: warm targets);
- a content baseline: TF-IDF over the items' text, a history scored by its last m items'
  summed vectors (m chosen on the warm-target validation rows);
- popularity over the warm training rows.

    python bench/recformer.py [--workdir DIR]

Writes bench/results/recformer.json and docs/figures/recformer-cold-start.png.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "recformer.json"
FIGURE = ROOT / "docs" / "figures" / "recformer-cold-start.png"
RECIPE = ROOT / "configs" / "recformer-ml-100k-small.yaml"
TFIDF_WINDOWS = (1, 3, 5, 10, 20, 50)
POOLINGS = {"cls": "[CLS]", "mean": "mean-pooled"}


def etl(recipe: dict, out: Path) -> str:
    from seqrec.config import section
    from seqrec.preprocessing.pipeline import run_etl

    cfg = section(recipe, "etl", output_dir=str(out))
    if not (out / "test.parquet").is_file():
        run_etl(cfg, progress=False)
    return str(out)


def read_rows(data_dir: str):
    from seqrec.preprocessing.arrays import ITEM_LIST
    from seqrec.training.data import read_columns

    return {s: read_columns(Path(data_dir) / f"{s}.parquet", [ITEM_LIST])[ITEM_LIST] for s in ("train", "valid", "test")}


def split_metrics(ranks, rows, held_out):
    from seqrec.training.recformer.train import split_metrics as metrics

    return metrics(ranks, rows, held_out)


def id_model(data_dir: str, work: Path, held_out: np.ndarray, rows: dict, seed: int, epochs: int) -> tuple[dict, dict]:
    """GPT-2 CLM trained by seqrec's trainer on the warm-only split; strict ranks on test."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from seqrec.config import load_recipe, section
    from seqrec.preprocessing.arrays import FIRST_ITEM_ID, ITEM_LIST
    from seqrec.training.checkpoint import load_checkpoint
    from seqrec.training.evaluation import block_seen, strict_ranks
    from seqrec.training.recformer.coldstart import drop_items, split_targets
    from seqrec.training.recommend import score_histories
    from seqrec.training.trainer import train

    split_dir = work / "id-data"
    split_dir.mkdir(parents=True, exist_ok=True)
    if not (split_dir / "workflow").exists():
        (split_dir / "workflow").symlink_to(Path(data_dir).resolve() / "workflow", target_is_directory=True)

    def write(name, ragged):
        lists = pa.ListArray.from_arrays(pa.array(ragged.offsets.astype(np.int32)), pa.array(ragged.values))
        pq.write_table(pa.table({ITEM_LIST: lists}), split_dir / f"{name}.parquet")

    write("train", drop_items(rows["train"], held_out))
    warm_valid, _ = split_targets(rows["valid"], held_out)
    write("valid", rows["valid"].take(warm_valid))
    write("test", rows["test"])
    base = section(load_recipe(ROOT / "configs" / "ml-100k.yaml"), "train")
    cfg = section({"train": {"data_dir": str(split_dir), "output_dir": str(work / "id-model"), "epochs": epochs,
                             "batch_size": base.batch_size, "lr": base.lr, "patience": base.patience, "seed": seed,
                             "model": {k: getattr(base.model, k) for k in
                                       ("backbone", "task", "d_model", "n_layers", "n_heads", "dropout")}}},
                  "train")
    started = time.perf_counter()
    result = train(cfg, progress=False)
    model = load_checkpoint(work / "id-model")
    histories, targets = rows["test"].drop_last(1), rows["test"].last().astype(np.int64)
    ranks = np.empty(len(targets), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(targets), 256):
            part = histories[i:i + 256]
            scores = score_histories(model, part).numpy().astype(np.float64)
            scores[:, :FIRST_ITEM_ID] = -np.inf
            ranks[i:i + 256] = strict_ranks(block_seen(scores, part), targets[i:i + 256])
    info = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "valid_ndcg@10": result.valid["ndcg@10"], "seconds": time.perf_counter() - started,
            "model": f"{cfg.model.backbone} {cfg.model.task} {cfg.model.n_layers}x{cfg.model.d_model}",
            "epochs": epochs}
    return split_metrics(ranks, rows["test"], held_out), info


def tfidf_matrix(texts: np.ndarray):
    """Rows L2-normalised TF-IDF vectors of lower-cased words (scipy sparse CSR)."""
    from scipy import sparse

    words = [re.findall(r"[a-z0-9']+", t.lower()) for t in texts]  # once per item, not a hot path
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    flat = np.array([w for ws in words for w in ws], dtype=object)
    vocab, codes = np.unique(flat.astype(str), return_inverse=True)
    rows = np.repeat(np.arange(len(words)), lengths)
    tf = sparse.csr_matrix((np.ones(len(codes)), (rows, codes)), shape=(len(words), len(vocab)))
    df = np.bincount(np.unique(rows * len(vocab) + codes) % len(vocab), minlength=len(vocab))
    idf = np.log(len(words) / np.maximum(df, 1)) + 1.0
    x = tf.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
    return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x


def tfidf_ranks(x, rows, window: int) -> np.ndarray:
    from scipy import sparse

    from seqrec.preprocessing.arrays import FIRST_ITEM_ID, offsets_from_lengths, row_ids
    from seqrec.training.data import Ragged
    from seqrec.training.evaluation import block_seen, strict_ranks

    histories, targets = rows.drop_last(1), rows.last().astype(np.int64)
    # the last `window` items of each history
    keep = (np.arange(len(histories.values)) - histories.offsets[row_ids(histories.offsets)]
            >= np.repeat(np.maximum(histories.lengths - window, 0), histories.lengths))
    recent = Ragged(histories.values[keep], offsets_from_lengths(np.bincount(row_ids(histories.offsets)[keep],
                                                                             minlength=len(histories))))
    pick = sparse.csr_matrix((np.ones(len(recent.values)), (row_ids(recent.offsets), recent.values.astype(np.int64))),
                             shape=(len(recent), x.shape[0]))
    scores = np.asarray((pick @ x @ x.T).todense(), dtype=np.float64)
    scores[:, :FIRST_ITEM_ID] = -np.inf
    return strict_ranks(block_seen(scores, histories), targets)


def content_baseline(data_dir: str, rows: dict, held_out: np.ndarray, items_cfg) -> tuple[dict, dict]:
    from seqrec.preprocessing.arrays import ITEM_COL
    from seqrec.preprocessing.item_text import flatten, item_texts
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.evaluation import rank_metrics
    from seqrec.training.recformer.coldstart import split_targets
    from seqrec.training.recformer.train import read_items

    vocabulary = item_vocabulary(load_workflow(Path(data_dir) / "workflow"))
    texts = item_texts(read_items(items_cfg), items_cfg.attributes, vocabulary)
    full = np.full(len(vocabulary), "", dtype=object)
    full[texts[ITEM_COL].to_numpy()] = flatten(texts, list(items_cfg.attributes))
    x = tfidf_matrix(full)
    warm_valid, _ = split_targets(rows["valid"], held_out)
    valid = rows["valid"].take(warm_valid)
    chosen = {w: rank_metrics(tfidf_ranks(x, valid, w))["ndcg@10"] for w in TFIDF_WINDOWS}
    window = max(chosen, key=chosen.get)
    return split_metrics(tfidf_ranks(x, rows["test"], window), rows["test"], held_out), {
        "window": window, "valid_ndcg@10_by_window": chosen}


def popularity(rows: dict, held_out: np.ndarray, num_items: int) -> dict:
    from seqrec.training.evaluation import block_seen, popularity_counts, strict_ranks
    from seqrec.training.recformer.coldstart import drop_items

    counts = popularity_counts(drop_items(rows["train"], held_out), num_items)
    histories, targets = rows["test"].drop_last(1), rows["test"].last().astype(np.int64)
    scores = np.broadcast_to(counts, (len(targets), num_items)).copy()
    return split_metrics(strict_ranks(block_seen(scores, histories), targets), rows["test"], held_out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for offset, part in ((-0.2, "warm"), (0.2, "cold")):
        ax.bar(x + offset, [r[part]["ndcg@10"] for r in results], width=0.4, label=f"{part} targets")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("test NDCG@10 (full catalogue)")
    ax.set_title("MovieLens-100k, 20% of items held out of all training")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "seqrec-bench-recformer"))
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--id-epochs", type=int, default=10, help="the ID model's epochs (early stopping inside)")
    args = parser.parse_args(argv)
    import torch

    from seqrec.config import load_recipe, section
    from seqrec.training.recformer.train import train_recformer

    work = Path(args.workdir)
    recipe = load_recipe(args.recipe)
    data_dir = etl(recipe, work / "data")
    started = time.perf_counter()
    runs = {}
    for pooling in POOLINGS:  # both representations, the same budget; validation picks one
        cfg = section(recipe, "recformer", data_dir=data_dir, output_dir=str(work / f"recformer-{pooling}"))
        cfg.model.pooling = pooling
        runs[pooling] = train_recformer(cfg, progress=True)
    chosen = max(runs, key=lambda p: runs[p]["valid_ndcg@10"])
    rf = runs[chosen]
    held_out = np.load(work / f"recformer-{chosen}" / "held_out.npy")
    rows = read_rows(data_dir)
    id_metrics, id_info = id_model(data_dir, work, held_out, rows, cfg.seed, args.id_epochs)
    content, content_info = content_baseline(data_dir, rows, held_out, cfg.items)
    results = []
    for pooling, run in runs.items():
        mark = " *" if pooling == chosen else ""
        results += [{"model": f"Recformer {POOLINGS[pooling]}{mark}", "valid_ndcg@10": run["valid_ndcg@10"],
                     **run["test"]},
                    {"model": f"Recformer {POOLINGS[pooling]} zero-shot",
                     "valid_ndcg@10": run["zero_shot_valid_ndcg@10"], **run["zero_shot"]}]
    results += [
        {"model": f"ID: {id_info['model']}", **id_metrics},
        {"model": f"TF-IDF kNN (last {content_info['window']})", **content},
        {"model": "popularity", **popularity(rows, held_out, rf["num_items"])},
    ]
    report = {
        "dataset": "MovieLens-100k (ml-100k.inter + ml-100k.item: title, genres, year)",
        "protocol": {"held_out_share": cfg.cold_fraction, "held_out_items": rf["held_out_items"],
                     "num_items": rf["num_items"], "test_rows": rf["test_rows"],
                     "ranking": "full catalogue, history items excluded, strict rank (ties against the target)",
                     "selection": "validation rows with warm targets only"},
        "budget": {"recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_absolute() else args.recipe,
                   "recformer_seconds": sum(r["seconds"] for r in runs.values()), "id_model_seconds": id_info["seconds"],
                   "torch_threads": torch.get_num_threads(),
                   "model": {k: rf["config"]["model"][k] for k in ("d_model", "n_layers", "n_heads", "max_tokens",
                                                                 "max_items", "attention_window")},
                   "pretrain": rf["config"]["pretrain"], "finetune": rf["config"]["finetune"]},
        "speed": {"pretrain_tokens_per_s": rf["pretrain_tokens_per_s"],
                  "finetune_tokens_per_s": rf["finetune_tokens_per_s"],
                  "encode_items_per_s": rf["encode_items_per_s"], "reencode_share": rf["reencode_share"]},
        "id_model": id_info, "content": content_info, "chosen_pooling": chosen,
        "recformer_log": {p: r["log"] for p, r in runs.items()}, "results": results,
        "seconds": time.perf_counter() - started,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, FIGURE)
    print(f"{'model':34s}{'warm ndcg@10':>13s}{'cold ndcg@10':>13s}{'all ndcg@10':>12s}{'cold recall@10':>15s}")
    for r in results:
        print(f"{r['model']:34s}{r['warm']['ndcg@10']:13.4f}{r['cold']['ndcg@10']:13.4f}{r['all']['ndcg@10']:12.4f}"
              f"{r['cold']['recall@10']:15.4f}")
    print(f"wrote {RESULTS.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
