"""The `seqrec` CLI against the served model, and the deployment files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def seqrec(*args, check=True):
    return subprocess.run([sys.executable, "-m", "seqrec.cli", *args], capture_output=True,
                          text=True, check=check, timeout=120)


@pytest.mark.slow
def test_query_prints_original_ids_titles_and_latency(server):
    out = seqrec("query", "--items", "50,172,133", "--url", server.grpc_url).stdout
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "score"]
    assert len([l for l in lines if l.strip()[:2].strip().isdigit()]) == 10
    assert "(19" in out  # MovieLens titles carry their release year
    assert "latency:" in out


def test_query_rejects_a_non_integer_id_before_sending():
    result = seqrec("query", "--items", "50,abc", "--url", "127.0.0.1:1", check=False)
    assert result.returncode != 0
    assert "'abc' is not an integer item id" in result.stderr


def test_config_with_unknown_option_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    result = seqrec("train", "--config", str(cfg), check=False)
    assert result.returncode != 0 and "epochz" in result.stderr


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:" in text and "--gpu" in text


def test_gpu_export_writes_kind_gpu(repository, etl, trained, tmp_path):
    from seqrec.model_repository.export import MODEL, ExportConfig, export_repository

    repo = export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                                          repository=str(tmp_path / "gpu"), gpu=True))
    assert "kind: KIND_GPU" in (repo / MODEL / "config.pbtxt").read_text()
