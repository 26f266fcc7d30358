"""A failed reload against the real tritonserver: `seqrec model load` fails naming the member and
the server's error, the previous export keeps serving whole, and the next good export loads."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.importorskip("pytriton", reason="needs nvidia-pytriton (seqrec[serve])")

from seqrec.client import RecommenderClient  # noqa: E402
from seqrec.client.control import ModelControl  # noqa: E402
from seqrec.model_repository.export import (ENSEMBLE, MODEL, PREPROCESS, ExportConfig,  # noqa: E402
                                            export_repository, versions)
from seqrec.model_repository.server import TritonServer  # noqa: E402
from serving_helpers import offline_view  # noqa: E402

pytestmark = pytest.mark.slow


def model_load(url: str, key_file) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqrec.cli", "model", "load", ENSEMBLE, "--url", url,
                           "--key-file", str(key_file)], capture_output=True, text=True, timeout=180)


def test_failed_reload_names_the_member_and_keeps_the_previous_export(tmp_path, etl, trained):
    sessions = offline_view(etl.output_dir, trained.output_dir)["raw"][:64]
    cfg = ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                       repository=str(tmp_path / "repo"))
    repo = export_repository(cfg)
    with TritonServer(repo, model_control="explicit", load_models=[ENSEMBLE]) as srv, \
            ModelControl(srv.grpc_url, key=srv.repository_key) as ctl, \
            RecommenderClient(srv.grpc_url, retries=0, timeout_s=30) as client:
        key_file = tmp_path / "key"
        key_file.write_text(srv.repository_key)
        v1 = [r.item_ids for r in client.recommend_batch(sessions)]

        export_repository(cfg)  # version 2, damaged after publishing
        scorer = repo / MODEL / "2" / "scorer.pt2"
        scorer.write_bytes(scorer.read_bytes()[: scorer.stat().st_size // 2])
        failed = model_load(srv.grpc_url, key_file)
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert "'seqrec_model'" in failed.stderr and "2/scorer.pt2 is not a readable exported program" \
            in failed.stderr and "Traceback" not in failed.stderr
        # the ensemble still serves the previous export, whole
        assert ctl.member_versions(ENSEMBLE) == {PREPROCESS: 1, MODEL: 1}
        assert ctl.is_ready(ENSEMBLE) and ctl.is_ready(MODEL, 1) and not ctl.is_ready(MODEL, 2)
        assert [r.item_ids for r in client.recommend_batch(sessions)] == v1
        assert client.is_ready()

        export_repository(cfg)  # a good version 3 over the damaged 2
        assert versions(repo / MODEL) == [1, 2, 3]
        t0 = time.monotonic()
        loaded = model_load(srv.grpc_url, key_file)
        seconds = time.monotonic() - t0
        # it loads (before, the damaged 2 stayed in the policy and every later load failed)
        assert loaded.returncode == 0, f"{seconds:.0f} s: {loaded.stderr}"
        assert ctl.member_versions(ENSEMBLE) == {PREPROCESS: 3, MODEL: 3}
        assert ctl.is_ready(MODEL, 3) and ctl.is_ready(MODEL, 1) and not ctl.is_ready(MODEL, 2)
        assert [r.item_ids for r in client.recommend_batch(sessions)] == v1  # the same model
