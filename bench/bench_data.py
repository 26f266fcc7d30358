"""Real datasets the benchmarks share, written once by seqrec's own ETL into a cache folder:
MovieLens-100k leave-last-out (inside the recbole wheel) and the grouped session sample shipped in
the transformers4rec 23.12.0 sdist (a session split)."""
from __future__ import annotations

import tempfile
from pathlib import Path

DATA_CACHE = Path(tempfile.gettempdir()) / "seqrec-bench-data"


def ml100k_data(max_len: int = 50, cache: Path = DATA_CACHE) -> str:
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = cache / f"ml-100k-{max_len}"
    if not out.is_dir():
        run_etl(ETLConfig(output_dir=str(out), max_len=max_len), progress=False)
    return str(out)


def t4r_data(cache: Path = DATA_CACHE) -> str:
    """Session split: the whole week is one window; its latest 10% / 10% sessions are valid /
    test, the rest train."""
    from seqrec.preprocessing.datasets import read_transformers4rec_sessions
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = cache / "t4r-sample"
    if not out.is_dir():
        result = run_etl(ETLConfig(output_dir=str(out), key="session_id", split="time-window",
                                   window_seconds=86400 * 28, min_len=2, max_len=20),
                         interactions=read_transformers4rec_sessions(), progress=False)
        (window,) = result.windows
        # the trainer reads the workflow beside the splits
        (out / window / "workflow").symlink_to(out / "workflow", target_is_directory=True)
    (window,) = [p for p in out.iterdir() if p.is_dir() and (p / "train.parquet").is_file()]
    return str(window)
