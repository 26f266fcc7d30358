"""The predefined-split recipe end to end: `seqrec preprocess` on generated RecBole benchmark
files (its summary lists every reason), one epoch of `seqrec train` on the output, then
`seqrec export` of the model."""
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
    the CLI (its summary lists every reason), one epoch of training on the output, and the
    export into the recipe's <workdir>/model_repository: version 1 of the ensemble and both
    members, one export (the same fingerprint), the recipe's top_k, the scorer as a program."""
    from seqrec.client.contract import ENSEMBLE, FINGERPRINT_FILE, MODEL, PREPROCESS
    from seqrec.model_repository.publish import read_config, versions
    from seqrec.model_repository.scorer import SCORER_FILE

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
    run = subprocess.run([sys.executable, "-m", "seqrec.cli", "export", "--config", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    repo = tmp_path / recipe["workdir"] / "model_repository"
    assert run.stdout.startswith(f"model repository: {Path(recipe['workdir']) / 'model_repository'} (version 1)")
    assert "fallback" not in run.stderr  # the scorer exported as a program
    assert (repo / MODEL / "1" / SCORER_FILE).is_file()
    assert versions(repo / ENSEMBLE) == versions(repo / PREPROCESS) == versions(repo / MODEL) == [1]
    steps = {s.model_name: s.model_version for s in read_config(repo / ENSEMBLE).ensemble_scheduling.step}
    assert steps == {PREPROCESS: 1, MODEL: 1}
    for member in (PREPROCESS, MODEL):
        assert list(read_config(repo / member).version_policy.specific.versions) == [1]
    assert (repo / PREPROCESS / "1" / FINGERPRINT_FILE).read_text() == \
        (repo / MODEL / "1" / FINGERPRINT_FILE).read_text()
    parameters = read_config(repo / MODEL).parameters
    assert parameters["top_k"].string_value == str(recipe["export"]["top_k"])
    assert parameters["scorer"].string_value == SCORER_FILE
