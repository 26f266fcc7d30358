"""The exported ensemble on the real tritonserver, queried through the real gRPC client."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from seqrec.client import (AsyncRecommenderClient, RecommendationError, RecommenderClient,
                           build_inputs)
from seqrec.client.control import ModelControl, ModelControlError, read_key
from seqrec.model_repository.export import (ENSEMBLE, MODEL, PREPROCESS, ExportConfig,
                                            export_repository, versions)
from seqrec.model_repository.lookup import ItemLookup
from seqrec.preprocessing.workflow import encode_sessions
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend
from seqrec.training.scoring import Scorer, window_width

from helpers import HISTORY_CAP, MAX_LEN, ROOT
from serving_helpers import offline_top, offline_view

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    with RecommenderClient(server.grpc_url, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def offline(etl, trained):
    return offline_view(etl.output_dir, trained.output_dir)


def assert_served_equals_offline(client, offline, sessions):
    want_ids, want_scores = offline_top(offline, sessions)
    got = [client.recommend(s) for s in sessions[:50]]  # one request per session ...
    for start in range(50, len(sessions), 50):  # ... and padded + lengths batches
        got += client.recommend_batch(sessions[start:start + 50])
    assert len(got) == len(sessions)
    for g, ids, scores in zip(got, want_ids, want_scores):
        assert g.item_ids == ids.tolist()
        np.testing.assert_allclose(g.scores, scores, atol=1e-4, rtol=0)
    assert len({tuple(i) for i in want_ids.tolist()}) > 1  # not one constant answer


def test_repository_layout(repository):
    for name in (ENSEMBLE, PREPROCESS, MODEL):
        assert (repository / name / "config.pbtxt").is_file()
        assert versions(repository / name) == [1]
    pre = repository / PREPROCESS / "1"
    assert (pre / "item_lookup.npz").is_file() and (pre / "lookup.py").is_file()
    assert (repository / MODEL / "1" / "checkpoint" / "model.pt").is_file()
    assert not (repository / MODEL / "1" / "checkpoint" / "trainer_state.pt").exists()
    assert (repository / MODEL / "1" / "scorer.pt2").is_file()  # GPT-2 exports
    assert 'platform: "ensemble"' in (repository / ENSEMBLE / "config.pbtxt").read_text()
    model_cfg = (repository / MODEL / "config.pbtxt").read_text()
    assert "KIND_CPU" in model_cfg and "dynamic_batching" in model_cfg
    assert "allow_ragged_batch: true" in model_cfg


def test_preprocess_model_needs_neither_training_code_nor_nvtabular(repository, offline):
    """The preprocessing step runs from the repository alone: block seqrec, torch and NVTabular
    and encode real sessions with the copied lookup."""
    pre = repository / PREPROCESS / "1"
    code = f"""
import sys
class Block:
    def find_spec(self, name, *a):
        if name.split('.')[0] in ('seqrec', 'torch', 'nvtabular', 'merlin', 'pandas'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(pre)!r})
import numpy as np
from lookup import ItemLookup
lk = ItemLookup.load({str(pre)!r})
vals, offs = lk.encode(np.array({offline['raw'][0][:5].tolist()!r}), np.array([0, 5]))
print(vals.tolist())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    want = encode_sessions(offline["workflow"], [offline["raw"][0][:5]])[0]
    assert json.loads(out.stdout) == want.tolist()


