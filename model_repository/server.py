"""Start and stop a real Triton Inference Server (2.51) from the `nvidia-pytriton` wheel.

The wheel ships the `tritonserver` binary, the python backend and one python-backend stub per
Python version (see docs/serving.md, "How the server runs"). The server expects the stub inside
`<backend-dir>/python/`, so we assemble a server tree once (bin, backends, caches + the stub for
the running interpreter) in a cache dir and start the binary from there with the environment it
needs (bundled libraries + libpython on LD_LIBRARY_PATH, this venv's python first on PATH).

Only the standard library is used here (urllib for the HTTP API), so `seqrec serve` does not
pull in tritonclient or torch just to run the server.
"""
from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections import deque
from pathlib import Path

__all__ = ["TritonServer", "serve_forever", "prepare_server_dir"]

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


def _pytriton_dirs() -> tuple[Path, Path]:
    """Return (pytriton/tritonserver dir, nvidia_pytriton.libs dir) of the installed wheel."""
    spec = importlib.util.find_spec("pytriton")  # find_spec: no need to import pytriton itself
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed (pip install 'seqrec[serve]')")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    server_src = pkg / "tritonserver"
    libs = pkg.parent / "nvidia_pytriton.libs"
    if not (server_src / "bin" / "tritonserver").is_file():
        raise RuntimeError(f"no tritonserver binary under {server_src}")
    return server_src, libs


def _default_cache_root() -> Path:
    env = os.environ.get("SEQREC_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqrec"


def prepare_server_dir(cache_root: str | Path | None = None) -> Path:
    """Build (once) and return a server tree: bin/, backends/ (python stub inside), caches/.

    Built in a temp dir and renamed into place, so a crashed or concurrent copy never leaves a
    half tree behind under the final name.
    """
    server_src, _ = _pytriton_dirs()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_src / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no python backend stub for Python {py}")
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    dest = root / f"tritonserver-pytriton{version}-py{py.replace('.', '')}"
    if (dest / "backends" / "python" / "triton_python_backend_stub").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tritonserver-", dir=root))
    try:
        for sub in ("bin", "backends", "caches"):
            shutil.copytree(server_src / sub, tmp / sub, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, tmp / "backends" / "python" / stub.name)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process won the race (dest now exists): use its tree, drop ours.
            if not (dest / "backends" / "python" / stub.name).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
    """

    def __init__(self, model_repository: str | Path, *, model_control: str = "none",
                 load_models: list[str] | None = None, log_file: str | Path | None = None,
                 workdir: str | Path | None = None):
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', not {model_control!r}")
        if load_models and model_control != "explicit":
            raise ValueError("load_models needs model_control='explicit'")
        self.model_repository = Path(model_repository).resolve()
        self.model_control = model_control
        self.load_models = list(load_models or [])
        self.log_file = Path(log_file) if log_file is not None else None
        self.workdir = Path(workdir) if workdir is not None else None
        self.startup_seconds: float | None = None
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
        ]
        cmd += [f"--load-model={m}" for m in self.load_models]
        if self.model_control == "explicit":
            # Models come and go on request here, and one failed (re)load must not mark the whole
            # server unready while the versions already loaded keep serving: readiness is then
            # asked per model (/v2/models/<name>/ready, the client's is_ready()).
            cmd.append("--strict-readiness=false")
        return cmd

    def _env(self) -> dict[str, str]:
        _, libs = _pytriton_dirs()
        env = dict(os.environ)
        # The stub runs the first python3 on PATH: make it this interpreter's venv (no resolve():
        # following the venv symlink would lose the venv's site-packages).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # The copied binary no longer finds the wheel's bundled libs; the stub links libpython.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            x for x in (str(libs), libdir, env.get("LD_LIBRARY_PATH", "")) if x)
        return env

    def start(self, timeout: float = 180) -> "TritonServer":
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            if not self.model_repository.is_dir():
                raise RuntimeError(f"model repository {self.model_repository} does not exist")
            server_dir = prepare_server_dir(self.workdir)
            if self.log_file is not None:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                self._log_path, self._own_log = self.log_file, False
            else:
                fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
                os.close(fd)
                self._log_path, self._own_log = Path(name), True
            self._shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
            t0 = time.perf_counter()
            deadline = time.monotonic() + timeout
            for attempt in range(3):  # the free ports may be taken before the server binds them
                self._ports = dict(zip(("http", "grpc", "metrics"), _free_ports(3)))
                offset = self._log_path.stat().st_size if self._log_path.exists() else 0
                with open(self._log_path, "ab") as log:
                    # Own session = own process group, so stop() can kill the stubs with it.
                    self._proc = subprocess.Popen(self._command(server_dir), env=self._env(),
                                                  stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True)
                _LIVE.add(self)
                err = self._wait_ready(deadline)
                if err is None:
                    self.startup_seconds = time.perf_counter() - t0
                    return self
                tail = _tail(self._log_path, offset=offset)
                self._kill()
                if attempt < 2 and err == "exited" and any(
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

    # ------------------------------------------------------------------ model control
    def _repo_call(self, name: str, action: str, timeout: float) -> None:
        code, body = _http(f"{self.http_url}/v2/repository/models/{name}/{action}", "POST",
                           timeout=timeout)
        if code != 200:
            try:
                msg = json.loads(body).get("error", body.decode(errors="replace"))
            except ValueError:
                msg = body.decode(errors="replace")
            raise RuntimeError(f"{action} of model {name!r} failed (HTTP {code}): {msg}")

    def load_model(self, name: str, timeout: float = 180) -> None:
        """Load (or reload) a model; needs model_control='explicit'. Returns once it is ready."""
        self._repo_call(name, "load", timeout)

    def unload_model(self, name: str, timeout: float = 60) -> None:
        """Unload a model and wait until it is no longer ready."""
        self._repo_call(name, "unload", timeout)
        deadline = time.monotonic() + timeout
        while self.is_model_ready(name) and time.monotonic() < deadline:
            time.sleep(0.1)

    def is_model_ready(self, name: str) -> bool:
        try:
            return _http(f"{self.http_url}/v2/models/{name}/ready", timeout=2.0)[0] == 200
        except OSError:
            return False


def _group_alive(pgid: int) -> bool:
    """True if a live (non-zombie) process is still in the group (zombies may never be reaped
    in a container whose PID 1 does not reap, so they must not count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "(comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def serve_forever(repo: str | Path, **kw) -> None:
    """Start a server, print its URLs, block until Ctrl-C / SIGTERM, then stop it cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    server = TritonServer(repo, **kw)
    try:
        server.start()
        print(f"tritonserver ready in {server.startup_seconds:.1f}s (pid {server.pid})\n"
              f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n"
              f"  metrics {server.metrics_url}\n  log     {server.log_path}\n"
              "Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if server._proc is not None and server._proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited unexpectedly:\n{_tail(server.log_path)}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("tritonserver stopped.", flush=True)
