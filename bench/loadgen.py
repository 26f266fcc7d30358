"""What the serving benchmarks share: the demo repository (and its two-stage export), the workload
with its bad requests, the asyncio load loop and the percentiles (bench/serving.py, bench/soak.py)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.client import AsyncRecommenderClient, RecommendationError

BAD_KINDS = ("empty session", "only unknown ids", "negative ids only")
BAD_SESSIONS = {"empty session": [], "only unknown ids": [999_999_999, 888_888_888],
                "negative ids only": [-1, -2, -3]}


def ensure_model(config: str, epochs: int, compile_scorer: bool = True) -> Path:
    """The demo recipe's repository (with the compiled scorer: `<repository>-compiled`); ETL +
    training + export only when it is missing."""
    from seqrec.config import build, load_recipe
    from seqrec.model_repository.export import ExportConfig, export_repository
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl
    from seqrec.training.trainer import TrainConfig, train

    recipe = load_recipe(config)
    export = build(ExportConfig, recipe.get("export"))
    if compile_scorer:
        export.repository, export.compile_scorer = export.repository + "-compiled", True
    if (Path(export.repository) / "seqrec" / "config.pbtxt").is_file():
        return Path(export.repository)
    etl_cfg = build(ETLConfig, recipe.get("etl"))
    if not (Path(etl_cfg.output_dir) / "test.parquet").is_file():
        run_etl(etl_cfg)
    train_cfg = build(TrainConfig, recipe.get("train"), epochs=epochs)
    if not (Path(train_cfg.output_dir) / "model.pt").is_file():
        train(train_cfg)
    return export_repository(export)


def ensure_two_stage(config: str, ranker_config: str, candidates: int, epochs: int,
                     compile_scorer: bool = True) -> Path:
    """The demo recipe's model with the ranker of `ranker_config` (trained on the same ETL output
    when missing) exported as a two-stage repository: `<repository>-two-stage[-compiled]`."""
    from seqrec.config import build, load_recipe
    from seqrec.model_repository.export import ExportConfig, export_repository
    from seqrec.training.ranker.trainer import RankConfig, rank

    ensure_model(config, epochs, compile_scorer)  # the data and the retrieval model (and its export)
    export = build(ExportConfig, load_recipe(config).get("export"))
    ranker = build(RankConfig, load_recipe(ranker_config).get("rank"), data_dir=export.data_dir)
    if not (Path(ranker.output_dir) / "ranker.pt").is_file():
        rank(ranker)
    export.ranker, export.candidates = ranker.output_dir, candidates
    export.repository += "-two-stage" + ("-compiled" if compile_scorer else "")
    export.compile_scorer = compile_scorer
    if (Path(export.repository) / "seqrec" / "config.pbtxt").is_file():
        return Path(export.repository)
    return export_repository(export)


def workload(data_dir: Path, n: int, bad_share: float, seed: int = 0):
    """n requests: real held-out histories (original ids), a share of them replaced by bad ones."""
    from seqrec.preprocessing.workflow import ITEM_LIST, item_vocabulary, load_workflow

    vocab = item_vocabulary(load_workflow(data_dir / "workflow"))
    rows = pd.read_parquet(data_dir / "test.parquet")[ITEM_LIST]
    sessions = [vocab[r[:-1]].tolist() for r in rows]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sessions), size=n)
    bad = rng.random(n) < bad_share
    kinds = rng.integers(0, len(BAD_KINDS), size=n)
    return [(int(p), BAD_SESSIONS[BAD_KINDS[k]] if b else sessions[p], bool(b))
            for p, b, k in zip(picks, bad, kinds)]


async def drive(url: str, requests, concurrency: int, record, model: str = "seqrec",
                timeout_s: float = 60.0, **client_kw) -> float:
    """Send `requests` ((key, items, bad) each) from `concurrency` workers sharing one asyncio
    client; record(index, Recommendation | RecommendationError, t_start, t_end) per request
    (perf_counter seconds). Returns the wall seconds of the whole run."""
    queue = iter(enumerate(requests))

    async def worker(client):
        for i, (_, items, _) in queue:
            t0 = time.perf_counter()
            try:
                answer = await client.recommend(items)
            except RecommendationError as e:
                answer = e
            record(i, answer, t0, time.perf_counter())

    async with AsyncRecommenderClient(url, model_name=model, timeout_s=timeout_s, **client_kw) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0


# Scores that agree to this are a tie: dynamic batching changes how many rows one matrix product
# holds, and with it the float rounding (about 1e-6 here), so two items tied to that precision
# may trade places between a lone request and a batched one. Not a changed answer.
TIE_TOLERANCE = 1e-5


def same_answer(got, want, tol: float = TIE_TOLERANCE) -> bool:
    """Whether two Recommendations of one request agree: the same ids in the same order, except
    neighbours whose scores tie within `tol` (or the last place, tied with the unseen next one),
    and every score equal within `tol`."""
    if got.item_ids == want.item_ids:
        return True
    # the order's own scores: a two-stage answer is ranked by the ranker
    g, w = ((got.scores, want.scores) if want.ranker_scores is None
            else (got.ranker_scores, want.ranker_scores))
    g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if g.shape != w.shape or not np.allclose(g, w, rtol=0, atol=tol, equal_nan=True):
        return False
    tied = np.zeros(len(w), dtype=bool)
    close = np.abs(np.diff(w)) <= tol
    tied[:-1] |= close
    tied[1:] |= close
    tied[-1:] = True
    differ = np.asarray(got.item_ids) != np.asarray(want.item_ids)
    return bool(not (differ & ~tied).any())


def percentiles(ms: np.ndarray) -> dict:
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)}
