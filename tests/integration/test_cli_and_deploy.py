"""The `seqrec` CLI against the served model, and the GPU export of the deployment image."""
from __future__ import annotations

import pytest

from helpers import seqrec_cli as seqrec

pytestmark = pytest.mark.slow


def test_query_prints_original_ids_titles_and_latency(server):
    out = seqrec("query", "--items", "50,172,133", "--url", server.grpc_url).stdout
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "score"]
    assert len([l for l in lines if l.strip()[:2].strip().isdigit()]) == 10
    assert "(19" in out  # MovieLens titles carry their release year
    assert "latency:" in out


def test_gpu_export_writes_kind_gpu(repository, etl, trained, tmp_path):
    from seqrec.model_repository.export import MODEL, ExportConfig, export_repository

    repo = export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                                          repository=str(tmp_path / "gpu"), gpu=True))
    assert "kind: KIND_GPU" in (repo / MODEL / "config.pbtxt").read_text()
