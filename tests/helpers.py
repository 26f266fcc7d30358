"""Constants and small helpers shared by the unit and integration tests (a plain module: the
tests/ folder is on sys.path through `pythonpath` in pyproject.toml)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
MAX_LEN = 50  # max_len (the model's window) of the shared MovieLens-100k ETL fixture
HISTORY_CAP = 100  # its history_cap: what it stores of a history and the served workflow keeps


def seqrec_cli(*args, check=True, timeout=120):
    """Run the `seqrec` command line in a fresh interpreter (as a user would)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "seqrec.cli", *args], capture_output=True,
                          text=True, check=check, timeout=timeout)


def kill_and_time_recovery(probe, stub, not_ready_within: float, ready_within: float, log) -> tuple[float, float]:
    """kill -9 `stub` (a psutil process), then wait for `probe` (a RecommenderClient) to report
    not ready and to answer again; (seconds to not ready, seconds to ready again), each bounded.
    `log`: the serve log shown when recovery takes too long."""
    import time

    t_kill = time.monotonic()
    stub.kill()
    while probe.is_ready(timeout_s=1.0):
        assert time.monotonic() - t_kill < not_ready_within, \
            f"still ready {not_ready_within} s after the stub died"
        time.sleep(0.05)
    t_not_ready = time.monotonic() - t_kill
    while not probe.is_ready(timeout_s=1.0):
        assert time.monotonic() - t_kill < ready_within, log.read_text()
        time.sleep(0.1)
    return t_not_ready, time.monotonic() - t_kill
