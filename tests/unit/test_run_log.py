"""TensorBoard scalars of a run, read back the way TensorBoard reads them."""
from __future__ import annotations

from seqrec.training.run_log import LOG_DIR, RunLog, read_scalars


def test_scalars_round_trip(tmp_path):
    log = RunLog(tmp_path)
    for step, loss in enumerate([3.0, 2.5, 2.25], start=1):
        log.epoch(step, loss, lr=1e-3 * step)
        log.metrics(step, {"ndcg@10": 0.1 * step, "recall@10": 0.2 * step}, "valid")
    log.close()
    scalars = read_scalars(tmp_path)
    assert scalars["train/loss"] == [(1, 3.0), (2, 2.5), (3, 2.25)]
    assert [s for s, _ in scalars["valid/recall@10"]] == [1, 2, 3]
    assert abs(scalars["train/lr"][2][1] - 3e-3) < 1e-9


def test_disabled_log_writes_nothing(tmp_path):
    log = RunLog(tmp_path, enabled=False)
    log.epoch(1, 1.0, 1e-3)
    log.metrics(1, {"ndcg@10": 0.5}, "valid")
    log.close()
    assert not (tmp_path / LOG_DIR).exists()
