"""`seqrec incremental --serve`: continuous training against a live server.

Window by window: train on window t (training/incremental.py), publish the model as the next
version of a model repository (export.py: written aside, switched in by one rename), reload it
in a server running with explicit model control (client/control.py: members first, the previous
version serving until the new one is ready), then score window t+1 THROUGH that server with the
gRPC client before training on it. The served metrics come from the served top-D answers
(D = evaluation.top_k_depth()) through evaluation.top_k_ranks and rank_metrics, which give the
full-catalogue strict rank of every target ranked below D - 1: so they are compared with the
offline report's metrics at every cutoff, for the same sessions of the same window.

The server is either the run's own (tritonserver on 127.0.0.1, started on the repository and
stopped at the end) or a running one given by `serve.url` that serves `serve.repository`.
A reload that fails leaves the previous version serving and stops the run with a ReloadError.
"""
from __future__ import annotations

import csv
import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np

from seqrec.config import build
from seqrec.errors import SeqrecError
from seqrec.preprocessing.arrays import ITEM_LIST
from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
from seqrec.training.checkpoint import save_checkpoint
from seqrec.training.data import split_history_target
from seqrec.training.evaluation import CUTOFFS, metric_names, rank_metrics, top_k_depth, top_k_ranks
from seqrec.training.incremental import IncrementalConfig, train_incremental

from seqrec.client.contract import ENSEMBLE, MODEL, PREPROCESS
from seqrec.client.control import ModelControl, ModelControlError, read_key
from seqrec.client.grpc_client import RecommenderClient

from .export import ExportConfig, export_repository, versions
from .server import TritonServer

__all__ = ["ReloadError", "serve_incremental", "served_metrics", "publish_config", "REPORT_CSV",
           "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "window_checkpoint"  # the model of the window just trained, as exported
REPORT_CSV = "served.csv"  # one row per (window, metric): offline, served
MATCH_TOLERANCE = 1e-9  # equal ranks give equal means up to the order of the sums


class ReloadError(SeqrecError):
    """The server did not take the new version; the previous one keeps serving."""


def served_metrics(client: RecommenderClient, vocabulary: np.ndarray, rows, request_rows: int) -> dict:
    """Metrics at every cutoff of the last item of each row (encoded ids) given everything
    before it, ranked by the served model: the histories go out in original ids, `request_rows`
    sessions per request, each asking for the top top_k_depth()."""
    histories, targets = split_history_target(rows)
    raw = vocabulary[histories.values]
    sessions = np.split(raw, histories.offsets[1:-1])  # views, one per session
    depth = top_k_depth()
    ids, scores = np.empty((0, depth), dtype=np.int64), np.empty((0, depth), dtype=np.float32)
    parts_ids, parts_scores = [], []
    for start in range(0, len(sessions), request_rows):
        answers = client.recommend_batch(sessions[start:start + request_rows], k=depth)
        parts_ids.append(np.array([a.item_ids for a in answers], dtype=np.int64))
        parts_scores.append(np.array([a.scores for a in answers], dtype=np.float32))
    if parts_ids:
        ids, scores = np.concatenate(parts_ids), np.concatenate(parts_scores)
    return rank_metrics(top_k_ranks(ids, scores, vocabulary[targets]), CUTOFFS, full=False)


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trained_on", "evaluated_on", "version", "metric",
                                               "offline", "served", "difference"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)  # a reader never sees half a table


# what the run itself decides for every published version
RUN_EXPORT_KEYS = ("data_dir", "model_dir", "repository", "exclude_seen")


def publish_config(cfg: IncrementalConfig, repository: Path) -> ExportConfig:
    """The export of every window's model: `incremental.serve.export` (checked by the export's
    strict loader) plus what the run decides (its data, the window checkpoint, the repository and
    the evaluation's seen-item policy)."""
    taken = sorted(set(cfg.serve.export) & set(RUN_EXPORT_KEYS))
    if taken:
        raise SeqrecError(f"incremental.serve.export.{taken[0]}: set by the run (its data_dir, the "
                          f"window checkpoint, serve.repository, eval_exclude_seen), not here")
    # the strict loader raises a ConfigError (a SeqrecError) naming the key
    return build(ExportConfig, cfg.serve.export, at="incremental.serve.export",
                 data_dir=cfg.data_dir, model_dir=str(Path(cfg.output_dir) / CHECKPOINT_DIR),
                 repository=str(repository), exclude_seen=cfg.eval_exclude_seen)