def test_model_step_scores_without_training_code(repository, offline):
    """scorer.pt2 runs with torch alone (seqrec, transformers, NVTabular blocked) and gives the
    top-10 of recommend() on real encoded histories."""
    histories = encode_sessions(offline["workflow"], offline["raw"][:32])
    width = max(len(h) for h in histories)
    padded = [h.tolist() + [0] * (width - len(h)) for h in histories]
    window = window_width(width, Scorer(offline["model"]).keep)  # the [W, 0] the model step sends
    code = f"""
import sys, json
for name in ('seqrec', 'transformers', 'nvtabular', 'merlin', 'pandas'):
    sys.modules[name] = None  # import fails; importlib.util.find_spec (torch probes) says None
import torch
scorer = torch.export.load({str(repository / MODEL / "1" / "scorer.pt2")!r}).module()
items = torch.tensor({padded!r})
ids, scores = scorer(items, torch.zeros((len(items), 1), dtype=torch.int64), torch.empty((10, 0)), None,
                     torch.empty(({window}, 0)))
print(json.dumps([ids.tolist(), scores.tolist()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ids, scores = json.loads(out.stdout.strip().splitlines()[-1])
    want_ids, want_scores = recommend(offline["model"], histories, k=10)
    assert ids == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=0)


def test_compiled_lookup_equals_the_workflow_on_real_sessions(repository, offline):
    """Every real test sequence, plus unknown/negative ids spliced in and sessions longer than
    the workflow's history_cap (truncation happens before unknown ids are dropped)."""
    rng = np.random.default_rng(0)
    raw = offline["raw"]
    sessions = list(raw)
    for s in raw[:200]:  # unknown and negative ids at random places
        pos = rng.integers(0, len(s) + 1, size=3)
        sessions.append(np.insert(s, pos, [999_999, -7, 10**12]))
    for a, b in zip(raw[:100], raw[100:200]):  # longer than history_cap, unknowns near the cut
        long = np.concatenate([a, [-1] * 3, b])
        sessions.append(long)
    sessions += [np.array([-5, 123456789]), np.array([raw[0][0]]), np.array([], dtype=np.int64)]
    sessions.insert(7, np.array([], dtype=np.int64))  # empty rows inside and at the end
    assert max(len(s) for s in sessions) > HISTORY_CAP
    lookup = ItemLookup.load(repository / PREPROCESS / "1")
    lengths = np.array([len(s) for s in sessions])
    values, offsets = lookup.encode(np.concatenate(sessions), np.concatenate([[0], np.cumsum(lengths)]))
    got = np.split(values, offsets[1:-1])
    want = encode_sessions(offline["workflow"], sessions)
    assert len(got) == len(want) == len(sessions)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_served_top10_equals_offline_for_200_real_users(server, client, offline):
    """The core promise: the same raw history gives the same top-10 (original ids) and scores."""
    assert_served_equals_offline(client, offline, offline["raw"][:200])


def test_k_and_exclusions(server, client, offline):
    session = offline["raw"][3]
    ids, scores = offline_top(offline, [session], k=30)
    got = client.recommend(session, k=30)
    assert got.item_ids == ids[0].tolist()
    np.testing.assert_allclose(got.scores, scores[0], atol=1e-4, rtol=0)
    banned = ids[0][[0, 2, 5]].tolist()
    got = client.recommend(session, k=10, exclude=banned + [999_999])
    assert got.item_ids == [i for i in ids[0].tolist() if i not in banned][:10]
    # k larger than the catalogue: the whole catalogue, ranked (documented, not an error).
    catalogue = int((offline["vocab"] >= 0).sum())
    everything = client.recommend(session, k=catalogue + 500)
    assert len(everything.item_ids) == len(set(everything.item_ids)) == catalogue
    assert everything.scores == sorted(everything.scores, reverse=True)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        client.recommend(session, k=0)  # refused before sending ...
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="'k' must be >= 1, got 0"):
        raw.infer(ENSEMBLE, _raw_inputs([[50]], k=0))  # ... and by the server


def _raw_inputs(rows, k=None, dtype="INT64", lengths=None):
    arr = np.array(rows, dtype=np.int64 if dtype == "INT64" else np.int32)
    inputs = [grpcclient.InferInput("item_ids", list(arr.shape), dtype)]
    inputs[0].set_data_from_numpy(arr)
    for name, value in (("k", k), ("lengths", lengths)):
        if value is not None:
            t = np.full((len(rows), 1), value, dtype=np.int64) if np.isscalar(value) else \
                np.array(value, dtype=np.int64).reshape(len(rows), 1)
            inputs.append(grpcclient.InferInput(name, list(t.shape), "INT64"))
            inputs[-1].set_data_from_numpy(t)
    return inputs


def test_empty_session_is_a_clear_error(server, client):
    with pytest.raises(RecommendationError, match="empty session"):
        client.recommend([])
    assert client.is_ready()


