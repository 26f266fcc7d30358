"""Soak test of `seqrec serve` under faults: many requests at concurrency 16 with 10% bad ones, a
kill -9 of the seqrec_model python-backend stub and a reload of a new export during the run;
prints a table, writes bench/results/soak.json.

    python bench/soak.py                          # 100,000 requests (builds artifacts if missing)
    python bench/soak.py --requests 20000         # a shorter run; the JSON states the count

The server runs as users run it (`seqrec serve --model-control explicit`, supervised) on a copy
of the demo repository. The client is the asyncio client with its default retries (deadline
--timeout). A probe thread sends the canary request (client.is_ready) every 0.1 s: the recovery
window runs from the kill until the probe is answered again. Every good answer is compared with
the answer the same session got before the run; a bad request must be refused. The reload
exports the same trained model again (a new version, identical answers) and runs
`seqrec model load seqrec` while the load goes on.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from loadgen import BAD_KINDS, drive, ensure_model, percentiles, same_answer, workload  # bench/ beside this file
from seqrec.client import RecommendationError, RecommenderClient

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ("import json, sys\nfrom seqrec.model_repository.export import ExportConfig, export_repository\n"
          "export_repository(ExportConfig(**json.loads(sys.argv[1])))")


def serve(repo: Path, key_file: Path, log: Path) -> tuple[subprocess.Popen, str, int]:
    """`seqrec serve` (explicit model control); (process, gRPC address, tritonserver pid)."""
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "serve", "--config",
                             str(ROOT / "configs/ml-100k.yaml"), "--repository", str(repo),
                             "--model-control", "explicit", "--key-file", str(key_file)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (m := re.search(r"pid (\d+)\).*?gRPC\s+(\S+)", log.read_text(), re.S)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"seqrec serve did not start:\n{log.read_text()}")
        time.sleep(0.3)
    return proc, m.group(2), int(m.group(1))


def server_pid(serve_proc: subprocess.Popen) -> int:
    """The pid of the tritonserver `seqrec serve` runs now (a restart starts a new one)."""
    return next(p.pid for p in psutil.Process(serve_proc.pid).children()
                if "tritonserver" in " ".join(p.cmdline()))


def stubs(pid: int) -> dict[str, psutil.Process]:
    """The python-backend stubs of a server, by "<model>/<version>" (two versions of a member
    are loaded while a reload swaps them)."""
    out = {}
    for p in psutil.Process(pid).children(recursive=True):
        cmd = " ".join(p.cmdline())
        m = re.search(r"/(seqrec_\w+)/(\d+)/model\.py", cmd)
        if "triton_python_backend_stub" in cmd and m:
            out[f"{m.group(1)}/{m.group(2)}"] = p
    return out


def rss_mb(serve_proc: subprocess.Popen) -> dict:
    pid = server_pid(serve_proc)
    mb = lambda p: round(p.memory_info().rss / 2**20, 1)  # noqa: E731
    return dict(serve_cli=mb(psutil.Process(serve_proc.pid)), tritonserver=mb(psutil.Process(pid)),
                **{f"stub_{name}": mb(p) for name, p in sorted(stubs(pid).items())})


class Probe(threading.Thread):
    """Canary request every 0.1 s; keeps (time, answered) transitions."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.changes = url, threading.Event(), []

    def run(self):
        state = None
        with RecommenderClient(self.url, retries=0) as c:
            while not self.stop.is_set():
                ok = c.is_ready(timeout_s=1.0)
                if ok != state:
                    self.changes.append((time.perf_counter(), ok))
                    state = ok
                time.sleep(0.1)

    def window(self, t_kill: float) -> tuple[float | None, float | None]:
        """(first not-answered time, answered-again time) after t_kill."""
        down = next((t for t, ok in self.changes if t >= t_kill and not ok), None)
        up = None if down is None else next((t for t, ok in self.changes if t > down and ok), None)
        return down, up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/ml-100k.yaml"))
    ap.add_argument("--epochs", type=int, default=5, help="when the model must be trained first")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bad-share", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=60.0, help="client deadline per request")
    ap.add_argument("--no-compile", action="store_true",
                    help="serve the plain torch.export program (no AOTInductor scorer)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/soak.json"))
    args = ap.parse_args()

    from seqrec.client.control import ModelControl, read_key
    from seqrec.config import build, load_recipe
    from seqrec.model_repository.export import ExportConfig, versions

    source = ensure_model(args.config, args.epochs, not args.no_compile)
    export_cfg = build(ExportConfig, load_recipe(args.config).get("export"))
    requests = workload(Path(export_cfg.data_dir), args.requests, args.bad_share)
    n = len(requests)
    kill_at, reload_at = n // 3, 2 * n // 3
    results: list = [None] * n
    events: dict = {}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        repo = tmp / "repo"
        shutil.copytree(source, repo)
        export_cfg.repository, export_cfg.compile_scorer = str(repo), not args.no_compile
        log, key_file = tmp / "serve.log", tmp / "key"
        proc, url, _ = serve(repo, key_file, log)
        try:
            with RecommenderClient(url, timeout_s=args.timeout) as c:  # the answers before any fault
                expected = {}
                for key, items, bad in requests:
                    if not bad and key not in expected:
                        expected[key] = c.recommend(items)
            rss_start = rss_mb(proc)
            probe = Probe(url)
            probe.start()
            done = [0]

            def kill_stub():
                events["kill"] = time.perf_counter()
                model = stubs(server_pid(proc))
                model[max((k for k in model if k.startswith("seqrec_model/")),
                          key=lambda k: int(k.split("/")[1]))].kill()

            def reload():  # in other processes, as a user runs them (not under this GIL)
                events["reload_start"] = time.perf_counter()
                subprocess.run([sys.executable, "-c", EXPORT, json.dumps(vars(export_cfg))],
                               check=True, capture_output=True, timeout=900)
                events["export_done"] = time.perf_counter()
                load = subprocess.run([sys.executable, "-m", "seqrec.cli", "model", "load", "seqrec",
                                       "--url", url, "--key-file", str(key_file)],
                                      capture_output=True, text=True, timeout=300)
                events["reload_end"] = time.perf_counter()
                events["reload_exit"] = load.returncode
                with ModelControl(url, key=read_key(key_file)) as ctl:
                    events["served_versions"] = ctl.member_versions("seqrec")

            def record(i, answer, t0, t1):
                results[i] = (answer, t0, t1)
                done[0] += 1
                if done[0] == kill_at:
                    threading.Thread(target=kill_stub, daemon=True).start()
                elif done[0] == reload_at:
                    threading.Thread(target=reload, daemon=True).start()

            seconds = asyncio.run(drive(url, requests, args.concurrency, record,
                                        timeout_s=args.timeout))
            while "reload_end" not in events and time.perf_counter() - events["reload_start"] < 300:
                time.sleep(0.5)  # a short run may end before the reload does
            probe.stop.set()
            probe.join(10)
            rss_end = rss_mb(proc)
            served = versions(repo / "seqrec_model")
            serve_log = log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    down, up = probe.window(events["kill"])
    window_end = up if up is not None else float("inf")
    inside = lambda t0, t1: t1 >= events["kill"] and t0 <= window_end  # noqa: E731
    lost = wrong = bad_answered = 0
    lost_in = wrong_in = 0
    latencies, outside_latencies = [], []
    for (key, _, bad), (answer, t0, t1) in zip(requests, results):
        failed = isinstance(answer, RecommendationError)
        if bad:
            bad_answered += not failed
            continue
        if failed:
            lost += 1
            lost_in += inside(t0, t1)
            continue
        ms = (t1 - t0) * 1000
        latencies.append(ms)
        if not inside(t0, t1):
            outside_latencies.append(ms)
        if not same_answer(answer, expected[key]):
            wrong += 1
            wrong_in += inside(t0, t1)
    n_bad = sum(b for _, _, b in requests)
    rel = lambda t: None if t is None else round(t - events["kill"], 2)  # noqa: E731
    result = dict(
        what="seqrec serve (supervised, explicit model control) on the demo MovieLens-100k "
             "ensemble: asyncio gRPC client with default retries, a kill -9 of the seqrec_model "
             "stub after a third of the requests and an export + `seqrec model load` after two "
             "thirds; client and server on the same machine",
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                     python=platform.python_version(), load_average=os.getloadavg()),
        scorer="scorer_compiled.pt2" if not args.no_compile else "scorer.pt2",
        requests=n, concurrency=args.concurrency, bad_share=args.bad_share,
        bad_kinds=list(BAD_KINDS), client_deadline_s=args.timeout, seconds=round(seconds, 1),
        requests_per_s=round(n / seconds, 1),
        summary=dict(
            good=n - n_bad, bad=n_bad, bad_answered=bad_answered,
            lost=lost, lost_inside_recovery=lost_in,
            wrong=wrong, wrong_inside_recovery=wrong_in, wrong_outside_recovery=wrong - wrong_in,
            recovery_window_s=rel(up), not_ready_reported_after_s=rel(down),
            reload_s=round(events["reload_end"] - events["export_done"], 2)
            if "reload_end" in events else None,
            export_s=round(events["export_done"] - events["reload_start"], 2)
            if "export_done" in events else None,
            reload_exit_code=events.get("reload_exit"),
            served_after_reload=events.get("served_versions"), versions_on_disk=served,
            server_restarts=serve_log.count("restarted in"),
            **{f"{k}_all": v for k, v in percentiles(np.array(latencies)).items()},
            **{f"{k}_outside_recovery": v
               for k, v in percentiles(np.array(outside_latencies)).items()}),
        rss_mb=dict(start=rss_start, end=rss_end))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["summary"].items():
        print(f"{k:32s} {v}")
    print(f"{'rss_mb start':32s} {rss_start}\n{'rss_mb end':32s} {rss_end}")
    print(f"{n:,} requests in {seconds:.0f} s ({n / seconds:,.0f}/s) -> {out}")


if __name__ == "__main__":
    main()