class _Publisher:
    """Exports, reloads and evaluates through one server, for the window hook."""

    def __init__(self, cfg: IncrementalConfig, export: ExportConfig, control: ModelControl,
                 client: RecommenderClient, on_reload: Callable[[dict], None] | None):
        self.cfg, self.repository, self.export = cfg, Path(export.repository), export
        self.control, self.client, self.on_reload = control, client, on_reload
        self.out = Path(cfg.output_dir)
        self.vocabulary = item_vocabulary(load_workflow(Path(cfg.data_dir) / "workflow"))
        self.table: list[dict] = []
        self.serving: int | None = None  # the version the server answers with

    def publish(self, window: str) -> tuple[int, float]:
        """Export the model saved for `window` as the next version and reload it."""
        export_repository(self.export)
        version = versions(self.repository / MODEL)[-1]
        t0 = time.perf_counter()
        try:
            self.control.load(ENSEMBLE)
        except ModelControlError as err:
            raise ReloadError(self._failed(window, version, str(err))) from None
        loaded = self.control.member_versions(ENSEMBLE)
        if loaded != {PREPROCESS: version, MODEL: version}:
            raise ReloadError(self._failed(
                window, version, f"the server loaded {loaded}: does it serve {self.repository}?"))
        self.serving = version
        return version, time.perf_counter() - t0

    def _failed(self, window: str, version: int, why: str) -> str:
        keeps = (f"version {self.serving} keeps serving" if self.serving is not None
                 else "no version of this run was serving yet")
        done = (f"; served results so far in {self.out / REPORT_CSV}" if self.table else "")
        return (f"window {window}: version {version} in {self.repository} did not load at "
                f"{self.control.url} ({why}); {keeps}{done}; after a fix, `resume: true` "
                "continues from the last trained epoch")

    def __call__(self, index, trained_on, evaluated_on, model, rows, offline) -> dict:
        save_checkpoint(model, self.out / CHECKPOINT_DIR)
        version, reload_s = self.publish(trained_on)
        info = {"version": version, "reload_seconds": reload_s, "url": self.control.url}
        if self.on_reload is not None:
            self.on_reload({"window": trained_on, **info})
        if evaluated_on is None:
            return {}
        t0 = time.perf_counter()
        served = served_metrics(self.client, self.vocabulary, rows[ITEM_LIST], self.cfg.serve.request_rows)
        info["eval_seconds"] = time.perf_counter() - t0
        offline_at_k = {m: offline[m] for m in metric_names(full=False)}
        difference = max(abs(served[m] - offline_at_k[m]) for m in served)
        info["max_difference"] = difference
        info["matches_offline"] = bool(difference <= MATCH_TOLERANCE)
        self.table += [{"trained_on": trained_on, "evaluated_on": evaluated_on, "version": version,
                        "metric": m, "offline": offline_at_k[m], "served": served[m],
                        "difference": served[m] - offline_at_k[m]} for m in served]
        _write_csv(self.out / REPORT_CSV, self.table)
        return {"served": served, "serving": info}


def serve_incremental(cfg: IncrementalConfig, progress: bool = True,
                      on_reload: Callable[[dict], None] | None = None) -> dict:
    """train_incremental with every window's model published, reloaded and evaluated through the
    server (see the module docstring). on_reload({"window", "version", "reload_seconds", "url"})
    is called after each reload. The report is train_incremental's with, per evaluated window,
    "served" (metrics at every cutoff) and "serving" (version, timings, match with offline)."""
    serve = cfg.serve
    if cfg.model.side is not None:
        raise SeqrecError("incremental --serve evaluates through the server with item ids only: "
                          "a model with side features is not supported (drop model.side_features)")
    repository = Path(serve.repository or Path(cfg.output_dir) / "model_repository")
    export = publish_config(cfg, repository)
    if serve.request_rows > export.max_batch_size:
        raise SeqrecError(f"incremental.serve.request_rows: {serve.request_rows} sessions per "
                          f"request is more than the exported max_batch_size ({export.max_batch_size})")
    repository.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if serve.url is None:
            # explicit control: nothing loads until this run publishes and loads its first version
            server = stack.enter_context(TritonServer(repository, model_control="explicit"))
            url, key = server.grpc_url, server.repository_key
        else:
            try:
                url, key = serve.url, read_key(serve.key_file)
            except ModelControlError as err:
                raise SeqrecError(f"incremental.serve.key_file: {err}") from None
        control = stack.enter_context(ModelControl(url, key=key, timeout_s=serve.timeout_s))
        client = stack.enter_context(RecommenderClient(url, model_name=ENSEMBLE, timeout_s=serve.timeout_s))
        publisher = _Publisher(cfg, export, control, client, on_reload)
        report = train_incremental(cfg, progress, after_window=publisher)
    report["serving"] = {"repository": str(repository), "url": url, "version": publisher.serving,
                         "own_server": serve.url is None, "depth": top_k_depth()}
    out = Path(cfg.output_dir)
    (out / "incremental.json").write_text(json.dumps(report, indent=2))
    return report
