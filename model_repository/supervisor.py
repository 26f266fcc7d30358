"""Keep a served model answering: a canary request every interval; restart the server when its
process exits or a backend behind it died (a python-backend stub killed, an out-of-memory kill).

Triton keeps its ready flags up while a dead stub fails every request ("Stub process ... is not
healthy"), so the canary is a real inference. A model that is simply not loaded (an unload under
explicit model control) is reported, never "repaired". A restart reloads the repository's
newest versions on the same ports; clients retrying with backoff resume by themselves.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from tritonclient.utils import InferenceServerException

from ..client.connection import retryable
from ..client.control import KEY_ENV, default_key_file
from ..client.grpc_client import RecommenderClient
from .server import TritonServer, _tail

__all__ = ["Supervisor", "serve_forever"]

log = logging.getLogger("seqrec.serve")


def _is_backend_fault(err) -> bool:
    """A failure a restart repairs: a dead backend, or a canary left unanswered."""
    return isinstance(err, InferenceServerException) and (
        retryable(err) or "DEADLINE_EXCEEDED" in str(err.status() or ""))


class Supervisor:
    """Watches one TritonServer through a canary request to `model`.

    check() is one round: returns "ok", "not-ready" (reported only) or "restarted". Call it from
    the thread that started the server (see TritonServer: the child dies with that thread)."""

    def __init__(self, server: TritonServer, model: str = "seqrec", *, interval_s: float = 0.5,
                 canary_timeout_s: float = 1.0, unanswered_before_restart: int = 3):
        self.server = server
        self.model = model
        self.interval_s = interval_s
        self.canary_timeout_s = canary_timeout_s
        self.unanswered_before_restart = unanswered_before_restart
        self._client: RecommenderClient | None = None
        self._faults = 0
        self._down_since: float | None = None
        self._healthy_stubs: set[int] = set()  # the stubs while the canary last passed

    def _probe(self):
        if self._client is None:
            self._client = RecommenderClient(self.server.grpc_url, self.model, retries=0,
                                             timeout_s=self.canary_timeout_s)
        return self._client.probe(self.canary_timeout_s)

    def check(self) -> str:
        proc = self.server._proc
        if proc is not None and proc.poll() is not None:
            log.error("tritonserver exited (code %s); restarting. Last log lines:\n%s",
                      proc.returncode, _tail(self.server.log_path, n=15))
            return self._restart("the server process exited")
        err = self._probe()
        if err is None:
            self._healthy_stubs = self.server.stub_pids()
            if self._down_since is not None:
                log.warning("model %r answers again, %.1f s after it stopped", self.model,
                            time.monotonic() - self._down_since)
            self._down_since, self._faults = None, 0
            return "ok"
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("model %r is not ready: %s", self.model, _message(err))
        if not _is_backend_fault(err):
            return "not-ready"
        self._faults += 1
        # A stub that died never comes back by itself. Requests queued on it may hang rather
        # than fail, so a vanished stub decides at once; a slow canary alone needs repeats.
        dead = self._healthy_stubs - self.server.stub_pids()
        if dead:
            return self._restart(f"python-backend stub(s) {sorted(dead)} died; {_message(err)}")
        if retryable(err) or self._faults >= self.unanswered_before_restart:
            return self._restart(_message(err))
        return "not-ready"

    def _restart(self, reason: str) -> str:
        log.warning("restarting tritonserver (%s)", reason)
        seconds = self.server.restart()
        self._faults, self._healthy_stubs = 0, set()
        log.warning("tritonserver restarted in %.1f s on the same ports (restart %d)",
                    seconds, self.server.restarts)
        return "restarted"

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self.check()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _message(err) -> str:
    if isinstance(err, InferenceServerException):
        return f"{err.message() or err} [{err.status()}]"
    return str(err)


def _write_key(path: Path, key: str) -> None:
    """Owner-only key file, written whole (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)


def serve_forever(repo: str | Path, *, model_control: str = "none",
                  load_models: list[str] | None = None, model: str = "seqrec",
                  key_file: str | Path | None = None, supervise: bool = True, **kw) -> None:
    """Start a server, print its URLs, supervise it until Ctrl-C / SIGTERM, then stop it.

    With explicit model control the repository key (${KEY_ENV}, else a random one) is written
    to key_file (default: seqrec.client.control.default_key_file()) for `seqrec model`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    explicit = model_control == "explicit"
    key = os.environ.get(KEY_ENV) or None
    server = TritonServer(repo, model_control=model_control, load_models=load_models,
                          repository_key=key, **kw)
    key_path = Path(key_file) if key_file is not None else default_key_file()
    supervisor = Supervisor(server, model) if supervise else None
    try:
        server.start()
        if explicit:
            _write_key(key_path, server.repository_key)
        print(f"tritonserver ready in {server.startup_seconds:.1f}s (pid {server.pid})\n"
              f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n"
              f"  metrics {server.metrics_url}\n  log     {server.log_path}\n"
              + (f"  model control key in {key_path} (or ${KEY_ENV})\n" if explicit else "")
              + ("  supervised: canary to %r every %.1fs\n" % (model, supervisor.interval_s)
                 if supervisor else "")
              + "Ctrl-C to stop.", flush=True)
        while not stop.wait(supervisor.interval_s if supervisor else 0.5):
            if supervisor is not None:
                supervisor.check()
            elif server._proc is not None and server._proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited unexpectedly:\n{_tail(server.log_path)}")
    finally:
        if supervisor is not None:
            supervisor.close()
        server.stop()
        if explicit and key_path.is_file() and key_path.read_text().strip() == server.repository_key:
            key_path.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("tritonserver stopped.", flush=True)
