"""`seqrec export` and `seqrec preprocess` killed (SIGKILL) between every two file operations:
the repository / data folder is always the old or the new complete output, a server started on
a half-published repository serves the old export whole, and the next run cleans up."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqrec.model_repository.export import ENSEMBLE, MODEL, PREPROCESS
from seqrec.model_repository.publish import read_config, versions
from seqrec.preprocessing.staging import KILL_ENV
from serving_helpers import offline_top, offline_view

pytestmark = pytest.mark.slow
KILLED = -9


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _served(repo: Path, exports: dict[str, dict]) -> str | None:
    """Which complete export ("old"/"new", keys of `exports`: the member folders' files) a server
    would serve from `repo` as it is on disk (None: no ensemble yet), after checking that it is
    whole: the ensemble names one version of every member, each member loads it, every version
    a member loads is a complete export, and nothing else lies in the repository root."""
    if not repo.exists():
        return None
    assert not [p.name for p in repo.iterdir() if p.name.startswith(".")], "hidden folders"
    ens = read_config(repo / ENSEMBLE)
    if ens is None:
        assert not (repo / ENSEMBLE).exists(), "an ensemble folder without a config"
        return None
    assert versions(repo / ENSEMBLE), "an ensemble without a version folder"
    named = {s.model_name: s.model_version for s in ens.ensemble_scheduling.step}
    assert set(named) == {PREPROCESS, MODEL} and len(set(named.values())) == 1, named
    version = named[MODEL]
    for m in (PREPROCESS, MODEL):
        loaded = list(read_config(repo / m).version_policy.specific.versions)
        assert version in loaded, (m, loaded, version)
        for v in loaded:
            files = _files(repo / m / str(v))
            assert any(files == e[m] for e in exports.values()), f"{m}/{v} is not complete"
    which = [name for name, e in exports.items()
             if all(_files(repo / m / str(version)) == e[m] for m in (PREPROCESS, MODEL))]
    assert len(which) == 1, "the named versions are not one export"
    return which[0]


def _recipe(tmp_path: Path, etl_dir: str, model_dir: str, repo: Path) -> Path:
    path = tmp_path / f"recipe-{Path(model_dir).name}.yaml"
    path.write_text(json.dumps({"export": {"data_dir": etl_dir, "model_dir": model_dir,
                                           "repository": str(repo)}}))  # JSON is YAML
    return path


def _export(recipe: Path, kill_at: int | None = None) -> int:
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    proc = subprocess.run([sys.executable, "-m", "seqrec.cli", "export", "--config", str(recipe)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, KILLED), proc.stderr[-3000:]
    return proc.returncode


@pytest.fixture(scope="module")
def second_model(tmp_path_factory, etl):
    """Another model for the same data: its answers differ from the session model's."""
    from seqrec.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("model2")
    return train(TrainConfig(data_dir=etl.output_dir, output_dir=str(out), epochs=1, seed=7),
                 progress=False)


PUBLISH = """
import sys
from pathlib import Path
from seqrec.model_repository.publish import publish_export
repo, staging = Path(sys.argv[1]), Path(sys.argv[2])
configs = {m: (staging / (m + ".pbtxt")).read_text() for m in sys.argv[3:]}
publish_export(repo, staging, configs, members=tuple(sys.argv[3:-1]), ensemble=sys.argv[-1])
"""


def _publish(repo: Path, ref: Path, where: Path, kill_at: int) -> int:
    """Publish the export in `ref` into `repo` as `seqrec export` does after staging it, in a
    process that SIGKILLs itself at step `kill_at` (counting from the first after staging)."""
    staging = where / ".repo.staging-test"  # a dead run's staging folder, for the next run
    staging.mkdir()
    for m in (PREPROCESS, MODEL, ENSEMBLE):
        shutil.copytree(ref / m / "1", staging / m)
        shutil.copy(ref / m / "config.pbtxt", staging / f"{m}.pbtxt")
    env = dict(os.environ, **{KILL_ENV: str(kill_at)})
    proc = subprocess.run([sys.executable, "-c", PUBLISH, str(repo), str(staging), PREPROCESS,
                           MODEL, ENSEMBLE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, KILLED), proc.stderr[-3000:]
    return proc.returncode


def test_export_killed_at_every_step_leaves_old_or_new(tmp_path, etl, trained, second_model):
    from seqrec.client import RecommenderClient
    from seqrec.model_repository.server import TritonServer

    refs = {}
    for name, model in (("old", trained), ("new", second_model)):  # complete exports
        ref = tmp_path / f"ref-{name}"
        assert _export(_recipe(tmp_path, etl.output_dir, model.output_dir, ref)) == 0
        refs[name] = ref
    exports = {n: {m: _files(r / m / "1") for m in (PREPROCESS, MODEL)} for n, r in refs.items()}
    assert exports["old"] != exports["new"]

    # the first publish into an empty place, killed at every step: nothing, or the export whole
    k = 1
    while True:
        where = tmp_path / f"first{k}"
        where.mkdir()
        code = _publish(where / "repo", refs["old"], where, kill_at=k)
        assert _served(where / "repo", exports) in (None, "old"), f"killed at step {k}"
        if code == 0:
            break
        k += 1
    assert _served(where / "repo", exports) == "old" and k > 3  # 3 models moved in
    base = where / "repo"

    # the new export over the old one, killed at every step: old or new, whole
    half, k = None, 1
    while True:
        where = tmp_path / f"kill{k}"
        shutil.copytree(base, where / "repo")
        code = _publish(where / "repo", refs["new"], where, kill_at=k)
        served = _served(where / "repo", exports)
        assert served in ("old", "new"), f"killed at step {k}"
        if code == 0:
            assert served == "new"
            break
        members = list(read_config(where / "repo" / MODEL).version_policy.specific.versions)
        if served == "old" and members == [1, 2]:
            half = where / "repo"  # members load 1 and 2, the ensemble still names 1
        k += 1
    assert k > 5 and half is not None

    # `seqrec export` killed while it stages (from outside, and at its first step): the
    # repository is untouched; the next run removes the dead staging folders and publishes
    repo = tmp_path / "kill1" / "repo"  # a state a kill left: the killed publish's staging too
    recipe = _recipe(tmp_path, etl.output_dir, second_model.output_dir, repo)
    def dead() -> set:
        return {p for p in repo.parent.iterdir() if p.name.startswith(".repo.staging")}

    assert _export(recipe, kill_at=1) == KILLED
    earlier = dead()
    assert len(earlier) == 1  # this run's (it removed the killed publish's when it started)
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "export", "--config", str(recipe)])
    deadline = time.monotonic() + 300
    while dead() & earlier or not dead():  # until it removed the dead one and staged its own
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.kill()  # while it stages (checking the scorer takes seconds)
    proc.wait()
    # it removed the two dead ones when it started, and left its own
    assert len(dead()) == 1 and not dead() & earlier, dead()
    assert _served(repo, exports) in ("old", "new")
    assert _export(recipe) == 0
    assert _served(repo, exports) == "new"
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".repo.staging")]

    # a server started on the half-published repository serves the old export whole: its
    # answers are the old model's offline ones (served = offline is what the serving tests
    # check), not the new one's
    sessions = [[50, 172, 133], [1, 2, 3, 4], [300, 12], [7, 8, 9]]
    offline = {}
    for name, model in (("old", trained), ("new", second_model)):
        ids, scores = offline_top(offline_view(etl.output_dir, model.output_dir), sessions)
        offline[name] = (ids.tolist(), scores)
    assert offline["old"][0] != offline["new"][0], "the two models must answer differently"
    with TritonServer(half) as srv, RecommenderClient(srv.grpc_url, timeout_s=60) as c:
        served = c.recommend_batch(sessions)
    assert [r.item_ids for r in served] == offline["old"][0]
    np.testing.assert_allclose([r.scores for r in served], offline["old"][1], atol=1e-4, rtol=0)


