"""Run a real Triton Inference Server (2.51, from the `nvidia-pytriton` wheel) as a child process.

Process supervision only: start on free 127.0.0.1 ports, wait until ready, restart on the same
ports, stop, and never outlive the parent (the child asks the kernel for SIGTERM when its parent
dies: PR_SET_PDEATHSIG). The server tree it runs from is assembled by `server_tree`; model
control is the gRPC client in `seqrec.client.control`. Triton's model-repository, shared-memory,
trace and logging APIs are restricted: on gRPC to callers sending `repository_key`, on HTTP to a
key nobody is given, so HTTP can never load (and run) uploaded model files.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..client.control import REPOSITORY_KEY_NAME
from .server_tree import prepare_server_dir, server_env

__all__ = ["TritonServer", "ServerTLS", "prepare_server_dir", "RESTRICTED_APIS", "group_processes"]

# Every API that changes what the server runs or reads beyond inference; health, metadata,
# inference, model-config and statistics stay open.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
_PR_SET_PDEATHSIG = 1

_PORT_CLASH_MARKERS = ("address already in use", "already in use", "failed to bind", "bind failed")
_LIVE: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    # An interpreter exit (tests, a crashed CLI) must not leave an orphaned server holding ports.
    for server in list(_LIVE):
        try:
            server.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort during interpreter shutdown
            pass


atexit.register(_stop_all_at_exit)


def _free_ports(n: int) -> list[int]:
    """Ask the kernel for n distinct free ports (bind to port 0); all held open until chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, n: int = 40, offset: int = 0) -> str:
    """Last n lines of the log written after byte `offset` (an appended log_file may hold
    earlier runs whose errors must not be mistaken for this one's)."""
    try:
        with open(path, "r", errors="replace") as f:
            f.seek(offset)
            return "".join(deque(f, maxlen=n))
    except OSError:
        return "<no server log>"


def _die_with_parent(parent_pid: int):
    """preexec_fn: the kernel sends the child SIGTERM (a clean shutdown of server and stubs)
    when the thread that forked it ends, whatever the reason (kill -9 included)."""
    def set_pdeathsig() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return set_pdeathsig


@dataclass(frozen=True)
class ServerTLS:
    """TLS on the gRPC endpoint (PEM files). client_ca: require client certificates signed by it."""

    certificate: str
    private_key: str
    client_ca: str | None = None

    def flags(self) -> list[str]:
        out = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.certificate}",
               f"--grpc-server-key={self.private_key}"]
        if self.client_ca:
            out += [f"--grpc-root-cert={self.client_ca}", "--grpc-use-ssl-mutual=true"]
        return out


