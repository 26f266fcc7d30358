"""Real tritonserver + gRPC client tests with a tiny python-backend model (no trained model,
see tiny_repo.py)."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs nvidia-pytriton (seqrec[serve])")
pytest.importorskip("tritonclient.grpc")
psutil = pytest.importorskip("psutil")

from seqrec.client import (  # noqa: E402
    Recommendation,
    RecommendationError,
    RecommenderClient,
)
from seqrec.client.control import ModelControl, ModelControlError  # noqa: E402
from seqrec.model_repository.server import TritonServer  # noqa: E402
from tiny_repo import write_repo  # noqa: E402

pytestmark = pytest.mark.slow


def triton_shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("triton")}


def group_members(pid: int) -> list[psutil.Process]:
    """The server and every process it started (stubs), alive and not zombies."""
    out = []
    for p in psutil.process_iter(["pid", "ppid", "status"]):
        try:
            if (p.pid == pid or os.getpgid(p.pid) == pid) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            pass
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return write_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    srv = TritonServer(repo, log_file=tmp_path_factory.mktemp("log") / "server.log")
    with srv:
        yield srv


@pytest.fixture()
def client(server):
    with RecommenderClient(server.grpc_url, timeout_s=10) as c:
        yield c


def test_server_starts_on_localhost(server):
    assert server.is_ready()
    assert server.grpc_url.startswith("127.0.0.1:")
    assert server.http_url.startswith("http://127.0.0.1:")
    assert server.startup_seconds is not None and server.startup_seconds > 0
    listening = {c.laddr for c in psutil.Process(server.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    ports = {addr.port for addr in listening}
    assert {int(server.grpc_url.rsplit(":", 1)[1]), int(server.http_url.rsplit(":", 1)[1])} <= ports
    # gRPC listens on a dual-stack socket as ::ffff:127.0.0.1, still loopback only.
    assert all(ipaddress.ip_address(addr.ip.removeprefix("::ffff:")).is_loopback
               for addr in listening), listening


def test_recommend_round_trip(client):
    assert client.is_ready()
    rec = client.recommend([5, 7, 11, 2**40])
    assert isinstance(rec, Recommendation)
    assert rec.item_ids == [2**40, 11, 7, 5]
    assert rec.scores == [float(np.float32(2**40)), 11.0, 7.0, 5.0]
    assert rec.latency_ms > 0
    # numpy input of another integer dtype is converted, not rejected.
    assert client.recommend(np.array([3, 1], dtype=np.int32)).item_ids == [1, 3]
    meta = client.model_metadata()
    assert meta["name"] == "seqrec" and meta["inputs"][0]["datatype"] == "INT64"
    batch = client.recommend_batch([[1, 2, 3], [4, 5, 6]])
    assert [r.item_ids for r in batch] == [[3, 2, 1], [6, 5, 4]]
    assert client.is_live()


def test_asyncio_client(server):
    from seqrec.client import AsyncRecommenderClient

    async def go():
        async with AsyncRecommenderClient(server.grpc_url) as ac:
            assert await ac.is_ready()
            assert (await ac.model_metadata())["name"] == "seqrec"
            results = await asyncio.gather(*(ac.recommend([i, i + 1]) for i in range(20)),
                                           ac.recommend([]), return_exceptions=True)
            return results

    results = asyncio.run(go())
    assert [r.item_ids for r in results[:20]] == [[i + 1, i] for i in range(20)]
    assert isinstance(results[20], RecommendationError) and "empty session" in str(results[20])


def test_model_that_raises_does_not_take_the_server_down(client, server):
    with pytest.raises(RecommendationError, match="model bug on item 666"):
        client.recommend([1, 666])
    assert server.is_ready() and client.is_ready()
    assert client.recommend([1, 2]).item_ids == [2, 1]


def test_empty_request_is_a_clear_error_and_server_stays_ready(client, server):
    with pytest.raises(RecommendationError, match="empty session"):
        client.recommend([])
    assert server.is_ready() and client.is_ready()
    assert client.recommend([1, 2]).item_ids == [2, 1]


def test_unknown_model_is_a_recommendation_error(server):
    with RecommenderClient(server.grpc_url, model_name="nope", retries=0) as c:
        assert not c.is_ready()
        with pytest.raises(RecommendationError, match="nope"):
            c.recommend([1])


def test_second_server_runs_beside_the_first(server, tmp_path):
    repo2 = write_repo(tmp_path / "repo2", name="other")
    with TritonServer(repo2, model_control="explicit", load_models=["other"]) as second:
        assert second.grpc_url != server.grpc_url and second.http_url != server.http_url
        with RecommenderClient(second.grpc_url, model_name="other") as c:
            assert c.recommend([1, 2, 3]).item_ids == [3, 2, 1]
        # Explicit model control round trip, with the server's key.
        with ModelControl(second.grpc_url, key=second.repository_key) as ctl:
            ctl.unload("other")
            assert not ctl.is_ready("other")
            ctl.load("other")
            assert ctl.is_ready("other")
            with pytest.raises(ModelControlError, match="missing"):
                ctl.load("missing")
    assert server.is_ready()  # stopping the second one left the first alone


def test_stop_leaves_no_processes_or_shm(tmp_path):
    before = triton_shm()
    srv = TritonServer(write_repo(tmp_path / "repo")).start()
    pid = srv.pid
    members = group_members(pid)
    assert any("triton_python_backend_stub" in " ".join(p.cmdline()) for p in members)
    assert any(n.startswith(srv._shm_prefix) for n in triton_shm() - before)  # segments created
    srv.stop()
    assert not srv.is_ready()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
    assert group_members(pid) == []
    # other servers (the session fixture's) may create segments meanwhile: count only this one's
    assert {n for n in triton_shm() - before if n.startswith(srv._shm_prefix)} == set()


def test_startup_failure_raises_with_log_tail(tmp_path):
    repo = write_repo(tmp_path / "repo")
    (repo / "seqrec" / "1" / "model.py").write_text("raise ImportError('broken model file')\n")
    before = triton_shm()
    srv = TritonServer(repo, log_file=tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="broken model file"):
        srv.start(timeout=60)
    assert "broken model file" in (tmp_path / "server.log").read_text()
    assert group_members(srv.pid) == []
    assert triton_shm() - before == set()


def test_client_works_without_torch_nvtabular_or_pandas(server):
    """The client package alone, with torch, NVTabular, pandas and the other seqrec stages made
    unimportable, talks to the real server."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, *a):
        top = name.split('.')
        if top[0] in ('torch', 'nvtabular', 'merlin', 'pandas', 'transformers') or (
                top[0] == 'seqrec' and len(top) > 1 and top[1] != 'client'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from seqrec.client import RecommenderClient
with RecommenderClient({server.grpc_url!r}) as c:
    print(c.recommend([1, 2, 3]).item_ids)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[3, 2, 1]"
