"""Constants and small helpers shared by the unit and integration tests (a plain module: the
tests/ folder is on sys.path through `pythonpath` in pyproject.toml)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
MAX_LEN = 50  # max_len of the shared MovieLens-100k ETL fixture


def seqrec_cli(*args, check=True):
    """Run the `seqrec` command line in a fresh interpreter (as a user would)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "seqrec.cli", *args], capture_output=True,
                          text=True, check=check, timeout=120)