def _etl(recipe: Path, kill_at: int | None = None) -> int:
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    proc = subprocess.run([sys.executable, "-m", "seqrec.cli", "preprocess", "--config",
                           str(recipe)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, KILLED), proc.stderr[-3000:]
    return proc.returncode


def test_preprocess_killed_at_every_step_leaves_old_or_new(tmp_path):
    """Two different inputs into one data folder: killed anywhere, data/ is one of the two
    complete outputs (never missing), and the next run removes what the killed one left."""
    rng = np.random.default_rng(0)
    recipes, outputs = {}, {}
    for name, n_items in (("old", 30), ("new", 40)):
        raw = tmp_path / f"{name}.csv"
        pd.DataFrame({"user_id": rng.integers(0, 50, 2000), "item_id": rng.integers(0, n_items, 2000),
                      "timestamp": np.arange(2000)}).to_csv(raw, index=False)
        recipes[name] = tmp_path / f"etl-{name}.yaml"
        recipes[name].write_text(json.dumps({"etl": {
            "output_dir": str(tmp_path / "data"), "max_len": 20,
            "source": {"format": "generic", "path": str(raw),
                       "columns": {"user_id": "user_id", "item_id": "item_id",
                                   "timestamp": "timestamp"}}}}))
    def content() -> tuple:
        """The file names and the splits' rows (the saved workflow's files carry run ids)."""
        data = tmp_path / "data"
        names = tuple(sorted(str(p.relative_to(data)) for p in data.rglob("*")))
        return names, tuple(pd.read_parquet(data / f"{s}.parquet").to_json()
                            for s in ("train", "valid", "test"))

    for name in ("old", "new"):
        assert _etl(recipes[name]) == 0
        outputs[name] = content()
    assert outputs["old"] != outputs["new"]

    def which() -> str:
        (match,) = [n for n, c in outputs.items() if c == content()]
        return match

    # data/ now holds "new"; alternate, killing each run one step later
    k, current = 1, "new"
    while True:
        target = "old" if current == "new" else "new"
        code = _etl(recipes[target], kill_at=k)
        assert (tmp_path / "data").is_dir(), f"data/ missing after a kill at step {k}"
        got = which()
        if code == 0:
            assert got == target
            break
        assert got in (current, target), f"killed at step {k}"
        current, k = got, k + 1
    assert k > 2
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not hidden, hidden
