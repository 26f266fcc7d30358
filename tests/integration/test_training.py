"""GPT-2 causal-LM training on real MovieLens-100k sequences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqrec.preprocessing.workflow import FIRST_ITEM_ID, ITEM_LIST
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend, score_histories

from helpers import MAX_LEN

pytestmark = pytest.mark.slow


def test_loss_falls_and_model_beats_popularity(trained):
    assert trained.losses[-1] < trained.losses[0] - 0.5
    assert trained.valid["ndcg@10"] > 1.5 * trained.popularity_valid["ndcg@10"]
    assert trained.test["ndcg@10"] > trained.popularity_test["ndcg@10"]


def test_checkpoint_holds_config_and_weights(trained):
    folder = Path(trained.output_dir)
    assert {"config.json", "model.pt", "metrics.json"} <= {p.name for p in folder.iterdir()}
    a, b = load_checkpoint(folder), load_checkpoint(folder)
    histories = [np.array([10, 20, 30]), np.array([5])]
    torch.testing.assert_close(score_histories(a, histories), score_histories(b, histories))


def test_scores_depend_only_on_the_history(trained, etl):
    """Eval rows hold history + target; changing the target (and anything after it) or batching
    with longer rows must not change a row's scores."""
    model = load_checkpoint(trained.output_dir)
    rows = list(pd.read_parquet(Path(etl.output_dir) / "test.parquet")[ITEM_LIST][:32])
    histories = [r[:-1] for r in rows]
    alone = score_histories(model, histories[:1])
    batched = score_histories(model, histories)[:1]
    torch.testing.assert_close(alone, batched, atol=1e-4, rtol=1e-4)
    # the full row (history + target) gives different scores: the target is not visible before
    assert not torch.allclose(score_histories(model, [rows[0]]), alone)


def test_recommend_ranks_and_excludes_reserved_ids(trained):
    model = load_checkpoint(trained.output_dir)
    histories = [np.array([FIRST_ITEM_ID, FIRST_ITEM_ID + 1]), np.array([FIRST_ITEM_ID + 5])]
    top, scores = recommend(model, histories, k=20)
    assert top.shape == (2, 20) and (top >= FIRST_ITEM_ID).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    top_seen, _ = recommend(model, histories, k=20, exclude_seen=True)
    assert not np.isin(histories[0], top_seen[0]).any()
    with pytest.raises(ValueError, match="at least one item"):
        recommend(model, [np.array([], dtype=np.int64)])


def test_bf16_autocast_trains_and_devices_are_checked(tmp_path, etl):
    """precision: bf16 really runs the step in bfloat16 (CPU autocast here; CUDA the same code):
    its losses fall and differ from fp32's by rounding only. A CUDA device on a machine without
    one, or an unknown precision, fails at configuration."""
    from seqrec.training.trainer import TrainConfig, train

    tiny = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0}
    runs = {p: train(TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path / p), epochs=2,
                                 patience=3, steps_per_epoch=6, precision=p, model=tiny), progress=False)
            for p in ("fp32", "bf16")}
    fp32, bf16 = runs["fp32"].losses, runs["bf16"].losses
    assert bf16[-1] < bf16[0]
    assert bf16 != fp32  # autocast was on ...
    np.testing.assert_allclose(bf16, fp32, rtol=0.05)  # ... and only rounding differs
    with pytest.raises(ValueError, match="precision 'fp16': choose from"):
        TrainConfig(data_dir=etl.output_dir, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': this torch build or machine has no CUDA"):
            TrainConfig(data_dir=etl.output_dir, device="cuda")
    with pytest.raises(ValueError, match="device 'tpu': choose cpu"):
        TrainConfig(data_dir=etl.output_dir, device="tpu")


def test_long_histories_are_trained_whole_and_reported_both_ways(trained, etl):
    """The stored histories are longer than the model's window; training slides it over them,
    so every training interaction but each user's first is a target, not only the last window's."""
    lengths = pd.read_parquet(Path(etl.output_dir) / "train.parquet")["seq_length"].to_numpy()
    assert trained.max_len == MAX_LEN and lengths.max() > MAX_LEN
    assert trained.train_interactions == lengths.sum()
    assert trained.train_targets == int((lengths - 1).sum())
    assert trained.train_targets > 1.5 * int((np.minimum(lengths, MAX_LEN) - 1).sum())
    for report in (trained.test, trained.popularity_test):
        assert report["sessions"] == len(lengths)
        assert report["ndcg@10"] == report[report["policy"]]["ndcg@10"]
        assert sum(b["sessions"] for b in report["by_history_length"].values()) == len(lengths)
        assert report["mrr"] >= report["mrr@20"] >= report["mrr@10"]  # the full MRR adds the tail


def test_tensorboard_logs_every_epoch(trained):
    from seqrec.training.run_log import read_scalars

    scalars = read_scalars(trained.output_dir)
    steps = list(range(1, trained.epochs_run + 1))
    assert [s for s, _ in scalars["train/loss"]] == steps
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], trained.losses, rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["valid/ndcg@10"]], trained.valid_history, rtol=1e-6)
    assert len(scalars["valid/seen_excluded/ndcg@10"]) == trained.epochs_run  # both policies logged
    assert all(v > 0 for _, v in scalars["train/lr"])


@pytest.mark.parametrize("task, min_steps, epochs_run", [
    ("clm", None, 2),  # causal: stops as soon as patience runs out
    ("mlm", 15, 3),  # patience ran out at epoch 2, but only 10 of 15 steps were done
    ("mlm", None, 6),  # a masked task's own minimum (MASKED_STALL_STEPS) is past 6 x 5 steps
])
def test_early_stopping_waits_for_a_masked_task_to_leave_its_stall(tmp_path, etl, task, min_steps, epochs_run):
    """lr 0: validation never improves after epoch 1, so patience 1 runs out at epoch 2; the run
    then stops only once min_steps optimizer steps (5 an epoch) are done."""
    from seqrec.training.tasks.base import MASKED_STALL_STEPS
    from seqrec.training.trainer import TrainConfig, train

    assert MASKED_STALL_STEPS > 6 * 5
    backbone = "gpt2" if task == "clm" else "bert"
    cfg = TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path), epochs=6, patience=1, lr=0.0,
                      steps_per_epoch=5, batch_size=16, min_steps=min_steps, tensorboard=False,
                      model={"backbone": backbone, "task": task, "d_model": 16, "n_layers": 1, "n_heads": 2})
    result = train(cfg, progress=False)
    assert result.epochs_run == epochs_run and result.best_epoch == 1
    with pytest.raises(ValueError, match="min_steps -1 must be >= 0"):
        TrainConfig(data_dir=etl.output_dir, min_steps=-1)
