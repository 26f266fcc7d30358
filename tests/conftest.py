"""Shared, session-scoped real artefacts: one ETL run on real MovieLens-100k, one short training,
one exported repository served by the real tritonserver."""
from __future__ import annotations

import warnings

import pytest

from helpers import HISTORY_CAP, MAX_LEN  # tests/ is on sys.path: pyproject's pytest `pythonpath`

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def ml100k():
    from seqrec.preprocessing.datasets import read_movielens_100k

    return read_movielens_100k()


@pytest.fixture(scope="session")
def etl(tmp_path_factory, ml100k):
    from seqrec.preprocessing.pipeline import ETLConfig, run_etl

    out = tmp_path_factory.mktemp("etl") / "data"
    result = run_etl(ETLConfig(output_dir=str(out), max_len=MAX_LEN, history_cap=HISTORY_CAP),
                     interactions=ml100k)
    return result


@pytest.fixture(scope="session")
def trained(tmp_path_factory, etl):
    from seqrec.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(data_dir=etl.output_dir, output_dir=str(out), epochs=8, patience=3)
    return train(cfg, progress=False)


@pytest.fixture(scope="session")
def repository(tmp_path_factory, etl, trained):
    from seqrec.model_repository.export import ExportConfig, export_repository

    repo = tmp_path_factory.mktemp("serving") / "repo"
    return export_repository(
        ExportConfig(data_dir=etl.output_dir, model_dir=trained.output_dir, repository=str(repo))
    )


@pytest.fixture(scope="session")
def server(repository):
    from seqrec.model_repository.server import TritonServer

    srv = TritonServer(repository).start()
    yield srv
    srv.stop()
