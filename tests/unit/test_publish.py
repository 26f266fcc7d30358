"""Publishing versions: manifests, and which previous member version stays in the policy."""
from __future__ import annotations

from pathlib import Path

from seqrec.model_repository.publish import (MANIFEST, intact, publish_export, read_config,
                                             write_manifest)

MEMBERS, ENSEMBLE = ("pre", "model"), "ens"
CONFIGS = {
    "pre": 'name: "pre" backend: "python"',
    "model": 'name: "model" backend: "python"',
    "ens": 'name: "ens" platform: "ensemble" ensemble_scheduling { step { model_name: "pre" '
           'model_version: -1 } step { model_name: "model" model_version: -1 } }',
}


def publish(repo: Path, tmp: Path, payload: str) -> int:
    staging = tmp / f"staging-{payload}"
    for m in (*MEMBERS, ENSEMBLE):
        (staging / m).mkdir(parents=True)
    for m in MEMBERS:
        (staging / m / "weights.bin").write_text(payload * 100)
        (staging / m / "sub").mkdir()
        (staging / m / "sub" / "vocab.npy").write_text(payload)
    return publish_export(repo, staging, CONFIGS, members=MEMBERS, ensemble=ENSEMBLE)


def policy(repo: Path, m: str) -> list[int]:
    return list(read_config(repo / m).version_policy.specific.versions)


def test_manifest_detects_changed_missing_and_added_files(tmp_path):
    folder = tmp_path / "1"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.pt2").write_bytes(b"x" * 1000)
    (folder / "sub" / "b.json").write_text("{}")
    write_manifest(folder)
    assert (folder / MANIFEST).is_file() and intact(folder)
    (folder / "__pycache__").mkdir()  # what the server writes beside model.py does not count
    (folder / "__pycache__" / "runtime.pyc").write_bytes(b"c")
    assert intact(folder)
    (folder / "a.pt2").write_bytes(b"x" * 500)  # truncated
    assert not intact(folder)
    (folder / "a.pt2").write_bytes(b"y" * 1000)  # same size, other bytes
    assert not intact(folder)
    (folder / "a.pt2").write_bytes(b"x" * 1000)
    assert intact(folder)
    (folder / "sub" / "b.json").unlink()
    assert not intact(folder)
    (folder / "sub" / "b.json").write_text("{}")
    (folder / "extra").write_text("?")
    assert not intact(folder)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    assert intact(legacy)  # exported before manifests: trusted as it is


def test_a_damaged_previous_version_is_not_kept_beside_the_new_one(tmp_path):
    repo = tmp_path / "repo"
    assert publish(repo, tmp_path, "a") == 1
    assert publish(repo, tmp_path, "b") == 2
    assert policy(repo, "model") == [1, 2]
    (repo / "model" / "2" / "weights.bin").write_text("b")  # damaged after publishing
    # version 3 keeps the newest intact export the serving ensemble can be on: 1, for every
    # member (the ensemble serving 1 needs pre 1 too)
    assert publish(repo, tmp_path, "c") == 3
    assert policy(repo, "model") == [1, 3] and policy(repo, "pre") == [1, 3]
    steps = {s.model_name: s.model_version for s in read_config(repo / ENSEMBLE).ensemble_scheduling.step}
    assert steps == {"pre": 3, "model": 3}
    assert publish(repo, tmp_path, "d") == 4
    assert policy(repo, "model") == [3, 4]  # 3 is intact: the usual pair again