def _http(url: str, method: str = "GET", timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:  # 4xx/5xx still carry Triton's JSON error body
        return e.code, e.read()


class TritonServer:
    """A tritonserver child process bound to 127.0.0.1 on free ports.

    >>> with TritonServer("model_repository/build") as srv:
    ...     RecommenderClient(srv.grpc_url).recommend([1, 2, 3])

    repository_key: the key gRPC model control must send (random when not given);
    tls: TLS on gRPC. The process that starts the server must outlive it in the same thread
    (PR_SET_PDEATHSIG fires when the forking thread ends).
    """

    def __init__(self, model_repository: str | Path, *, model_control: str = "none",
                 load_models: list[str] | None = None, log_file: str | Path | None = None,
                 workdir: str | Path | None = None, repository_key: str | None = None,
                 tls: ServerTLS | None = None):
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', not {model_control!r}")
        if load_models and model_control != "explicit":
            raise ValueError("load_models needs model_control='explicit'")
        self.model_repository = Path(model_repository).resolve()
        self.model_control = model_control
        self.load_models = list(load_models or [])
        self.log_file = Path(log_file) if log_file is not None else None
        self.workdir = Path(workdir) if workdir is not None else None
        self.repository_key = repository_key or secrets.token_urlsafe(24)
        self.tls = tls
        self.startup_seconds: float | None = None
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._log_path: Path | None = None
        self._own_log = False
        self._ports: dict[str, int] = {}
        # A unique shm prefix per server: cleanup after a kill touches only this server's
        # segments, never those of another server running beside it.
        self._shm_prefix = f"triton_python_backend_shm_region_seqrec{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self._shm_before: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ properties
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self._port('grpc')}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._port('http')}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self._port('metrics')}/metrics"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise RuntimeError("server not started")
        return self._ports[name]

    # ------------------------------------------------------------------ lifecycle
    def _command(self, server_dir: Path) -> list[str]:
        p = self._ports
        cmd = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            "--http-address=127.0.0.1", f"--http-port={p['http']}",
            "--grpc-address=127.0.0.1", f"--grpc-port={p['grpc']}",
            "--metrics-address=127.0.0.1", f"--metrics-port={p['metrics']}",
            f"--model-control-mode={self.model_control}",
            "--exit-on-error=true",  # a model that fails to load fails startup, not later requests
            "--log-verbose=0",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--exit-timeout-secs=5",  # a clean stop waits this long for in-flight requests
            # HTTP: a key nobody is given, so uploads (load with file: parameters) never pass.
            f"--http-restricted-api={','.join(RESTRICTED_APIS)}:"
            f"{REPOSITORY_KEY_NAME}={secrets.token_urlsafe(24)}",
            f"--grpc-restricted-protocol={','.join(RESTRICTED_APIS)}:"
            f"{REPOSITORY_KEY_NAME}={self.repository_key}",
        ]
        if self.tls is not None:
            cmd += self.tls.flags()
        cmd += [f"--load-model={m}" for m in self.load_models]
        if self.model_control == "explicit":
            # Models come and go on request here, and one failed (re)load must not mark the whole
            # server unready while the versions already loaded keep serving: readiness is then
            # asked per model (/v2/models/<name>/ready, the client's is_ready()).
            cmd.append("--strict-readiness=false")
        return cmd

    def start(self, timeout: float = 180) -> "TritonServer":
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            return self._start(timeout, keep_ports=False)

    def restart(self, timeout: float = 180) -> float:
        """Kill the whole process group (a server whose backend died may take its full exit
        timeout to stop) and start again on the same ports, so clients reconnect by themselves.
        Returns the seconds it took."""
        t0 = time.perf_counter()
        with self._lock:
            self._kill()
            self._start(timeout, keep_ports=True)
            self.restarts += 1
        return time.perf_counter() - t0

    def _start(self, timeout: float, keep_ports: bool) -> "TritonServer":
        """The body of start() and restart(); the caller holds self._lock."""
        if not self.model_repository.is_dir():
            raise RuntimeError(f"model repository {self.model_repository} does not exist")
        server_dir = prepare_server_dir(self.workdir)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_path, self._own_log = self.log_file, False
        elif not keep_ports or self._log_path is None:  # a restart keeps writing the same log
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path, self._own_log = Path(name), True
        self._shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        for attempt in range(3):  # the free ports may be taken before the server binds them
            if not (keep_ports and self._ports):
                self._ports = dict(zip(("http", "grpc", "metrics"), _free_ports(3)))
            offset = self._log_path.stat().st_size if self._log_path.exists() else 0
            with open(self._log_path, "ab") as log:
                # Own session = own process group, so stop() can kill the stubs with it.
                self._proc = subprocess.Popen(self._command(server_dir), env=server_env(),
                                              stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              preexec_fn=_die_with_parent(os.getpid()))
            _LIVE.add(self)
            err = self._wait_ready(deadline)
            if err is None:
                self.startup_seconds = time.perf_counter() - t0
                return self
            tail = _tail(self._log_path, offset=offset)
            self._kill()
            if attempt < 2 and err == "exited" and not keep_ports and any(
                    m in tail.lower() for m in _PORT_CLASH_MARKERS):
                continue
            raise RuntimeError(
                f"tritonserver failed to start ({err}); repository {self.model_repository}; "
                f"log {self._log_path}, last lines:\n{tail}")
        raise AssertionError("unreachable")

    def _wait_ready(self, deadline: float) -> str | None:
        url = f"{self.http_url}/v2/health/ready"
        while True:
            if self._proc.poll() is not None:
                return "exited"
            try:
                if _http(url, timeout=1.0)[0] == 200:
                    return None
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                return "timed out waiting for /v2/health/ready"
            time.sleep(0.2)

    def is_ready(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            return False
        try:
            return _http(f"{self.http_url}/v2/health/ready", timeout=2.0)[0] == 200
        except OSError:
            return False

    def stub_pids(self) -> set[int]:
        """The python-backend stubs running now (one per model instance)."""
        if self._proc is None or self._proc.poll() is not None:
            return set()
        return {pid for pid, p in group_processes(self._proc.pid).items()
                if b"triton_python_backend_stub" in p.command}

    def stop(self, timeout: float = 30) -> None:
        with self._lock:
            if self._proc is None:
                return
            if self._proc.poll() is None:
                # SIGTERM to the server alone lets it unload models and stop its stubs cleanly.
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()
            _LIVE.discard(self)
            if self._own_log and self._log_path is not None:
                self._log_path.unlink(missing_ok=True)

    def _kill(self) -> None:
        """SIGKILL whatever is left of the process group, then drop this server's shm segments."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the server's pid
        for _ in range(50):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except PermissionError:
                break
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
            if not _group_alive(pgid):
                break
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._cleanup_shm()

    def _cleanup_shm(self) -> None:
        if not os.path.isdir("/dev/shm"):
            return
        for name in set(os.listdir("/dev/shm")) - self._shm_before:
            if name.startswith(self._shm_prefix):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._proc is not None and self._proc.poll() is None else "stopped"
        where = f" grpc={self.grpc_url}" if self._ports else ""
        return f"TritonServer({str(self.model_repository)!r}, {state}{where})"


@dataclass(frozen=True)
class GroupProcess:
    command: bytes  # the command line, NUL-separated
    cpu_seconds: float  # user + system time used so far


def group_processes(pgid: int) -> dict[int, GroupProcess]:
    """pid -> command line and CPU time of the live (non-zombie) processes of a process group
    (the server's: tritonserver and its python-backend stubs)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            # after "(comm)": state, ppid, pgrp, ...; utime and stime are the 12th and 13th
            fields = stat[stat.rfind(b")") + 2:].split()
            if len(fields) > 12 and int(fields[2]) == pgid and fields[0] != b"Z":
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = GroupProcess(f.read(), (int(fields[11]) + int(fields[12])) / tick)
        except OSError:
            continue
    return out


def _group_alive(pgid: int) -> bool:
    """True if a live (non-zombie) process is still in the group (zombies may never be reaped
    in a container whose PID 1 does not reap, so they must not count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(group_processes(pgid))
