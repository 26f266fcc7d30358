"""Incremental training over daily windows: train on day t, evaluate on day t+1, continue."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqrec.preprocessing.arrays import ITEM_LIST
from seqrec.preprocessing.pipeline import ETLConfig, run_etl
from seqrec.training.incremental import IncrementalConfig, train_incremental

pytestmark = pytest.mark.slow


def chained_sessions(days=4, per_day=400, seed=0):
    """Sessions walk an item chain (i -> i+1 with p=0.8), so the next item is learnable, while
    each item is about equally popular: popularity cannot do well."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for s in range(per_day):
            length = rng.integers(3, 9)
            items = [rng.integers(0, 200)]
            for _ in range(length - 1):
                items.append((items[-1] + 1) % 200 if rng.random() < 0.8 else rng.integers(0, 200))
            start = 1_700_000_000 + day * 86400 + s * 60
            sid = day * per_day + s
            rows += [(sid, int(item), start + 5 * k) for k, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp"])


def test_train_on_t_evaluate_on_t_plus_1(tmp_path):
    data = tmp_path / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20, valid_fraction=0.2, test_fraction=0.2),
            interactions=chained_sessions(), progress=False)
    cfg = IncrementalConfig(data_dir=str(data), output_dir=str(tmp_path / "model"),
                            epochs_per_window=4, lr=3e-3, model={"d_model": 32, "n_heads": 2})
    report = train_incremental(cfg, progress=False)
    windows = report["windows"]
    assert [w["evaluated_on"] for w in windows] == sorted(p.name for p in data.glob("20*"))[1:]
    assert all(w["trained_on"] < w["evaluated_on"] for w in windows)
    # the chain is learnt: far above popularity on every unseen next day, improving over days
    for w in windows:
        assert w["model"]["recall@10"] > 2 * w["popularity"]["recall@10"]
    assert windows[-1]["model"]["ndcg@10"] > windows[0]["model"]["ndcg@10"]
    saved = json.loads((tmp_path / "model" / "incremental.json").read_text())
    assert saved["average"]["model"]["ndcg@10"] == pytest.approx(
        np.mean([w["model"]["ndcg@10"] for w in windows]))
    assert (tmp_path / "model" / "incremental.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "model" / "model.pt").is_file()
    from seqrec.training.run_log import read_scalars

    scalars = read_scalars(tmp_path / "model")  # every epoch of every window; window t+1's metrics
    assert len(scalars["train/loss"]) == 4 * (len(windows) + 1)
    assert [v for _, v in scalars["next_window/ndcg@10"]] == pytest.approx([w["model"]["ndcg@10"] for w in windows])
    assert [s for s, _ in scalars["next_window/ndcg@10"]] == [4 * (i + 1) for i in range(len(windows))]


def test_needs_time_windows(tmp_path, etl):
    with pytest.raises(ValueError, match="needs >= 2 time windows"):
        train_incremental(IncrementalConfig(data_dir=etl.output_dir, output_dir=str(tmp_path)))


def test_cli_prints_the_per_window_table(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20), interactions=chained_sessions(days=2, per_day=150), progress=False)
    recipe = tmp_path / "inc.yaml"
    recipe.write_text(f"incremental:\n  data_dir: {data}\n  output_dir: {tmp_path / 'm'}\n"
                      "  epochs_per_window: 1\n  model: {{d_model: 32}}\n".replace("{{", "{").replace("}}", "}"))
    out = subprocess.run([sys.executable, "-m", "seqrec.cli", "incremental", "--config", str(recipe)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "evaluated on" in out and "average" in out
    assert (tmp_path / "m" / "incremental.png").is_file()


def moded_sessions(days=3, per_day=300, seed=1):
    """The item after each interaction is +1 or +25 along a ring of 50 items, drawn per
    interaction and shown in a categorical side column `mode` of that interaction: an item-only
    model can narrow the next item to two, only a model reading `mode` knows which."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for s in range(per_day):
            item = int(rng.integers(0, 50))
            start, sid = 1_700_000_000 + day * 86400 + s * 60, day * per_day + s
            for k in range(int(rng.integers(4, 9))):
                step = int(rng.choice([1, 25]))
                rows.append((sid, item, start + 5 * k, step))
                item = (item + step) % 50
    return pd.DataFrame(rows, columns=["session_id", "item_id", "timestamp", "mode"])


def test_incremental_training_reads_side_features(tmp_path):
    data = tmp_path / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20, valid_fraction=0.2, test_fraction=0.2, categorical=["mode"]),
            interactions=moded_sessions(), progress=False)
    base = dict(epochs_per_window=12, lr=1e-2)
    model = {"d_model": 32, "n_heads": 2, "dropout": 0.0}
    items = train_incremental(IncrementalConfig(data_dir=str(data), output_dir=str(tmp_path / "items"),
                                                model=model, **base), progress=False)
    side = train_incremental(IncrementalConfig(
        data_dir=str(data), output_dir=str(tmp_path / "side"), **base,
        model={**model, "side_features": {"categorical": ["mode"]}}), progress=False)
    mrr = {name: r["average"]["model"]["mrr@10"] for name, r in (("items", items), ("side", side))}
    assert mrr["side"] > mrr["items"] + 0.1, mrr  # it knows the step, not just the two candidates
    assert side["windows"][-1]["model"]["mrr@10"] > 0.95  # the right one first, nearly always
    assert (tmp_path / "side" / "incremental.png").is_file()


@pytest.fixture(scope="module")
def tiny_windows(tmp_path_factory):
    data = tmp_path_factory.mktemp("windows") / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20, valid_fraction=0.2, test_fraction=0.2),
            interactions=chained_sessions(days=3, per_day=120), progress=False)
    return data


def _tiny_section(data, out, **options) -> dict:
    """The `incremental` recipe section of a tiny GPT-2 CLM (dropout 0.2) run."""
    return dict(data_dir=str(data), output_dir=str(out), epochs_per_window=2, batch_size=16,
                **{"model": {"d_model": 16, "n_layers": 1}, **options})


def _tiny(data, out, **options):
    return IncrementalConfig(**_tiny_section(data, out, **options))


def _optimizer_steps(out) -> int:
    import torch

    from seqrec.training.loop import STATE_FILE

    state = torch.load(out / STATE_FILE, weights_only=False)["optimizer"]["state"]
    return int(next(iter(state.values()))["step"])


@pytest.mark.slow
def test_incremental_steps_per_epoch_caps_every_epoch(tiny_windows, tmp_path):
    capped = train_incremental(_tiny(tiny_windows, tmp_path / "capped", steps_per_epoch=1), progress=False)
    windows = len(capped["windows"]) + 1  # the last window is trained on, not evaluated
    assert windows >= 3 and _optimizer_steps(tmp_path / "capped") == windows * 2  # 2 epochs x 1 step
    train_incremental(_tiny(tiny_windows, tmp_path / "full"), progress=False)
    assert _optimizer_steps(tmp_path / "full") > windows * 2 * 2


@pytest.mark.slow
def test_incremental_resume_continues_exactly_where_it_stopped(tiny_windows, tmp_path, monkeypatch):
    import torch

    from seqrec.training import loop
    from seqrec.training.checkpoint import load_checkpoint

    straight = train_incremental(_tiny(tiny_windows, tmp_path / "straight", steps_per_epoch=3), progress=False)

    class Stop(Exception):
        pass

    epoch, calls = loop.Trainer.epoch, []

    def stop_at_the_fourth(self, examples):  # window 0 (2 epochs), its evaluation, 1 epoch of window 1
        calls.append(1)
        if len(calls) == 4:
            raise Stop
        return epoch(self, examples)

    monkeypatch.setattr(loop.Trainer, "epoch", stop_at_the_fourth)
    with pytest.raises(Stop):
        train_incremental(_tiny(tiny_windows, tmp_path / "resumed", steps_per_epoch=3), progress=False)
    monkeypatch.setattr(loop.Trainer, "epoch", epoch)
    resumed = train_incremental(_tiny(tiny_windows, tmp_path / "resumed", steps_per_epoch=3, resume=True),
                                progress=False)
    assert resumed["windows"] == straight["windows"]
    a, b = (load_checkpoint(tmp_path / name).state_dict() for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # without resume the same folder starts over (and still ends with the same model)
    again = train_incremental(_tiny(tiny_windows, tmp_path / "resumed", steps_per_epoch=3), progress=False)
    assert again["windows"] == straight["windows"]


def test_a_model_trained_by_incremental_exports_and_serves(tiny_windows, tmp_path):
    """Time-window data has no top-level valid.parquet: `seqrec export` still exports the model
    (it checks the scorer on the windows' rows) and the real server answers as offline scoring."""
    from seqrec.client import RecommenderClient
    from seqrec.model_repository.server import TritonServer
    from seqrec.preprocessing.arrays import ITEM_LIST
    from seqrec.training.checkpoint import load_checkpoint
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.recommend import recommend

    from helpers import seqrec_cli

    assert not (tiny_windows / "valid.parquet").exists()
    model_dir = tmp_path / "model"
    train_incremental(_tiny(tiny_windows, model_dir), progress=False)
    repo = tmp_path / "repo"
    recipe = tmp_path / "export.yaml"
    recipe.write_text(f"export:\n  data_dir: {tiny_windows}\n  model_dir: {model_dir}\n"
                      f"  repository: {repo}\n")
    seqrec_cli("export", "--config", str(recipe))
    vocab = item_vocabulary(load_workflow(tiny_windows / "workflow"))
    last = sorted(tiny_windows.glob("20*"))[-1]
    row = next(r for r in pd.read_parquet(last / "test.parquet")[ITEM_LIST] if len(r) >= 3)
    history = np.asarray(row[:-1], dtype=np.int64)
    ids, _ = recommend(load_checkpoint(model_dir), [history], k=10)
    with TritonServer(repo) as server, RecommenderClient(server.grpc_url, timeout_s=60) as client:
        served = client.recommend(vocab[history].tolist())
    assert served.item_ids == vocab[ids[0]].tolist()


class Traffic:
    """Requests sent back to back from a thread for as long as it runs, each failing on its first
    error (no retries): (finish time, None or the error) per request."""

    def __init__(self, url: str, sessions: list[list[int]]):
        import threading

        self.url, self.sessions, self.done = url, sessions, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import time

        from seqrec.client import RecommenderClient

        with RecommenderClient(self.url, timeout_s=30, retries=0) as client:
            while not self._stop.is_set():
                try:
                    client.recommend_batch(self.sessions)
                    self.done.append((time.monotonic(), None))
                except Exception as err:  # noqa: BLE001 - every failure is counted and shown
                    self.done.append((time.monotonic(), err))

    def stop(self):
        self._stop.set()
        self._thread.join(60)

    def failed(self):
        return [err for _, err in self.done if err is not None]

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for t, err in self.done if err is None and start <= t <= end)


def test_incremental_serve_evaluates_through_the_reloaded_server(tmp_path, monkeypatch):
    """`incremental --serve` against a running tritonserver (explicit model control): every
    window's model becomes a new version the server reloads without a restart; window t+1 scored
    through the server gives the offline metrics exactly, while requests sent all along are all
    answered; a version that fails to load stops the run and the previous one keeps serving."""
    import csv
    import time

    from seqrec.client.control import ModelControl
    from seqrec.model_repository import continuous
    from seqrec.model_repository.contract import read_config
    from seqrec.model_repository.export import ENSEMBLE, MODEL, PREPROCESS
    from seqrec.model_repository.server import TritonServer
    from seqrec.preprocessing.workflow import item_vocabulary, load_workflow
    from seqrec.training.evaluation import metric_names
    from seqrec.training.run_log import read_scalars

    data = tmp_path / "data"  # 3 windows: versions 1 and 2 are evaluated on the next one
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20, valid_fraction=0.2, test_fraction=0.2),
            interactions=chained_sessions(days=2, per_day=150), progress=False)
    vocab = item_vocabulary(load_workflow(data / "workflow"))
    first = sorted(data.glob("20*"))[0]
    probe = [vocab[r[:-1]].tolist() for r in pd.read_parquet(first / "train.parquet")[ITEM_LIST][:8]]
    repo = tmp_path / "repo"
    repo.mkdir()

    export, exports = continuous.export_repository, []

    def third_damaged(cfg):  # version 3 is published, then its program is cut in half
        export(cfg)
        exports.append(1)
        if len(exports) == 3:
            scorer = repo / MODEL / "3" / "scorer.pt2"
            scorer.write_bytes(scorer.read_bytes()[: scorer.stat().st_size // 2])

    monkeypatch.setattr(continuous, "export_repository", third_damaged)
    events, traffic = [], []

    def reloaded(event):
        events.append({**event, "at": time.monotonic()})
        if not traffic:  # from the first version on, requests all the time
            traffic.append(Traffic(event["url"], probe))

    out = tmp_path / "run"
    with TritonServer(repo, model_control="explicit") as srv, \
            ModelControl(srv.grpc_url, key=srv.repository_key) as ctl:
        (tmp_path / "key").write_text(srv.repository_key)
        cfg = _tiny(data, out, serve={"repository": str(repo), "url": srv.grpc_url,
                                      "key_file": str(tmp_path / "key"), "request_rows": 32,
                                      "export": {"top_k": 7}})
        try:
            with pytest.raises(continuous.ReloadError) as failed:
                continuous.serve_incremental(cfg, progress=False, on_reload=reloaded)
            failed_at = time.monotonic()
            assert ctl.member_versions(ENSEMBLE) == {PREPROCESS: 2, MODEL: 2}  # still serving 2
            time.sleep(1.0)
        finally:
            for t in traffic:
                t.stop()
    message = str(failed.value)
    assert "version 3" in message and "'seqrec_model'" in message and "version 2 keeps serving" in message
    assert "3/scorer.pt2 is not a readable exported program" in message
    assert [e["version"] for e in events] == [1, 2]
    assert read_config(repo / MODEL / "config.pbtxt").parameters["top_k"].string_value == "7"  # serve.export
    # requests answered all along: while version 2 loaded, while 3 failed, after
    assert traffic and not traffic[0].failed(), traffic[0].failed()[:3]
    assert traffic[0].answered_between(events[1]["at"] - events[1]["reload_seconds"], events[1]["at"]) > 0
    assert traffic[0].answered_between(failed_at, failed_at + 1.0) > 0
    # window t+1 through version t: the same sessions, the same rank metrics as offline
    rows = list(csv.DictReader(open(out / continuous.REPORT_CSV)))
    names = metric_names(full=False)
    assert len(rows) == 2 * len(names) and [int(r["version"]) for r in rows[::len(names)]] == [1, 2]
    for r in rows:
        assert float(r["served"]) == pytest.approx(float(r["offline"]), abs=1e-12), r
    assert max(float(r["served"]) for r in rows if r["metric"] == "recall@20") > 0.3  # it learnt
    offline = dict(zip(names, (float(r["offline"]) for r in rows[len(names):])))
    scalars = read_scalars(out)
    assert len(scalars["served_next_window/ndcg@10"]) == 2
    assert scalars["served_next_window/ndcg@10"][1][1] == pytest.approx(offline["ndcg@10"])
    assert scalars["next_window/ndcg@10"][1][1] == pytest.approx(offline["ndcg@10"])


def test_incremental_serve_starts_and_stops_its_own_server(tmp_path, capsys):
    """`seqrec incremental --serve` without serve.url: the run starts its own tritonserver
    (explicit model control) on the repository, publishes every window's model there, evaluates
    the next window through it, and stops it at the end, leaving the last version in the
    repository for `seqrec serve`."""
    import csv

    from seqrec.cli import main
    from seqrec.model_repository import continuous
    from seqrec.model_repository.export import MODEL, PREPROCESS, versions

    data = tmp_path / "data"
    run_etl(ETLConfig(output_dir=str(data), key="session_id", split="time-window", min_len=2,
                      max_len=20, valid_fraction=0.2, test_fraction=0.2),
            interactions=chained_sessions(days=1, per_day=150), progress=False)
    windows = len(list(data.glob("20*")))
    out = tmp_path / "run"
    recipe = tmp_path / "inc.yaml"
    recipe.write_text(json.dumps({"incremental": _tiny_section(data, out, serve={"request_rows": 32})}))
    assert main(["incremental", "--serve", "--config", str(recipe)]) == 0
    report = json.loads((out / "incremental.json").read_text())
    serving = report["serving"]
    assert serving["own_server"] is True and serving["version"] == windows
    repo = Path(serving["repository"])
    assert repo == out / "model_repository"
    assert versions(repo / MODEL) == versions(repo / PREPROCESS) == list(range(1, windows + 1))
    rows = list(csv.DictReader(open(out / continuous.REPORT_CSV)))
    assert rows and {int(r["version"]) for r in rows} == set(range(1, windows))
    for r in rows:  # window t+1 through version t on the run's own server: the offline metrics
        assert float(r["served"]) == pytest.approx(float(r["offline"]), abs=1e-12), r
    printed = capsys.readouterr().out
    for v in range(1, windows + 1):
        assert f"version {v} serving at {serving['url']}" in printed
    assert "equal on every window" in printed and f"(version {windows})" in printed
    # the server was stopped with the run: nothing listens on its address any more
    host, port = serving["url"].rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
