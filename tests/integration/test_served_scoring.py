"""The one scorer on the real server, compiled by AOTInductor: `exclude_seen` over the whole sent
history when the model reads a shorter window than the workflow keeps, request errors as INVALID_ARGUMENT, 64 rows x
100k excluded ids under a memory bound, and an export that cannot build the program."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from seqrec.client import RecommenderClient
from seqrec.client import contract as C
from seqrec.model_repository.export import ExportConfig, export_repository, scorer_fallback
from seqrec.model_repository.lookup import ItemLookup
from seqrec.model_repository.server import TritonServer
from seqrec.preprocessing.workflow import encode_sessions
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend
from serving_helpers import offline_view

pytestmark = pytest.mark.slow
WINDOW = 20  # the model's max_len, below the workflow's


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, ml100k):
    """A GPT-2 trained on sessions cut to WINDOW items (same interactions, so the same vocabulary
    as the conftest workflow, which keeps more)."""
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl
    from seqrec.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("short")
    etl = run_etl(ETLConfig(output_dir=str(root / "data"), max_len=WINDOW), interactions=ml100k)
    return train(TrainConfig(data_dir=etl.output_dir, output_dir=str(root / "model"), epochs=1,
                             model={"d_model": 32, "n_heads": 2}), progress=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory, etl, short_model):
    repo = export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=short_model.output_dir,
                                          repository=str(tmp_path_factory.mktemp("r") / "repo"),
                                          exclude_seen=True, compile_scorer=True))
    # served by the AOTInductor build of the program (what bench/serving.py measures)
    assert (Path(repo) / C.MODEL / "1" / "scorer_compiled.pt2").is_file()
    with TritonServer(repo) as srv:
        yield srv


@pytest.fixture(scope="module")
def offline(etl, short_model):
    return offline_view(etl.output_dir, short_model.output_dir)


def test_exclude_seen_covers_the_whole_sent_history(served, offline):
    model = offline["model"]
    assert model.cfg.max_len == WINDOW
    raw = [r for r in offline["raw"] if len(r) > 2 * WINDOW][:100]
    encoded = encode_sessions(offline["workflow"], raw)
    assert max(len(h) for h in encoded) > WINDOW  # the workflow keeps more than the model reads
    want, want_scores = recommend(model, encoded, k=10, exclude_seen=True)
    with RecommenderClient(served.grpc_url, timeout_s=60) as client:
        got = client.recommend_batch(raw[:50]) + [client.recommend(s) for s in raw[50:]]
    for g, ids, scores, history in zip(got, offline["vocab"][want], want_scores, raw):
        assert g.item_ids == ids.tolist()
        np.testing.assert_allclose(g.scores, scores, atol=1e-4, rtol=0)
        assert not set(g.item_ids) & set(history.tolist())  # nothing the user sent comes back
    # Excluding only the model's window would answer differently: the test sees the difference.
    window_only, _ = recommend(model, encoded, k=10,
                               exclude=[h[-WINDOW:] for h in encoded])
    assert (window_only != want).any()


def status_of(call) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return f"{raised.value.status()} {raised.value.message()}"


def raw_input(name, array, dtype="INT64"):
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_request_errors_are_invalid_argument(served):
    raw = grpcclient.InferenceServerClient(served.grpc_url)
    one = np.array([[50, 172]], dtype=np.int64)
    cases = {
        "missing input 'item_ids'": [raw_input("k", np.array([[3]], dtype=np.int64))],
        "'k' must be >= 1, got 0": [raw_input("item_ids", one), raw_input("k", np.array([[0]], dtype=np.int64))],
        r"lengths[0] = 9 is outside 0..2": [raw_input("item_ids", one),
                                            raw_input("lengths", np.array([[9]], dtype=np.int64))],
        f"the limit is {C.MAX_ITEM_IDS_PER_ROW}": [
            raw_input("item_ids", np.full((1, C.MAX_ITEM_IDS_PER_ROW + 1), 50, dtype=np.int64))],
        f"the limit is {C.MAX_EXCLUDED_PER_ROW}": [
            raw_input("item_ids", one),
            raw_input("exclude_item_ids", np.zeros((1, C.MAX_EXCLUDED_PER_ROW + 1), dtype=np.int64))],
    }
    for message, inputs in cases.items():
        got = status_of(lambda: raw.infer(C.ENSEMBLE, inputs))
        assert got.startswith("StatusCode.INVALID_ARGUMENT") and message in got, got
    assert raw.is_server_ready() and raw.is_model_ready(C.ENSEMBLE)


def _stub_peaks(server) -> dict[str, int]:
    """Peak resident memory (VmHWM, bytes) of each python-backend stub of the server."""
    peaks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if int(stat[1]) == server.pid and "triton_python_backend_stub" in cmd:
            name = next(m for m in (C.MODEL, C.PREPROCESS) if f"/{m}/" in cmd)
            kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
            peaks[name] = int(kb) * 1024
    return peaks


def test_64_rows_of_100k_excluded_ids_under_a_memory_bound(served, offline):
    rng = np.random.default_rng(1)
    raw = offline["raw"][:64]
    catalogue = offline["vocab"][offline["vocab"] >= 0]
    encoded = encode_sessions(offline["workflow"], raw)
    top, _ = recommend(offline["model"], encoded, k=10, exclude_seen=True)
    # every row excludes its first offline answers among 100k ids (mostly unknown ones)
    exclude = rng.integers(10**7, 10**8, size=(64, C.MAX_EXCLUDED_PER_ROW))
    exclude[:, :3] = offline["vocab"][top[:, :3]]
    exclude[:, 3:500] = rng.choice(catalogue, size=(64, 497))
    before = _stub_peaks(served)
    assert set(before) == {C.MODEL, C.PREPROCESS}
    with RecommenderClient(served.grpc_url, timeout_s=120) as client:
        got = client.recommend_batch(raw, exclude=[e for e in exclude])
    after = _stub_peaks(served)
    codes = ItemLookup.from_vocabulary(offline["vocab"], None).encode_items(exclude.ravel())
    want, _ = recommend(offline["model"], encoded, k=10, exclude_seen=True,
                        exclude=list(codes.reshape(exclude.shape)))
    for g, ids in zip(got, offline["vocab"][want]):
        assert g.item_ids == ids.tolist()
    growth = {m: (after[m] - before[m]) / 2**20 for m in after}
    # the ids are 51 MiB per copy; a [rows, candidates, excluded] table would be GiBs
    assert all(g < 600 for g in growth.values()), growth


def test_export_without_a_program_fails_unless_fallback_is_allowed(tmp_path, etl, trained, offline):
    """Too few held-out histories to check the program against: the export refuses, naming why;
    with allow_fallback, `seqrec export` says it falls back, the model's config says so, and the
    served answers (the eager scorer) still equal offline."""
    data = tmp_path / "data"
    shutil.copytree(etl.output_dir, data)
    valid = pd.read_parquet(data / "valid.parquet")
    valid[:2].to_parquet(data / "valid.parquet")
    cfg = dict(data_dir=str(data), model_dir=trained.output_dir, repository=str(tmp_path / "repo"))
    with pytest.raises(ValueError, match=r"cannot export the scorer .*only 2 non-empty histories.*"
                                         r"allow_fallback"):
        export_repository(ExportConfig(**cfg))
    assert not (tmp_path / "repo" / C.MODEL).exists()  # nothing half-written
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("export:\n" + "".join(f"  {k}: {v}\n" for k, v in cfg.items())
                      + "  allow_fallback: true\n")
    out = subprocess.run([sys.executable, "-m", "seqrec.cli", "export", "--config", str(recipe)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "fallback: seqrec_model runs the eager scorer" in out.stderr and "only 2" in out.stderr
    repo = tmp_path / "repo"
    assert "only 2 non-empty histories" in scorer_fallback(repo)
    assert not (repo / C.MODEL / "1" / "scorer.pt2").exists()
    model = load_checkpoint(trained.output_dir)
    raw = offline["raw"][:40]
    want, scores = recommend(model, encode_sessions(offline["workflow"], raw), k=10)
    with TritonServer(repo) as srv, RecommenderClient(srv.grpc_url, timeout_s=60) as client:
        config = grpcclient.InferenceServerClient(srv.grpc_url).get_model_config(C.MODEL, as_json=True)
        assert config["config"]["parameters"]["scorer"]["string_value"] == "fallback"
        got = client.recommend_batch(raw)
    for g, ids, s in zip(got, offline["vocab"][want], scores):
        assert g.item_ids == ids.tolist()
        np.testing.assert_allclose(g.scores, s, atol=1e-4, rtol=0)