def test_unknown_items_are_ignored_or_named(server, client):
    known = client.recommend([50, 172])
    assert client.recommend([50, 999_999, 172, -7]).item_ids == known.item_ids
    with pytest.raises(RecommendationError, match=r"unknown item id\(s\) \[999999, -7\]"):
        client.recommend([999_999, -7])
    assert client.is_ready()


def test_too_long_session_is_truncated_not_rejected(server, client, offline):
    long = np.concatenate(offline["raw"][:8])
    assert len(long) > 4 * MAX_LEN
    ids, _ = offline_top(offline, [long[-MAX_LEN:]])
    assert client.recommend(long).item_ids == ids[0].tolist()


def test_wrong_dtype_and_missing_input_are_rejected(server, client):
    with pytest.raises(ValueError, match="abc"):
        client.recommend([50, "abc"])
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("item_ids", [1, 2], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"50", b"abc"]], dtype=object))
    with pytest.raises(InferenceServerException, match="TYPE_STRING|BYTES|data.type"):
        raw.infer(ENSEMBLE, [tensor])
    with pytest.raises(InferenceServerException, match="INT32.*INT64|INT64.*INT32"):
        raw.infer(ENSEMBLE, _raw_inputs([[50, 172]], dtype="INT32"))
    with pytest.raises(InferenceServerException, match="item_ids"):
        raw.infer(ENSEMBLE, _raw_inputs([[50]], k=5)[1:])  # only k, no item_ids
    with pytest.raises(InferenceServerException, match=r"lengths\[0\] = 9 is outside 0..2"):
        raw.infer(ENSEMBLE, _raw_inputs([[50, 172]], lengths=9))
    assert raw.is_server_ready() and raw.is_model_ready(ENSEMBLE)


def test_bad_row_names_itself_and_good_requests_in_the_same_batch_survive(server, client, offline):
    good = [s for s in offline["raw"][:24]]
    with pytest.raises(RecommendationError, match=r"empty session \(row 1\)"):
        client.recommend_batch([good[0], [], good[1]])
    with pytest.raises(RecommendationError, match=r"row 2\): unknown item id\(s\) \[-3\]"):
        client.recommend_batch([good[0], good[1], [-3]])
    want = [r.item_ids for r in client.recommend_batch(good)]

    def stats():
        s = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
            PREPROCESS, as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))

    async def storm():
        bad = [[], [-1, -2], [999_999]]
        async with AsyncRecommenderClient(server.grpc_url, timeout_s=60) as ac:
            jobs = [ac.recommend(s) for s in good] + [ac.recommend(b) for b in bad * 8]
            return await asyncio.gather(*jobs, return_exceptions=True)

    infer0, exec0 = stats()
    results = asyncio.run(storm())
    infer1, exec1 = stats()
    answers, errors = results[:len(good)], results[len(good):]
    assert [a.item_ids for a in answers] == want  # no good request lost or mixed up
    assert all(isinstance(e, RecommendationError) for e in errors)
    assert exec1 - exec0 < infer1 - infer0  # requests really were batched together
    assert client.is_ready()


