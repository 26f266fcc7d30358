"""Publish a new export into a Triton model repository so that a kill at any moment leaves
either the old or the new complete export, and a server starts on either.

The export is written in a locked staging folder BESIDE the repository (Triton loads every
folder of the repository root, so nothing unfinished may appear there; a dead run's staging
folder is removed by the next run, preprocessing/staging.py). Publishing version N then does,
under an exclusive lock on the repository:
  1. configs of an older layout (policy `latest`, ensemble steps on version -1) are pinned to
     the versions they serve now;
  2. each member's version folder N is moved in: invisible, the member's policy does not name N;
  3. each member's config is replaced: policy `specific [previous, N]`, the version the current
     ensemble names and the new one;
  4. the ensemble's config, whose steps name version N of every member, is replaced: the one
     switch from the old export to the new; then its (empty) version folder N is moved in.
A model new to the repository is moved in whole (config and version), members before the
ensemble. Every step is one rename. Keeping the previous member versions loaded is what lets the
old ensemble answer while the new one loads (`seqrec model load` loads the members first and
the ensemble only when every member's new version is ready).

The previous version kept is the newest export, at most the one the ensemble names, whose
member folders all still match the manifests written when they were published (MANIFEST: size
and sha256 of every file). A member version damaged after publishing never loads, and Triton
loads a model's versions all or nothing: kept in the policy, it would stop every later export
from loading. The members are kept as a unit: the ensemble still serving is then the older one,
and dropping any of its members' versions would unload it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from seqrec.preprocessing.staging import step

__all__ = ["publish_export", "versions", "served_versions", "read_config", "CONFIG", "MANIFEST",
           "write_manifest", "intact"]

CONFIG = "config.pbtxt"
MANIFEST = "manifest.json"  # in each member version folder: {relative path: [bytes, sha256]}
LEGACY_STAGING = ".export-v"  # staging folders older exports left inside the repository root


def versions(model_dir: Path) -> list[int]:
    """Numbered version folders of one model in a repository, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def read_config(model_dir: Path) -> mc.ModelConfig | None:
    path = model_dir / CONFIG
    if not path.is_file():
        return None
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _write_config(model_dir: Path, config: mc.ModelConfig) -> None:
    tmp = model_dir / (CONFIG + ".tmp")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, model_dir / CONFIG)
    step()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                  and "__pycache__" not in p.parts)


def write_manifest(folder: Path) -> None:
    """Record size and sha256 of every file of a version folder (before it is published)."""
    entries = {str(p.relative_to(folder)): [p.stat().st_size, _digest(p)] for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=0, sort_keys=True))


def intact(folder: Path) -> bool:
    """The version folder's files are those its manifest lists, unchanged (sizes first: cheap).
    A folder without a manifest (exported before manifests) counts as intact."""
    path = folder / MANIFEST
    if not path.is_file():
        return folder.is_dir()
    try:
        entries = json.loads(path.read_text())
    except ValueError:
        return False
    files = {str(p.relative_to(folder)): p for p in _files(folder)}
    if set(files) != set(entries):
        return False
    if any(files[n].stat().st_size != size for n, (size, _) in entries.items()):
        return False
    return all(_digest(files[n]) == digest for n, (_, digest) in entries.items())


def _previous(repository: Path, members, current: dict[str, int]) -> dict[str, int]:
    """{member: version to keep loaded beside the new one}. The members of one export share its
    version number and are one unit: keep the newest version, at most the one the current
    ensemble names, whose folders are intact for every member, so the ensemble that serves
    (which may be older than the one on disk, when loading that one failed) keeps all of its
    members. An older layout naming different versions per member: each member on its own."""
    named = set(current.values())
    if len(named) == 1 and set(current) == set(members):
        for v in sorted({v for m in members for v in versions(repository / m)}, reverse=True):
            if v <= min(named) and all(intact(repository / m / str(v)) for m in members):
                return {m: v for m in members}
        return {}
    out = {}
    for m, n in current.items():
        v = next((v for v in reversed(versions(repository / m)) if v <= n
                  and intact(repository / m / str(v))), None)
        if v is not None:
            out[m] = v
    return out


