"""Retrieval + ranking served by the real tritonserver: the answers for 200 real MovieLens-100k
histories equal offline two-stage scoring, bad rows and bad requests answered as the
single-stage ensemble answers them, and the export's checks of the ranker."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from seqrec.client import RecommendationError, RecommenderClient
from seqrec.client import contract as C
from seqrec.model_repository.contract import read_config
from seqrec.model_repository.export import ExportConfig, export_repository
from seqrec.model_repository.server import TritonServer
from seqrec.preprocessing.workflow import encode_sessions
from seqrec.training.ranker.two_stage import load_ranker, two_stage_recommend
from serving_helpers import offline_view

pytestmark = pytest.mark.slow
CANDIDATES, K = 100, 10


@pytest.fixture(scope="module")
def models(tmp_path_factory, etl, trained):
    """The shared GPT-2 (retrieval) and a tiny ranker trained on the same ETL output."""
    from seqrec.training.ranker.trainer import RankConfig, load_movielens, rank

    root = tmp_path_factory.mktemp("two_stage")
    cfg = RankConfig(data_dir=etl.output_dir, output_dir=str(root / "ranker"), epochs=1, batch_size=256,
                     lr=0.005, train_eval_examples=500, labels={"max_history": 10},
                     init={"strategy": "none"}, model={"d_model": 16, "n_layers": 1, "n_heads": 2})
    data = load_movielens(etl.output_dir, cfg.labels)
    data.train = data.train.take(np.arange(5000))  # a few steps: the test is about serving
    data.test = data.test.take(np.arange(500))
    rank(cfg, data=data)
    return trained.output_dir, cfg.output_dir


@pytest.fixture(scope="module")
def repository(tmp_path_factory, etl, models):
    model_dir, ranker_dir = models
    return export_repository(ExportConfig(
        data_dir=etl.output_dir, model_dir=model_dir, repository=str(tmp_path_factory.mktemp("r") / "repo"),
        top_k=K, ranker=ranker_dir, candidates=CANDIDATES))


@pytest.fixture(scope="module")
def served(repository):
    with TritonServer(repository) as srv:
        yield srv


def _same(got_ids, got_ranked, want_ids, want_ranked, tol=1e-5):
    """Same ids in the same order, but neighbours whose ranker scores tie within tol (batched
    matrix products round differently) may trade places."""
    if got_ids == list(want_ids):
        return True
    close = np.abs(np.diff(want_ranked)) <= tol
    tied = np.r_[close, False] | np.r_[False, close]
    return bool(not ((np.asarray(got_ids) != want_ids) & ~tied).any())


def test_served_two_stage_equals_offline_two_stage_scoring(served, etl, models):
    model_dir, ranker_dir = models
    offline = offline_view(etl.output_dir, model_dir)
    raw = offline["raw"][:200]
    encoded = encode_sessions(offline["workflow"], raw)
    want, want_retrieval, want_ranked = two_stage_recommend(
        offline["model"], load_ranker(ranker_dir), encoded, k=K, candidates=CANDIDATES)
    with RecommenderClient(served.grpc_url, timeout_s=120) as client:
        got = [rec for at in range(0, 150, 50) for rec in client.recommend_batch(raw[at:at + 50])]
        got += [client.recommend(s) for s in raw[150:]]
    vocab = offline["vocab"]
    for g, ids, retrieval, ranked in zip(got, vocab[want], want_retrieval, want_ranked):
        assert _same(g.item_ids, g.ranker_scores, ids, ranked), (g.item_ids, ids.tolist())
        np.testing.assert_allclose(np.sort(g.ranker_scores), np.sort(ranked), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.sort(g.scores), np.sort(retrieval), atol=1e-4, rtol=0)
        assert (np.diff(g.ranker_scores) <= 1e-6).all()  # ranked by the ranker, not by retrieval
    # the second stage changes the order: by retrieval score alone some answers would differ
    assert any((np.diff(g.scores) > 0).any() for g in got)


def status_of(call) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return f"{raised.value.status()} {raised.value.message()}"


def test_bad_rows_and_bad_requests_as_the_single_stage_ensemble(served, etl, models):
    offline = offline_view(etl.output_dir, models[0])
    good = offline["raw"][0]
    with RecommenderClient(served.grpc_url, timeout_s=60) as client:
        answers = client.recommend_batch([good, [], [999_999_999, -5], good], errors="return")
        assert answers[0].item_ids == answers[3].item_ids and len(answers[0].ranker_scores) == K
        assert isinstance(answers[1], RecommendationError) and answers[1].row == 1
        assert "empty session (row 1)" in str(answers[1])
        assert "unknown item id(s) [999999999, -5]" in str(answers[2])
        deepest = client.recommend(good, k=CANDIDATES)  # k = candidates: every candidate, ranked
        assert len(set(deepest.item_ids)) == CANDIDATES and set(answers[0].item_ids) <= set(deepest.item_ids)
    raw = grpcclient.InferenceServerClient(served.grpc_url)
    one = np.array([good[-5:]], dtype=np.int64)

    def request(*tensors):
        out = []
        for name, array in tensors:
            t = grpcclient.InferInput(name, list(array.shape), "INT64")
            t.set_data_from_numpy(array)
            out.append(t)
        return out

    cases = {"'k' must be >= 1, got 0": request(("item_ids", one), ("k", np.array([[0]]))),
             f"'k' = {CANDIDATES + 1} is above the {CANDIDATES} candidates":
                 request(("item_ids", one), ("k", np.array([[CANDIDATES + 1]]))),
             "missing input 'item_ids'": request(("k", np.array([[3]])))}
    for message, inputs in cases.items():
        got = status_of(lambda: raw.infer(C.ENSEMBLE, inputs))
        assert got.startswith("StatusCode.INVALID_ARGUMENT") and message in got, got
    assert raw.is_server_ready() and raw.is_model_ready(C.ENSEMBLE)


def test_the_export_declares_the_ranker_and_checks_it(tmp_path, etl, models, repository):
    model_dir, ranker_dir = models
    outputs = [o.name for o in read_config(repository / C.ENSEMBLE / "config.pbtxt").output]
    assert outputs == [t.name for t in C.TWO_STAGE_OUTPUTS]
    params = read_config(repository / C.MODEL / "config.pbtxt").parameters
    assert params["candidates"].string_value == str(CANDIDATES)
    base = dict(data_dir=etl.output_dir, model_dir=model_dir, repository=str(tmp_path / "repo"))
    with pytest.raises(ValueError, match=r"candidates must be between top_k \(10\)"):
        export_repository(ExportConfig(**base, ranker=ranker_dir, candidates=5))
    other = tmp_path / "other_ranker"
    shutil.copytree(ranker_dir, other)
    vocabulary = np.load(other / "item_vocabulary.npy")
    vocabulary[[3, 4]] = vocabulary[[4, 3]]
    np.save(other / "item_vocabulary.npy", vocabulary)
    with pytest.raises(ValueError, match="different item vocabularies"):
        export_repository(ExportConfig(**base, ranker=str(other)))
    assert not (tmp_path / "repo").exists()  # nothing half-written