def test_one_request_answers_each_row_on_its_own(server, client, offline):
    """Good rows mixed with an empty row, an unknown-only row and a negative-id row in ONE
    request: the good rows get their offline answers, each bad row an error naming it and the
    documented filler (ids -1, scores NaN); a request-level problem still fails the request."""
    good = list(offline["raw"][:4])
    sessions = [good[0], [], good[1], [999_999, 888_888], good[2], [-3, -1], good[3],
                np.concatenate([[999_999], good[0], [-7]])]  # some unknown ids: still good
    bad = {1: r"empty session \(row 1\)", 3: r"no known item.*\(row 3\).*\[999999, 888888\]",
           5: r"no known item.*\(row 5\).*\[-3, -1\]"}
    want_ids, want_scores = offline_top(offline, [s for i, s in enumerate(sessions) if i not in bad])
    got = client.recommend_batch(sessions, errors="return")
    assert len(got) == len(sessions)
    answered = [g for i, g in enumerate(got) if i not in bad]
    for g, ids, scores in zip(answered, want_ids, want_scores):
        assert g.item_ids == ids.tolist()
        np.testing.assert_allclose(g.scores, scores, atol=1e-4, rtol=0)
    for row, pattern in bad.items():
        assert isinstance(got[row], RecommendationError) and got[row].row == row
        assert re.search(pattern, str(got[row])), str(got[row])
    with pytest.raises(RecommendationError, match=r"empty session \(row 1\)") as raised:
        client.recommend_batch(sessions)  # errors="raise": the first bad row
    assert raised.value.row == 1

    # The raw tensors: "" for a good row, the filler for a bad one.
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    result = raw.infer(ENSEMBLE, build_inputs(sessions))
    errors = result.as_numpy("row_errors").reshape(-1)
    assert [e != b"" for e in errors] == [i in bad for i in range(len(sessions))]
    ids, scores = result.as_numpy("top_item_ids"), result.as_numpy("top_scores")
    rows = sorted(bad)
    assert (ids[rows] == -1).all() and np.isnan(scores[rows]).all()
    assert (ids[[i for i in range(len(sessions)) if i not in bad]] >= 0).all()

    # k and per-row exclusions: a good row answers as if sent alone.
    exclude = [want_ids[0][:3].tolist(), [], want_ids[1][:2].tolist()]
    mixed = client.recommend_batch([good[0], [-9], good[1]], k=7, exclude=exclude, errors="return")
    for row in (0, 2):
        alone = client.recommend(sessions[row], k=7, exclude=exclude[row])
        assert mixed[row].item_ids == alone.item_ids
        np.testing.assert_allclose(mixed[row].scores, alone.scores, atol=1e-4, rtol=0)
    assert isinstance(mixed[1], RecommendationError) and "(row 1)" in str(mixed[1])

    async def async_rows():
        async with AsyncRecommenderClient(server.grpc_url, timeout_s=60) as ac:
            return (await ac.recommend_batch([[], [-1]], errors="return"),
                    await ac.recommend_batch(sessions[:3], errors="return"))

    all_bad, first = asyncio.run(async_rows())
    assert [e.row for e in all_bad] == [0, 1]  # a request of bad rows only: still per row
    assert first[0].item_ids == got[0].item_ids and first[2].item_ids == got[2].item_ids
    assert isinstance(first[1], RecommendationError)
    with pytest.raises(ValueError, match="errors must be one of"):
        client.recommend_batch(sessions, errors="ignore")
    # Problems of the request itself still fail it as a whole, even with bad rows inside.
    with pytest.raises(InferenceServerException, match="'k' must be >= 1, got 0"):
        raw.infer(ENSEMBLE, _raw_inputs([[50], [-3]], k=0))
    with pytest.raises(InferenceServerException, match=r"lengths\[1\] = 5 is outside 0..1"):
        raw.infer(ENSEMBLE, _raw_inputs([[50], [-3]], lengths=[1, 5]))
    outputs = {o["name"]: o["datatype"] for o in client.model_metadata()["outputs"]}
    assert outputs == {"top_item_ids": "INT64", "top_scores": "FP32", "row_errors": "BYTES"}
    assert client.is_ready()


def test_model_metadata_and_health(client):
    meta = client.model_metadata()
    assert meta["name"] == ENSEMBLE
    assert {i["name"] for i in meta["inputs"]} == {"item_ids", "lengths", "k", "exclude_item_ids"}
    assert client.is_live() and client.is_ready()


