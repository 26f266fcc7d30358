"""The exported ensemble on the real tritonserver, queried through the real gRPC client."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from seqrec.client import RecommendationError, RecommenderClient
from seqrec.model_repository.export import ENSEMBLE, MODEL, PREPROCESS
from seqrec.preprocessing.workflow import ITEM_LIST, encode_sessions, item_vocabulary, load_workflow
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.recommend import recommend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    with RecommenderClient(server.grpc_url, timeout_s=30) as c:
        yield c


def test_repository_layout(repository):
    for name in (ENSEMBLE, PREPROCESS, MODEL):
        assert (repository / name / "config.pbtxt").is_file()
        assert (repository / name / "1").is_dir()
    assert (repository / PREPROCESS / "1" / "workflow" / "workflow.pkl").is_file()
    assert (repository / MODEL / "1" / "checkpoint" / "model.pt").is_file()
    assert 'platform: "ensemble"' in (repository / ENSEMBLE / "config.pbtxt").read_text()
    assert "KIND_CPU" in (repository / MODEL / "config.pbtxt").read_text()


def test_served_top10_equals_offline_for_50_real_users(server, client, etl, trained):
    """The core promise: the same raw history gives the same top-10 (original ids) and scores."""
    workflow = load_workflow(Path(etl.output_dir) / "workflow")
    vocab = item_vocabulary(workflow)
    model = load_checkpoint(trained.output_dir)
    rows = pd.read_parquet(Path(etl.output_dir) / "test.parquet")[ITEM_LIST][:50]
    raw_histories = [vocab[r[:-1]] for r in rows]  # what a user would send: original ids
    encoded = encode_sessions(workflow, raw_histories)
    top, scores = recommend(model, encoded, k=10)
    offline_ids = vocab[top]
    for raw, want_ids, want_scores in zip(raw_histories, offline_ids, scores):
        got = client.recommend(raw.tolist())
        assert got.item_ids == want_ids.tolist()
        np.testing.assert_allclose(got.scores, want_scores, atol=1e-4, rtol=0)
    assert len(set(map(tuple, offline_ids.tolist()))) > 1  # not one constant answer


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


def test_non_integer_ids_are_rejected(server, client):
    with pytest.raises(ValueError, match="abc"):
        client.recommend([50, "abc"])
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("item_ids", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"50", b"abc"], dtype=object))
    with pytest.raises(InferenceServerException, match="TYPE_STRING|BYTES|data.type"):
        raw.infer(ENSEMBLE, [tensor])
    assert raw.is_server_ready()


def test_missing_input_tensor_is_rejected(server):
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="item_ids|input"):
        raw.infer(ENSEMBLE, [])
    assert raw.is_server_ready() and raw.is_model_ready(ENSEMBLE)
