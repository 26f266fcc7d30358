"""The predefined-split recipe end to end: `seqrec preprocess` on generated RecBole benchmark
files (its summary lists every reason), then one epoch of `seqrec train` on the output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recbole_files import random_sequences, write_sequence_benchmark

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_predefined_recipe_end_to_end(tmp_path):
    """configs/recbole-predefined.yaml with its paths pointed at generated files: preprocess via
    the CLI (its summary lists every reason), then one epoch of training on the output."""
    write_sequence_benchmark(tmp_path / "raw", "Scientific",
                             random_sequences(120, 80, seed=9, max_len=12))
    recipe = yaml.safe_load((ROOT / "configs" / "recbole-predefined.yaml").read_text())
    for split, section in recipe["etl"]["sources"].items():
        section["path"] = str(tmp_path / "raw" / Path(section["path"]).name)
    recipe["etl"]["output_dir"] = recipe["train"]["data_dir"] = str(tmp_path / "data")
    recipe["train"].update(output_dir=str(tmp_path / "model"), epochs=1)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = subprocess.run([sys.executable, "-m", "seqrec.cli", "preprocess", "--config", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for split in ("valid", "test"):
        assert any(l.startswith("dropped") and f"{split}: unknown target" in l for l in lines)
        assert any(l.startswith("cut") and f"{split}: unknown items dropped" in l for l in lines)
    assert any("train: shorter than min_len=2" in l for l in lines)
    run = subprocess.run([sys.executable, "-m", "seqrec.cli", "train", "--config", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "model").is_dir()