@contextlib.contextmanager
def seqrec_serve_explicit(repo: Path, key_file: Path):
    """`seqrec serve --model-control explicit` as a user runs it; yields its gRPC address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqrec.cli", "serve", "--config", str(ROOT / "configs/ml-100k.yaml"),
         "--repository", str(repo), "--model-control", "explicit", "--key-file", str(key_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # ends if the server fails to start (the CLI exits)
            lines.append(line)
            if line.strip().startswith("gRPC"):
                break
        assert lines and lines[-1].strip().startswith("gRPC"), "".join(lines)
        yield lines[-1].split()[-1]
    finally:
        proc.send_signal(signal.SIGTERM)  # the CLI stops tritonserver cleanly
        proc.communicate(timeout=60)


def test_versions_reload_faults_and_unload_with_explicit_model_control(
        tmp_path, etl, trained, offline):
    """Export twice -> version 2 served after a reload without restart and equal to offline; a
    corrupt or incomplete version 3 fails to load with a clear message and version 2 keeps
    serving; after an unload, a request gets a clear error and the server stays ready."""
    cfg = ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                       repository=str(tmp_path / "repo"))
    repo = export_repository(cfg)
    key_file = tmp_path / "key"
    with seqrec_serve_explicit(repo, key_file) as url, \
            RecommenderClient(url, timeout_s=60, retries=0) as c, \
            ModelControl(url, key=read_key(key_file)) as ctl:
        assert ctl.is_ready(MODEL, 1)
        export_repository(cfg)
        assert versions(repo / MODEL) == [1, 2]
        reload = subprocess.run([sys.executable, "-m", "seqrec.cli", "model", "load", ENSEMBLE,
                                 "--url", url, "--key-file", str(key_file)],
                                capture_output=True, text=True, timeout=180)
        assert reload.returncode == 0, reload.stderr  # reloads the changed members too
        assert ctl.is_ready(MODEL, 2) and ctl.is_ready(PREPROCESS, 2)
        assert ctl.is_ready(MODEL, 1)  # the previous export stays loaded beside the new one
        assert_served_equals_offline(c, offline, offline["raw"][200:400])

        export_repository(cfg)
        (repo / MODEL / "3" / "scorer.pt2").write_bytes(b"not a program")  # corrupt
        with pytest.raises(ModelControlError,
                           match=r"3/scorer\.pt2 is not a readable exported program"):
            ctl.load(MODEL)
        assert ctl.is_ready(MODEL, 2) and not ctl.is_ready(MODEL, 3)
        (repo / MODEL / "3" / "checkpoint" / "config.json").unlink()  # missing
        with pytest.raises(ModelControlError, match=r"3/checkpoint/config\.json not found"):
            ctl.load(MODEL)
        assert ctl.is_ready(MODEL, 2) and not ctl.is_ready(MODEL, 3)
        assert c.is_ready()
        assert c.recommend(offline["raw"][0]).item_ids  # still served by version 2

        ctl.unload(ENSEMBLE)
        with pytest.raises(RecommendationError, match=ENSEMBLE):
            c.recommend([50, 172])
        assert c._client.is_server_ready()
        with pytest.raises(ModelControlError, match=r"'seqrec_model' whose required version 3"):
            ctl.load(ENSEMBLE)  # the export on disk names the broken version
        for name in ("scorer.pt2", "checkpoint/config.json"):  # version 3 repaired
            shutil.copy(repo / MODEL / "2" / name, repo / MODEL / "3" / name)
        ctl.load(ENSEMBLE)  # and back, still without a restart
        assert c.recommend(offline["raw"][0]).item_ids


def test_bidirectional_model_served_equals_offline(tmp_path, etl, offline):
    """A BERT model trained with MLM scores with a mask appended after the history; served
    answers must still equal offline recommend() for 200 real sessions."""
    from seqrec.model_repository.export import ExportConfig, export_repository
    from seqrec.model_repository.server import TritonServer
    from seqrec.training.trainer import TrainConfig, train

    trained = train(TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path / "bert"), epochs=2,
                                model={"backbone": "bert", "task": "mlm"}), progress=False)
    repo = export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                                          repository=str(tmp_path / "repo")))
    bert = dict(offline, model=load_checkpoint(trained.output_dir))
    assert bert["model"].cfg.task == "mlm"
    with TritonServer(repo) as srv, RecommenderClient(srv.grpc_url, timeout_s=30) as bclient:
        assert_served_equals_offline(bclient, bert, bert["raw"][:200])
        # the exported program appends the mask itself; bad rows are skipped there too
        assert (repo / MODEL / "1" / "scorer.pt2").is_file()
        ids, scores = offline_top(bert, bert["raw"][:2])
        mixed = bclient.recommend_batch([bert["raw"][0], [-4], bert["raw"][1]], errors="return")
        assert [mixed[0].item_ids, mixed[2].item_ids] == ids.tolist()
        np.testing.assert_allclose([mixed[0].scores, mixed[2].scores], scores, atol=1e-4, rtol=0)
        assert isinstance(mixed[1], RecommendationError) and mixed[1].row == 1
