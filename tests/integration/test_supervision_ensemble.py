"""kill -9 of the torch model step's stub of the exported ensemble under load: `seqrec serve`
restarts the server, answers resume by themselves and equal the answers before the fault."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pytriton", reason="needs nvidia-pytriton (seqrec[serve])")
psutil = pytest.importorskip("psutil")

from helpers import kill_and_time_recovery  # noqa: E402
from seqrec.client import RecommendationError, RecommenderClient  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RECOVERY_BOUND_S = 40  # measured 12-17 s on 2 shared cores (docs/deployment.md)


def test_killed_model_stub_recovers_with_equal_answers(repository, tmp_path):
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "serve", "--config",
                             str(ROOT / "configs/ml-100k.yaml"), "--repository", str(repository)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (m := re.search(r"pid (\d+)\).*?gRPC\s+(\S+)", log.read_text(), re.S)):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        pid, url = int(m.group(1)), m.group(2)
        sessions = [[50, 172, 133], [1, 2, 3, 4], [300, 12], [7]]
        stop, answers, errors = threading.Event(), [], []

        def load():
            with RecommenderClient(url, timeout_s=60) as c:
                while not stop.is_set():
                    try:
                        answers.append([r.item_ids for r in c.recommend_batch(sessions)])
                    except RecommendationError as e:
                        errors.append(str(e))

        with RecommenderClient(url, retries=0) as probe:
            before = [r.item_ids for r in probe.recommend_batch(sessions)]
            workers = [threading.Thread(target=load) for _ in range(2)]
            for w in workers:
                w.start()
            time.sleep(1.0)
            (stub,) = [p for p in psutil.Process(pid).children(recursive=True)
                       if "seqrec_model/" in " ".join(p.cmdline())]
            t_not_ready, t_ready = kill_and_time_recovery(probe, stub, 5, RECOVERY_BOUND_S, log)
            n = len(answers)
            time.sleep(2.0)
            stop.set()
            for w in workers:
                w.join(90)
            after = [r.item_ids for r in probe.recommend_batch(sessions)]
        print(f"\nensemble: model stub killed; not ready after {t_not_ready:.2f} s, answering "
              f"again after {t_ready:.2f} s; {len(answers)} answered, {len(errors)} failed")
        assert errors == [] and len(answers) > n
        assert all(a == before for a in answers) and after == before
        assert "restarting tritonserver" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