@contextmanager
def _locked(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one publish at a time: version numbers stay unique
        yield
    finally:
        os.close(fd)


def served_versions(repository: Path, ensemble: str, members) -> dict[str, int]:
    """{member: version} the ensemble's config on disk names (an older layout's -1: the member's
    newest folder, which its `latest` policy serves); empty without an ensemble."""
    config = read_config(repository / ensemble)
    if config is None:
        return {}
    named = {s.model_name: s.model_version for s in config.ensemble_scheduling.step}
    out = {}
    for m in members:
        v = named.get(m, -1)
        if v == -1:
            v = (versions(repository / m) or [None])[-1]
        if v is not None and (repository / m / str(v)).is_dir():
            out[m] = int(v)
    return out


def _pin_older_layout(repository: Path, ensemble: str, members, current: dict[str, int]) -> None:
    """Configs that serve "the newest folder" would pick up a version folder the moment it is
    moved in: pin them first to what they serve now (members, then the ensemble)."""
    for m in members:
        config = read_config(repository / m)
        if config is None or config.version_policy.WhichOneof("policy_choice") == "specific":
            continue
        if m not in current:
            continue
        config.version_policy.specific.versions[:] = [current[m]]
        _write_config(repository / m, config)
    config = read_config(repository / ensemble)
    if config is not None and any(s.model_version == -1 and s.model_name in current
                                  for s in config.ensemble_scheduling.step):
        for s in config.ensemble_scheduling.step:
            if s.model_version == -1 and s.model_name in current:
                s.model_version = current[s.model_name]
        _write_config(repository / ensemble, config)


def _move_in(repository: Path, staging: Path, name: str, version: int,
             config: mc.ModelConfig) -> bool:
    """Move staging/<name> in as version `version`. A model new to the repository goes in whole
    (True); for an existing one only the version folder moves, its config is left to the caller."""
    target = repository / name
    if read_config(target) is None:
        whole = staging / ".whole" / name
        whole.mkdir(parents=True)
        (staging / name).rename(whole / str(version))
        (whole / CONFIG).write_text(text_format.MessageToString(config))
        if target.exists():  # a folder without a config: nothing Triton could have served
            shutil.rmtree(target)
        whole.rename(target)
        step()
        return True
    (staging / name).rename(target / str(version))
    step()
    return False


def publish_export(repository: str | Path, staging: Path, configs: dict[str, str],
                   members: tuple[str, ...], ensemble: str) -> int:
    """Publish staging/<model> (one version folder per model, complete) with `configs` (config
    text per model) as the next version of every model; returns that version."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    with _locked(repository):
        for leftover in repository.glob(LEGACY_STAGING + "*"):
            shutil.rmtree(leftover, ignore_errors=True)  # it would stop the server starting
        names = (*members, ensemble)
        version = 1 + max([0] + [v for m in names for v in versions(repository / m)])
        current = served_versions(repository, ensemble, members)
        _pin_older_layout(repository, ensemble, members, current)

        new = {m: text_format.Parse(configs[m], mc.ModelConfig()) for m in names}
        previous = _previous(repository, members, current)
        for m in members:
            write_manifest(staging / m)
            keep = sorted({version, previous.get(m, version)})
            new[m].version_policy.specific.versions[:] = keep
        for s in new[ensemble].ensemble_scheduling.step:
            if s.model_name in members:
                s.model_version = version

        existing = [m for m in members if not _move_in(repository, staging, m, version, new[m])]
        for m in existing:
            _write_config(repository / m, new[m])
        if read_config(repository / ensemble) is None:
            _move_in(repository, staging, ensemble, version, new[ensemble])
        else:
            _write_config(repository / ensemble, new[ensemble])  # the switch
            (staging / ensemble).rename(repository / ensemble / str(version))
            step()
    return version
