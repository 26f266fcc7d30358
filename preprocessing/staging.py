"""Write a folder completely or not at all, and replace an existing one without a gap.

A run writes into a hidden sibling `.<name>.staging-<random>` that it holds an exclusive flock on
for its whole life. When complete, the staging folder and the final folder are swapped in one
rename (Linux renameat2 RENAME_EXCHANGE), so `<name>` is at every moment either the old or the
new complete folder, never missing; the old one, now under the staging name, is then removed.
A run killed at any point leaves at most a staging folder that nobody holds a lock on: the next
run for the same folder removes it (`remove_leftovers`).

Fault injection: with SEQREC_KILL_AT_STEP=k the process SIGKILLs itself at the k-th `step()`
(counted across this process), so a test can stop a run between any two file operations.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["staged_directory", "staging_dir", "remove_leftovers", "exchange", "step",
           "KILL_ENV"]

KILL_ENV = "SEQREC_KILL_AT_STEP"
_steps = 0


def step() -> None:
    """A point between two file operations where a test may kill this process."""
    global _steps
    _steps += 1
    if os.environ.get(KILL_ENV) == str(_steps):
        os.kill(os.getpid(), signal.SIGKILL)


def _prefix(final: Path) -> str:
    return f".{final.name}.staging-"


def _try_lock(path: Path) -> int | None:
    """An open fd holding an exclusive flock on `path`, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_leftovers(final: str | Path) -> list[Path]:
    """Remove the staging folders of runs for `final` that died (nobody holds their lock)."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for path in final.parent.glob(_prefix(final) + "*"):
        fd = _try_lock(path)
        if fd is None:
            continue  # a live run's
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


@contextmanager
def staging_dir(final: str | Path) -> Iterator[Path]:
    """A new, locked, empty staging folder beside `final` (leftovers of dead runs removed first);
    removed on exit unless it was moved away."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    path = Path(tempfile.mkdtemp(prefix=_prefix(final), dir=final.parent))
    fd = _try_lock(path)
    step()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two existing paths in one atomic rename; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def replace_dir(new: Path, final: Path) -> None:
    """Put the folder `new` at `final`; an existing `final` is swapped out atomically and removed."""
    if not final.exists():
        new.rename(final)
        step()
        return
    if exchange(new, final):  # `new` now holds the old folder
        step()
        shutil.rmtree(new, ignore_errors=True)
        return
    # No atomic swap here (not Linux, or a filesystem without it): a brief gap between renames.
    aside = new.with_name(new.name + "-old")
    final.rename(aside)
    step()
    new.rename(final)
    step()
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def staged_directory(final: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `final` (without a moment where `final`
    is missing), on any error it is removed, so readers never see a half-written output."""
    final = Path(final)
    with staging_dir(final) as staging:
        content = staging / final.name  # inside the locked folder: the lock covers it too
        content.mkdir()
        yield content
        step()
        replace_dir(content, final)
        step()
