"""`incremental.serve.export`: the export options of every version `seqrec incremental --serve`
publishes, checked by the export's strict loader before any training, and the keys the run sets
itself refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from seqrec.config import build
from seqrec.errors import SeqrecError
from seqrec.model_repository.continuous import CHECKPOINT_DIR, publish_config
from seqrec.training.incremental import IncrementalConfig


def _cfg(tmp_path, **serve):
    return build(IncrementalConfig, {"data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "out"),
                                     "eval_exclude_seen": True, "serve": serve}, at="incremental")


def test_export_options_reach_every_published_version(tmp_path):
    cfg = _cfg(tmp_path, export={"compile_scorer": True, "instances": 2, "top_k": 20})
    export = publish_config(cfg, tmp_path / "repo")
    assert (export.compile_scorer, export.instances, export.top_k) == (True, 2, 20)
    # what the run decides: its data, the window checkpoint, the repository, the seen policy
    assert export.data_dir == str(tmp_path / "data")
    assert export.model_dir == str(Path(tmp_path / "out") / CHECKPOINT_DIR)
    assert export.repository == str(tmp_path / "repo") and export.exclude_seen is True
    assert publish_config(_cfg(tmp_path), tmp_path / "repo").compile_scorer is False  # the defaults


def test_unknown_and_run_owned_export_keys_are_refused_by_name(tmp_path):
    with pytest.raises(SeqrecError, match=r"incremental\.serve\.export.*compile_scorr"):
        publish_config(_cfg(tmp_path, export={"compile_scorr": True}), tmp_path / "repo")
    with pytest.raises(SeqrecError, match=r"incremental\.serve\.export\.repository: set by the run"):
        publish_config(_cfg(tmp_path, export={"repository": "elsewhere"}), tmp_path / "repo")
