"""The `seqrec` CLI without a server (refusals before sending, config errors) and the Dockerfile."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT
from helpers import seqrec_cli as seqrec


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
