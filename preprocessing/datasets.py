"""Locating and reading datasets that ship inside installed packages (nothing is downloaded).

MovieLens-100k ships inside the `recbole==1.2.1` wheel (installed with --no-deps); its terms forbid
redistribution, so seqrec never copies it into the repository.
"""
from __future__ import annotations

import sys
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .interactions import validate_interactions

T4R_SDIST = "transformers4rec-23.12.0.tar.gz"
T4R_TESTING = "transformers4rec-23.12.0/transformers4rec/data/testing/"
ML100K_PACKAGE = "recbole"
ML100K_DIR = ("dataset_example", "ml-100k")


def movielens_100k_dir() -> Path:
    """Folder holding ml-100k.inter / ml-100k.item inside the installed recbole package."""
    try:
        root = resources.files(ML100K_PACKAGE)
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "MovieLens-100k is read from the recbole package: pip install --no-deps recbole==1.2.1"
        ) from err
    folder = Path(str(root.joinpath(*ML100K_DIR)))
    if not (folder / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{folder / 'ml-100k.inter'} not found in the installed recbole")
    return folder


def _read_atomic_file(path: Path) -> pd.DataFrame:
    """RecBole 'atomic' files: tab separated, header cells are `name:type`."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from err
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def read_movielens_100k(folder: Path | None = None) -> pd.DataFrame:
    """Interactions as (user_id, item_id, timestamp) int64 columns, in file order, plus two side
    columns for side-feature models: `rating` (float32, 1-5) and the item's `release_year`
    (int64 from ml-100k.item; 0 where the file has none)."""
    folder = folder or movielens_100k_dir()
    path = folder / "ml-100k.inter"
    raw = _read_atomic_file(path)
    frame = pd.DataFrame(
        {
            "user_id": pd.to_numeric(raw["user_id"], errors="coerce"),
            "item_id": pd.to_numeric(raw["item_id"], errors="coerce"),
            "timestamp": pd.to_numeric(raw["timestamp"], errors="coerce"),
        }
    )
    frame = validate_interactions(frame, source=str(path))
    frame["rating"] = pd.to_numeric(raw["rating"], errors="coerce").fillna(0).astype("float32")
    items = _read_atomic_file(folder / "ml-100k.item")
    years = pd.Series(pd.to_numeric(items["release_year"], errors="coerce").fillna(0).astype("int64").to_numpy(),
                      index=items["item_id"].astype("int64").to_numpy())
    frame["release_year"] = years.reindex(frame["item_id"].to_numpy()).fillna(0).astype("int64").to_numpy()
    return frame


def read_movielens_100k_titles(folder: Path | None = None) -> dict[int, str]:
    """Original item id -> movie title (with release year), from ml-100k.item."""
    raw = _read_atomic_file((folder or movielens_100k_dir()) / "ml-100k.item")
    years = raw["release_year"].where(raw["release_year"] != "", None)
    titles = raw["movie_title"] + years.map(lambda y: f" ({y})" if y else "")
    return dict(zip(raw["item_id"].astype(int), titles))


def read_movielens_100k_genres(folder: Path | None = None) -> dict[int, str]:
    """Original item id -> the item's first listed genre (ml-100k.item `class`; "" where none):
    one category per item, as the ranker's category embedding takes it."""
    raw = _read_atomic_file((folder or movielens_100k_dir()) / "ml-100k.item")
    first = raw["class"].str.split(" ").str[0].fillna("")
    return dict(zip(raw["item_id"].astype(int), first))


def transformers4rec_sdist() -> Path:
    """The transformers4rec==23.12.0 sdist that scripts/_env.sh fetches into <venv>/sdists."""
    path = Path(sys.prefix) / "sdists" / T4R_SDIST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pip download --no-deps --no-binary :all: transformers4rec==23.12.0 "
            f"-d {path.parent}"
        )
    return path


def transformers4rec_sample_dir(cache: Path | None = None) -> Path:
    """`transformers4rec/data/testing/` of the sdist, unpacked once next to the tarball."""
    sdist = transformers4rec_sdist()
    target = Path(cache or sdist.parent / "transformers4rec-23.12.0-testing")
    folder = target / T4R_TESTING
    if not (folder / "data.parquet").is_file():
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(T4R_TESTING) and m.isfile()]
            tar.extractall(target, members=members, filter="data")
    return folder


def read_transformers4rec_sessions(folder: Path | None = None) -> pd.DataFrame:
    """The sdist's grouped YOOCHOOSE-like session sample (`data.parquet`, one row per session),
    exploded to one row per interaction: session_id, item_id, timestamp (epoch seconds)."""
    path = Path(folder or transformers4rec_sample_dir()) / "data.parquet"
    grouped = pd.read_parquet(path, columns=["session_id", "item_id/list", "ts/list"])
    lengths = grouped["item_id/list"].map(len).to_numpy()
    items, stamps = grouped["item_id/list"].to_numpy(), grouped["ts/list"].to_numpy()
    frame = pd.DataFrame({
        "session_id": np.repeat(grouped["session_id"].to_numpy(), lengths),
        "item_id": np.concatenate(items).astype(np.int64) if len(items) else np.zeros(0, np.int64),
        "timestamp": np.concatenate(stamps).astype(np.int64) if len(stamps) else np.zeros(0, np.int64),
    })
    return validate_interactions(frame, source=str(path), columns=("session_id", "item_id", "timestamp"))
