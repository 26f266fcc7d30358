"""Side features on real MovieLens-100k (rating, the movie's release year, time features): config
checks, every task trains with them and uses them without leaking, item-only models are untouched,
and the served ensemble with side-feature inputs equals offline recommend() on the real server."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqrec.preprocessing.ops import LIST_SUFFIX
from seqrec.preprocessing.pipeline import ETLConfig, read_split, run_etl
from seqrec.preprocessing.workflow import (FIRST_ITEM_ID, ITEM_LIST, PAD_ID, item_vocabulary,
                                           load_workflow, transform_frame)
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.data import pad_right, split_history_target
from seqrec.training.loop import training_units
from seqrec.training.features import pad_features, read_feature_lists, slice_rows, with_cardinalities
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.recommend import recommend, score_histories
from seqrec.training.trainer import TrainConfig, train

from helpers import HISTORY_CAP, MAX_LEN

pytestmark = pytest.mark.slow

CATEGORICAL = ["release_year"]
CONTINUOUS = ["rating", "timestamp-hour_sin", "timestamp-hour_cos", "timestamp-weekday_sin",
              "timestamp-weekday_cos", "timestamp-since_prev"]
SIDE = {"categorical": CATEGORICAL, "continuous": CONTINUOUS, "log_scale": ["timestamp-since_prev"]}
RAW_SIDE = ["rating", "release_year", "timestamp"]  # what a request carries besides the items
LEN = 20


@pytest.fixture(scope="module")
def side_etl(tmp_path_factory, ml100k):
    out = tmp_path_factory.mktemp("side_etl") / "data"
    return run_etl(ETLConfig(output_dir=str(out), max_len=MAX_LEN, history_cap=HISTORY_CAP,
                             categorical=CATEGORICAL,
                             continuous=["rating"], time_features=True), interactions=ml100k,
                   progress=False)


@pytest.fixture(scope="module")
def side_real(side_etl):
    schema = load_workflow(Path(side_etl.output_dir) / "workflow").output_schema
    options = with_cardinalities(ModelConfig(side_features=SIDE), schema)
    cfg = options.side
    extra = [c + LIST_SUFFIX for c in cfg.columns]
    frames = {s: read_split(side_etl.output_dir, s, extra) for s in ("train", "test")}
    return {"options": options, "side": cfg, "num_items": int(side_etl.num_items) + FIRST_ITEM_ID,
            **{s: list(f[ITEM_LIST]) for s, f in frames.items()},
            **{s + "_features": read_feature_lists(f, cfg) for s, f in frames.items()}}


def tiny(real, backbone, task, **side):
    torch.manual_seed(0)
    cfg = replace(real["options"], num_items=real["num_items"], max_len=LEN + 1, backbone=backbone,
                  task=task, d_model=32, n_layers=1, n_heads=2, dropout=0.0,
                  side_features=replace(real["side"], **side))
    model = SequenceRecommender(cfg)
    model.side.set_statistics({c: np.concatenate(v) for c, v in real["train_features"].items()})
    return model


def test_side_feature_options_are_checked_against_the_data(side_etl):
    data = side_etl.output_dir
    with pytest.raises(ValueError, match=r"^model.side_features: unknown column\(s\) \['ratng'\]; the data has \[.*'rating'"):
        TrainConfig(data_dir=data, model={"side_features": {"continuous": ["ratng"]}})
    with pytest.raises(ValueError, match=r"^model.side_features.categorical: \['rating'\] were not encoded by Categorify"):
        TrainConfig(data_dir=data, model={"side_features": {"categorical": ["rating"]}})
    with pytest.raises(ValueError, match="^model.side_features.combine: 'mul' is not one of 'concat', 'sum'"):
        TrainConfig(data_dir=data, model={"side_features": {"continuous": ["rating"], "combine": "mul"}})
    with pytest.raises(ValueError, match=r"^model.side_features: unknown key 'bins'; valid: categorical, "):
        TrainConfig(data_dir=data, model={"side_features": {"continuous": ["rating"], "bins": 3}})
    TrainConfig(data_dir=data, model={"side_features": SIDE})  # the real columns pass


# Every task, and between them both combinations and both continuous embeddings.
CASES = [("gpt2", "clm", "concat", "soft-one-hot"), ("gpt2", "clm-last", "sum", "linear"),
         ("bert", "mlm", "concat", "linear"), ("xlnet", "plm", "sum", "soft-one-hot"),
         ("electra", "rtd", "concat", "soft-one-hot"), ("llama", "clm", "sum", "soft-one-hot")]


@pytest.mark.parametrize("backbone,task,combine,embedding", CASES)
def test_task_trains_with_side_features_uses_them_and_does_not_leak(side_real, backbone, task,
                                                                     combine, embedding):
    real = side_real
    model = tiny(real, backbone, task, combine=combine, continuous_embedding=embedding)
    examples = training_units(model, real["train"], model.cfg.max_len, real["train_features"])
    pick = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0))[:96]
    batch, side = examples.batch(pick)

    def fixed_loss():
        torch.manual_seed(1)
        with torch.no_grad():
            return model.loss(batch, side).item()

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(16):  # one fixed batch: every task fits it (PLM's random orders take longest)
        loss = model.loss(batch, side)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.9 * before

    # Leakage: score the second-to-last item; changing it and everything after it, side features
    # included, leaves every score bit-identical.
    rows_ = real["test"][:16]  # every test row holds >= 3 items (min_len)
    feats = {c: v[:16] for c, v in real["test_features"].items()}
    positions = np.array([len(r) - 2 for r in rows_])
    histories, targets = split_history_target(rows_, positions)
    hist_feats = slice_rows(feats, lambda x, p: x[:p], positions)
    changed = [np.concatenate([r[:p], (r[p:] + 7) % real["num_items"] + FIRST_ITEM_ID]) for r, p in zip(rows_, positions)]
    changed_feats = slice_rows(feats, lambda x, p: np.concatenate([x[:p], x[p:] * 3 + 1]), positions)
    histories2, targets2 = split_history_target(changed, positions)
    assert (targets != targets2).any()
    scores = score_histories(model, histories, hist_feats)
    torch.testing.assert_close(
        scores, score_histories(model, histories2, slice_rows(changed_feats, lambda x, p: x[:p], positions)),
        rtol=0, atol=0)
    # ... while the history's own side features matter: another rating, another year
    other = dict(hist_feats, rating=[np.where(x > 0, -1.5, 1.0) for x in hist_feats["rating"]],
                 release_year=[np.full_like(x, FIRST_ITEM_ID) for x in hist_feats["release_year"]])
    assert not torch.allclose(score_histories(model, histories, other), scores)
    # batch vs alone; and a model that needs them names what is missing
    alone = score_histories(model, histories[:1], {c: v[:1] for c, v in hist_feats.items()})
    torch.testing.assert_close(alone, scores[:1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"missing \['timestamp-since_prev'\]"):
        score_histories(model, histories, {c: v for c, v in hist_feats.items() if c != "timestamp-since_prev"})


def test_a_masked_position_hides_its_side_features(side_real):
    """MLM/RTD/PLM inputs: a masked interaction's rating, year and time reach nothing (else
    training would learn from the features of the very item it predicts)."""
    from seqrec.training.tasks.base import MASK_ID

    model = tiny(side_real, "bert", "mlm").eval()
    items = pad_right(side_real["train"][:8], LEN)
    side = pad_features(side_real["side"], {c: v[:8] for c, v in side_real["train_features"].items()}, LEN)
    masked = torch.zeros_like(items, dtype=torch.bool)
    masked[:, 3] = True
    inputs = items.masked_fill(masked, MASK_ID)
    other = {c: (FIRST_ITEM_ID + (f == FIRST_ITEM_ID).long()) if c in CATEGORICAL else f * 5 + 7
             for c, f in side.items()}  # another valid year code; other values
    moved = {c: torch.where(masked, other[c], f) for c, f in side.items()}
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(inputs, features=moved),
                                   model.hidden_states(inputs, features=side), rtol=0, atol=0)
        # the same change at an unmasked position does reach the hidden states
        assert not torch.allclose(model.hidden_states(items, features=moved),
                                  model.hidden_states(items, features=side))


def test_item_only_models_are_unchanged_by_the_feature_path(trained, etl, side_real):
    """No side parameters, the same state dict keys as before, and features passed to an
    item-only model change nothing."""
    model = load_checkpoint(trained.output_dir)
    assert model.side is None and model.cfg.side_features is None
    assert not any(k.startswith("side.") for k in model.state_dict())
    rows = list(read_split(etl.output_dir, "test")[ITEM_LIST])[:32]
    histories = [r[:-1] for r in rows]
    junk = {"rating": [np.ones(len(h)) for h in histories]}
    torch.testing.assert_close(score_histories(model, histories, junk), score_histories(model, histories),
                               rtol=0, atol=0)


@pytest.fixture(scope="module")
def side_trained(tmp_path_factory, side_etl):
    out = tmp_path_factory.mktemp("side_model")
    model = {"side_features": dict(SIDE, continuous_embedding="soft-one-hot")}
    return train(TrainConfig(data_dir=side_etl.output_dir, output_dir=str(out), epochs=3, patience=3,
                             model=model), progress=False)


def test_train_with_side_features_lowers_the_loss_and_reloads(side_trained, side_real):
    assert side_trained.losses[-1] < side_trained.losses[0]
    model = load_checkpoint(side_trained.output_dir)
    assert model.cfg.side.cardinalities["release_year"] == 75  # from the workflow's Categorify
    assert model.side.std[CONTINUOUS.index("rating")] == pytest.approx(1.0, abs=0.05)  # normalised by the workflow
    histories = [r[:-1] for r in side_real["test"][:64]]
    feats = {c: [x[:-1] for x in v[:64]] for c, v in side_real["test_features"].items()}
    top, _ = recommend(model, histories, k=10, features=feats)
    assert len({tuple(t) for t in top.tolist()}) > 1


# --- serving -------------------------------------------------------------------------------

def raw_requests(ml100k, users) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], pd.DataFrame]:
    """Each user's whole raw history except the last interaction (oldest first, as the workflow
    orders it): item ids, and rating / release_year / timestamp aligned with them."""
    raw = ml100k.reset_index().sort_values(["user_id", "timestamp", "index"], kind="stable")
    raw = raw[raw.groupby("user_id").cumcount(ascending=False) > 0]  # hold out the last
    by_user = dict(list(raw.groupby("user_id")))
    rows = [by_user[u] for u in users]
    return ([r["item_id"].to_numpy() for r in rows], {c: [r[c].to_numpy() for r in rows] for c in RAW_SIDE},
            pd.concat(rows).drop(columns="index"))


def offline(workflow, model, frame, k=10):
    """What offline evaluation does with a raw history: the saved workflow, then recommend()."""
    grouped = transform_frame(workflow, frame).set_index("user_id").loc[frame["user_id"].unique()]
    histories = list(grouped[ITEM_LIST])
    feats = {c: list(grouped[c + LIST_SUFFIX]) for c in model.cfg.side.columns}
    top, scores = recommend(model, histories, k=k, features=feats)
    return item_vocabulary(workflow)[top], scores, grouped


@pytest.fixture(scope="module")
def side_repo(tmp_path_factory, side_etl, side_trained):
    from seqrec.model_repository.export import ExportConfig, export_repository

    return export_repository(ExportConfig(data_dir=side_etl.output_dir, model_dir=side_trained.output_dir,
                                          repository=str(tmp_path_factory.mktemp("side_repo") / "repo")))


def test_side_lookup_equals_the_workflow_on_every_real_user(side_repo, side_etl, ml100k):
    from seqrec.model_repository.export import PREPROCESS
    from seqrec.model_repository.lookup import ItemLookup
    from seqrec.model_repository.side_lookup import SideLookup

    workflow = load_workflow(Path(side_etl.output_dir) / "workflow")
    users = np.sort(ml100k["user_id"].unique())
    items, raw, frame = raw_requests(ml100k, users)
    assert max(len(s) for s in items) > HISTORY_CAP  # truncation after the time features
    folder = side_repo / PREPROCESS / "1"
    lengths = np.array([len(s) for s in items])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    _, enc_offsets, keep = ItemLookup.load(folder).encode_keep(np.concatenate(items), offsets)
    side = SideLookup.load(folder)
    assert side.inputs == [("rating", "FP32"), ("release_year", "INT64"), ("timestamp", "INT64")]
    cats, conts = side.encode({c: np.concatenate(v) for c, v in raw.items()}, offsets)
    want = transform_frame(workflow, frame).set_index("user_id").loc[users]
    np.testing.assert_array_equal(cats[keep][:, 0], np.concatenate(want["release_year-list"].tolist()))
    for j, c in enumerate(CONTINUOUS):
        np.testing.assert_allclose(conts[keep][:, j], np.concatenate(want[c + LIST_SUFFIX].tolist()),
                                   rtol=1e-6, atol=1e-6, err_msg=c)
    np.testing.assert_array_equal(np.diff(enc_offsets), want["seq_length"].to_numpy())


def test_served_top10_with_side_features_equals_offline(side_repo, side_etl, side_trained, ml100k, capsys):
    """200 real held-out histories with their raw side features, single requests and batches:
    the served top-10 (original ids) and scores equal the workflow + recommend() offline. A
    missing or misshapen side input is an error naming it, and the server keeps serving."""
    from seqrec.client import RecommendationError, RecommenderClient
    from seqrec.model_repository.export import MODEL
    from seqrec.model_repository.server import TritonServer

    assert (side_repo / MODEL / "1" / "scorer.pt2").is_file()  # GPT-2 + side features export
    workflow = load_workflow(Path(side_etl.output_dir) / "workflow")
    model = load_checkpoint(side_trained.output_dir)
    users = pd.read_parquet(Path(side_etl.output_dir) / "test.parquet")["user_id"].to_numpy()[:200]
    items, raw, frame = raw_requests(ml100k, users)
    want_ids, want_scores, _ = offline(workflow, model, frame)
    assert len({tuple(i) for i in want_ids.tolist()}) > 1
    with TritonServer(side_repo) as srv, RecommenderClient(srv.grpc_url, timeout_s=30) as client:
        got = [client.recommend(s, features={c: v[i] for c, v in raw.items()}) for i, s in enumerate(items[:40])]
        for start in range(40, len(items), 40):
            got += client.recommend_batch(items[start:start + 40],
                                          features={c: v[start:start + 40] for c, v in raw.items()})
        for g, ids, scores in zip(got, want_ids, want_scores):
            assert g.item_ids == ids.tolist()
            np.testing.assert_allclose(g.scores, scores, atol=1e-4, rtol=0)
        # the features really reach the model: other ratings, another answer
        moved = client.recommend(items[0], features=dict({c: v[0] for c, v in raw.items()},
                                                         rating=6 - raw["rating"][0]))
        assert moved.scores != got[0].scores
        with pytest.raises(RecommendationError, match=r"missing input 'rating' \(FP32"):
            client.recommend(items[0], features={c: v[0] for c, v in raw.items() if c != "rating"})
        with pytest.raises(RecommendationError, match="'timestamp' decreases in row 0"):
            client.recommend(items[0], features=dict({c: v[0] for c, v in raw.items()},
                                                     timestamp=raw["timestamp"][0][::-1]))
        # the same bad row inside a request: named, the good row beside it still answered
        mixed = client.recommend_batch(
            [items[0], items[0]], errors="return",
            features={c: [v[0], v[0][::-1] if c == "timestamp" else v[0]] for c, v in raw.items()})
        assert mixed[0].item_ids == got[0].item_ids
        np.testing.assert_allclose(mixed[0].scores, got[0].scores, atol=1e-4, rtol=0)
        assert isinstance(mixed[1], RecommendationError) and mixed[1].row == 1
        assert "'timestamp' decreases in row 1" in str(mixed[1])
        with pytest.raises(ValueError, match=r"feature 'rating' row 0 has 3 values for"):
            client.recommend(items[0], features=dict({c: v[0] for c, v in raw.items()}, rating=[1, 2, 3]))
        assert client.is_ready()
        assert client.recommend(items[1], features={c: v[1] for c, v in raw.items()}).item_ids == got[1].item_ids
        # the CLI passes them too: seqrec query --feature NAME=v1,v2,...
        from seqrec.cli import main

        join = lambda values: ",".join(str(v) for v in values)  # noqa: E731
        main(["query", "--url", srv.grpc_url, "--no-titles", "--items", join(items[2]),
              *[a for c, v in raw.items() for a in ("--feature", f"{c}={join(v[2])}")]])
        table = capsys.readouterr().out.splitlines()[1:11]
        assert [int(line.split()[1]) for line in table] == got[2].item_ids


def test_served_by_the_eager_scorer_after_a_fallback_export(tmp_path, side_etl, side_trained, ml100k):
    """An export that cannot check a program (too few held-out histories) with allow_fallback:
    the model step runs the eager scorer with the side features it received, and answers as
    offline."""
    import shutil

    from seqrec.client import RecommenderClient
    from seqrec.model_repository.export import MODEL, ExportConfig, export_repository, scorer_fallback
    from seqrec.model_repository.server import TritonServer

    data = tmp_path / "data"
    shutil.copytree(side_etl.output_dir, data)
    pd.read_parquet(data / "valid.parquet")[:3].to_parquet(data / "valid.parquet")
    repo = export_repository(ExportConfig(data_dir=str(data), model_dir=side_trained.output_dir,
                                          repository=str(tmp_path / "repo"), allow_fallback=True))
    assert "only 3 non-empty histories" in scorer_fallback(repo)
    assert not (repo / MODEL / "1" / "scorer.pt2").exists()
    workflow = load_workflow(Path(side_etl.output_dir) / "workflow")
    users = pd.read_parquet(Path(side_etl.output_dir) / "test.parquet")["user_id"].to_numpy()[200:260]
    items, raw, frame = raw_requests(ml100k, users)
    want_ids, want_scores, _ = offline(workflow, load_checkpoint(side_trained.output_dir), frame)
    with TritonServer(repo) as srv, RecommenderClient(srv.grpc_url, timeout_s=30) as client:
        got = client.recommend_batch(items, features=raw)
    for g, ids, scores in zip(got, want_ids, want_scores):
        assert g.item_ids == ids.tolist()
        np.testing.assert_allclose(g.scores, scores, atol=1e-4, rtol=0)


def test_text_categorical_side_feature_is_served_as_bytes(tmp_path, ml100k):
    """A categorical side column of text (here the movie's decade, '1990s', as readers give
    brands or category paths) trains through Categorify and is served as a BYTES input: the
    served top-10 equals offline for real users; an unseen text maps to OOV, like offline."""
    from seqrec.client import RecommenderClient
    from seqrec.model_repository.export import ExportConfig, export_repository
    from seqrec.model_repository.server import TritonServer

    frame = ml100k.assign(decade=(ml100k["release_year"] // 10 * 10).astype(str) + "s")
    etl = run_etl(ETLConfig(output_dir=str(tmp_path / "data"), max_len=MAX_LEN, categorical=["decade"]),
                  interactions=frame, progress=False)
    trained = train(TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path / "model"), epochs=2,
                                model={"d_model": 32, "n_heads": 2,
                                       "side_features": {"categorical": ["decade"]}}), progress=False)
    repo = export_repository(ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir,
                                          repository=str(tmp_path / "repo")))
    workflow, model = load_workflow(Path(etl.output_dir) / "workflow"), load_checkpoint(trained.output_dir)
    users = pd.read_parquet(Path(etl.output_dir) / "test.parquet")["user_id"].to_numpy()[:50]
    raw = frame.reset_index().sort_values(["user_id", "timestamp", "index"], kind="stable")
    raw = raw[raw.groupby("user_id").cumcount(ascending=False) > 0].drop(columns="index")
    raw = raw[raw["user_id"].isin(users)]
    by_user = dict(list(raw.groupby("user_id")))
    items = [by_user[u]["item_id"].to_numpy() for u in users]
    decades = [by_user[u]["decade"].tolist() for u in users]
    grouped = transform_frame(workflow, raw).set_index("user_id").loc[users]
    top, scores = recommend(model, list(grouped[ITEM_LIST]), k=10,
                            features={"decade": list(grouped["decade" + LIST_SUFFIX])})
    want = item_vocabulary(workflow)[top]
    with TritonServer(repo) as srv, RecommenderClient(srv.grpc_url, timeout_s=30) as client:
        assert dict(client._input_dtypes())["decade"] == "BYTES"
        got = client.recommend_batch(items, features={"decade": decades})
        for g, ids, sc in zip(got, want, scores):
            np.testing.assert_allclose(g.scores, sc, atol=1e-4, rtol=0)
            assert g.item_ids == ids.tolist()
        unseen = client.recommend(items[0], features={"decade": ["1890s ü"] * len(items[0])})
        oov = raw[raw["user_id"] == users[0]].assign(decade="1890s ü")
        g0 = transform_frame(workflow, oov)
        t0, s0 = recommend(model, list(g0[ITEM_LIST]), k=10, features={"decade": list(g0["decade" + LIST_SUFFIX])})
        assert unseen.item_ids == item_vocabulary(workflow)[t0][0].tolist()
        np.testing.assert_allclose(unseen.scores, s0[0], atol=1e-4, rtol=0)
        assert client.is_ready()
