"""Assemble the directory tree the `tritonserver` binary of the `nvidia-pytriton` wheel runs from.

The wheel ships the binary, the python backend and one python-backend stub per Python version
(docs/serving.md, "How the server runs"); the server expects the stub inside
`<backend-dir>/python/`. The tree (bin, backends, caches + the stub for the running interpreter)
is built once in a cache dir; `server_env` gives the environment the copied binary needs (bundled libraries + libpython on LD_LIBRARY_PATH, this
venv's python first on PATH so the stub runs it). Standard library only.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

__all__ = ["prepare_server_dir", "server_env", "pytriton_dirs"]

STUB = "triton_python_backend_stub"


def pytriton_dirs() -> tuple[Path, Path]:
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
    server_src, _ = pytriton_dirs()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_src / "python_backend_stubs" / py / STUB
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no python backend stub for Python {py}")
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    dest = root / f"tritonserver-pytriton{version}-py{py.replace('.', '')}"
    if (dest / "backends" / "python" / STUB).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tritonserver-", dir=root))
    try:
        for sub in ("bin", "backends", "caches"):
            shutil.copytree(server_src / sub, tmp / sub, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, tmp / "backends" / "python" / STUB)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process won the race (dest now exists): use its tree, drop ours.
            if not (dest / "backends" / "python" / STUB).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the copied binary and the stubs it starts."""
    _, libs = pytriton_dirs()
    env = dict(os.environ if base is None else base)
    # The stub runs the first python3 on PATH: make it this interpreter's venv (no resolve():
    # following the venv symlink would lose the venv's site-packages).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The copied binary no longer finds the wheel's bundled libs; the stub links libpython.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        x for x in (str(libs), libdir, env.get("LD_LIBRARY_PATH", "")) if x)
    return env
