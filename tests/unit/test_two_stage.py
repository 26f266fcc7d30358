"""Retrieval + ranking without a server: the two-stage module against a pair-by-pair reference,
its exclusions, the ranker folder it loads and the vocabulary check, and the runtime's two-stage
answers (k above the candidates refused, ranker_scores mapped like top_scores)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from seqrec.client import contract as C
from seqrec.model_repository.lookup import ItemLookup
from seqrec.model_repository.runtime import Preprocessor, Ranker as StepRanker, RequestError
from seqrec.preprocessing.arrays import FIRST_ITEM_ID
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.ranker.labels import LabelConfig
from seqrec.training.ranker.model import Ranker, RankerModelConfig
from seqrec.training.ranker.trainer import RankConfig, _save, _save_array
from seqrec.training.ranker.two_stage import check_vocabulary, load_ranker, two_stage_recommend
from seqrec.training.recommend import recommend

NUM_ITEMS, HISTORY = 40, 6


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = SequenceRecommender(ModelConfig(num_items=NUM_ITEMS, max_len=10, backbone="gpt2", task="clm",
                                            d_model=16, n_layers=1, n_heads=2)).eval()
    category = np.r_[np.zeros(FIRST_ITEM_ID, np.int64),
                     np.random.default_rng(0).integers(1, 4, NUM_ITEMS - FIRST_ITEM_ID)]
    ranker = Ranker(RankerModelConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.0), category, 4,
                    HISTORY).eval()
    return model, ranker


def histories(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.integers(FIRST_ITEM_ID, NUM_ITEMS, rng.integers(1, 20)) for _ in range(n)]


def test_the_ranker_reorders_the_retrieved_candidates_as_scored_one_pair_at_a_time(models):
    model, ranker = models
    rows, n, k = histories(), 15, 5
    ids, retrieval, prob = two_stage_recommend(model, ranker, rows, k=k, candidates=n)
    pool, pool_scores = recommend(model, rows, k=n)
    for row, history in enumerate(rows):
        last = torch.as_tensor(history[-HISTORY:])[None]
        with torch.no_grad():  # the reference: one candidate at a time, no batching, no padding
            logits = torch.cat([ranker(last, torch.tensor([last.shape[1]]), torch.tensor([c]))
                                for c in pool[row]]).numpy()
        order = np.argsort(-logits, kind="stable")[:k]
        assert ids[row].tolist() == pool[row][order].tolist()
        np.testing.assert_allclose(prob[row], 1 / (1 + np.exp(-logits[order])), atol=1e-5)
        np.testing.assert_allclose(retrieval[row], pool_scores[row][order], atol=1e-5)
        assert (np.diff(prob[row]) <= 0).all()
    # the ranker changes the answer: otherwise the second stage would do nothing
    assert (ids != pool[:, :k]).any()


def test_exclusions_leave_fewer_candidates_at_the_tail(models):
    model, ranker = models
    rows = [np.arange(FIRST_ITEM_ID, NUM_ITEMS - 2)]  # all but two items seen
    ids, retrieval, prob = two_stage_recommend(model, ranker, rows, k=4, candidates=4, exclude_seen=True)
    assert set(ids[0, :2].tolist()) == {NUM_ITEMS - 2, NUM_ITEMS - 1}
    assert np.isfinite(prob[0, :2]).all() and np.isneginf(prob[0, 2:]).all()
    assert np.isneginf(retrieval[0, 2:]).all()
    with pytest.raises(ValueError, match=r"k must be between 1 and candidates \(4\), got 5"):
        two_stage_recommend(model, ranker, rows, k=5, candidates=4)


def test_a_ranker_folder_loads_and_its_vocabulary_is_checked(tmp_path, models):
    _, ranker = models
    cfg = RankConfig(labels=LabelConfig(max_history=HISTORY),
                     model=RankerModelConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.0))
    _save(ranker.state_dict(), tmp_path / "ranker.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"rank_config": asdict(cfg)}))
    vocabulary = np.r_[-1, -1, -1, np.arange(100, 100 + NUM_ITEMS - FIRST_ITEM_ID)]
    _save_array(vocabulary, tmp_path / "item_vocabulary.npy")
    loaded = load_ranker(tmp_path)
    hist, lengths, cand = torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([9])
    with torch.no_grad():
        assert torch.equal(loaded(hist, lengths, cand), ranker(hist, lengths, cand))
    check_vocabulary(tmp_path, vocabulary.copy(), "model")
    other = vocabulary.copy()
    other[[10, 11]] = other[[11, 10]]
    with pytest.raises(ValueError, match="different item vocabularies .first difference at encoded id 10"):
        check_vocabulary(tmp_path, other, "model")
    with pytest.raises(ValueError, match=f"{NUM_ITEMS} vs {NUM_ITEMS + 1} ids"):
        check_vocabulary(tmp_path, np.r_[vocabulary, 999], "model")
    with pytest.raises(FileNotFoundError, match="is not a `seqrec rank` output"):
        load_ranker(tmp_path / "nothing")


VOCAB = np.array([-1, -1, -1, 50, 172, 7, 900, 33], dtype=np.int64)


def test_the_runtime_refuses_k_above_the_candidates_and_answers_ranker_scores():
    pre = Preprocessor(ItemLookup.from_vocabulary(VOCAB, 4), max_k=3)
    with pytest.raises(RequestError, match=r"'k' = 4 is above the 3 candidates"):
        pre.parse(lambda name: {"item_ids": np.array([[50]]), "k": np.array([[4]])}.get(name))
    request = pre.parse(lambda name: {"item_ids": np.array([[50, 7], [999, 0]]),
                                      "k": np.array([[3], [3]])}.get(name))
    step = pre.run([request])[0]
    ranker = StepRanker(VOCAB, default_k=2, two_stage=True)
    batch = ranker.gather([step])
    assert batch.ok.tolist() == [True, False] and batch.k == [3]
    ids, scores = np.array([[6, 7, 3]]), np.array([[1.5, 2.5, -np.inf]], np.float32)
    ranked = np.array([[0.9, 0.4, -np.inf]], np.float32)
    out = ranker.answers(batch, ids, scores, ranked)[0]
    assert out[C.TOP_ITEM_IDS.name].tolist() == [[900, 33, -1], [-1, -1, -1]]
    np.testing.assert_array_equal(out[C.RANKER_SCORES.name][0], ranked[0])
    np.testing.assert_array_equal(out[C.TOP_SCORES.name][0], scores[0])
    assert np.isnan(out[C.RANKER_SCORES.name][1]).all() and np.isnan(out[C.TOP_SCORES.name][1]).all()
    # a single-stage step answers what it always did
    assert C.RANKER_SCORES.name not in StepRanker(VOCAB, 2).answers(batch, ids, scores)[0]
