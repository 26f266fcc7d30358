"""Faults against the real tritonserver: a locked repository API, a parent killed with -9, a
python-backend stub killed under load (supervised recovery), TLS on gRPC."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs nvidia-pytriton (seqrec[serve])")
psutil = pytest.importorskip("psutil")
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from seqrec.client import TLS, RecommendationError, RecommenderClient  # noqa: E402
from seqrec.client.control import ModelControl, ModelControlError  # noqa: E402
from seqrec.model_repository.server import ServerTLS, TritonServer  # noqa: E402
from helpers import kill_and_time_recovery  # noqa: E402
from tiny_repo import write_repo  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def stubs_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "triton_python_backend_stub" in " ".join(p.cmdline())]


def test_repository_api_refuses_uploads_and_callers_without_the_key(tmp_path):
    repo = write_repo(tmp_path / "repo")
    marker = tmp_path / "uploaded-code-ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\nclass TritonPythonModel:\n    def execute(self, r): return []\n"
    body = json.dumps({"parameters": {
        "config": json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0,
                              "input": [{"name": "x", "data_type": "TYPE_INT64", "dims": [1]}],
                              "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [1]}]}),
        "file:1/model.py": base64.b64encode(evil.encode()).decode()}}).encode()
    with TritonServer(repo, model_control="explicit", load_models=["seqrec"]) as srv:
        req = urllib.request.Request(f"{srv.http_url}/v2/repository/models/evil/load", data=body,
                                     method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(req, timeout=30)
        assert http_err.value.code == 403 and "restricted" in http_err.value.read().decode()
        # the same upload over gRPC without the key
        raw = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException, match="restricted"):
            raw.load_model("evil", config=json.loads(body)["parameters"]["config"],
                           files={"file:1/model.py": evil.encode()})
        with pytest.raises(InferenceServerException, match="restricted"):
            raw.get_model_repository_index()
        raw.close()
        time.sleep(1)
        assert not marker.exists()
        # seqrec's control client without the key: a clear error, with it: works
        with ModelControl(srv.grpc_url, timeout_s=10) as ctl, \
                pytest.raises(ModelControlError, match="SEQREC_REPOSITORY_KEY"):
            ctl.unload("seqrec")
        with ModelControl(srv.grpc_url, key=srv.repository_key) as ctl:
            assert {m["name"] for m in ctl.repository_index()} == {"seqrec"}
            ctl.unload("seqrec")
            assert not ctl.is_ready("seqrec")
            ctl.load("seqrec")
        # inference, health and metadata stay open
        with RecommenderClient(srv.grpc_url) as c:
            assert c.recommend([1, 2]).item_ids == [2, 1] and c.is_ready()
    assert not marker.exists()


def test_server_and_stubs_die_with_their_parent(tmp_path):
    repo = write_repo(tmp_path / "repo")
    code = (f"import time\nfrom seqrec.model_repository.server import TritonServer\n"
            f"s = TritonServer({str(repo)!r}).start()\nprint(s.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        server = psutil.Process(pid)
        family = [server] + server.children(recursive=True)
        assert any("triton_python_backend_stub" in " ".join(p.cmdline()) for p in family)
        parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
        parent.wait(10)
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert alive == [], alive
    finally:
        parent.kill()
        parent.wait(10)


def _serve(repo: Path, log: Path) -> tuple[subprocess.Popen, str, int]:
    """`seqrec serve` as a user runs it (supervised); returns (process, gRPC address, server pid)."""
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "seqrec.cli", "serve", "--config",
                             str(ROOT / "configs/ml-100k.yaml"), "--repository", str(repo)],
                            stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text()
        m = re.search(r"pid (\d+)\).*?gRPC\s+(\S+)", text, re.S)
        if m:
            return proc, m.group(2), int(m.group(1))
        assert proc.poll() is None, text
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(log.read_text())


def test_killed_stub_is_reported_and_recovered_under_load(tmp_path):
    """kill -9 of the model's stub while 4 clients send requests: the canary readiness says
    not-ready within seconds, `seqrec serve` restarts the server by itself, clients retrying
    with backoff see no failure, and every answer equals the answer before the fault."""
    repo = write_repo(tmp_path / "repo")
    proc, url, pid = _serve(repo, tmp_path / "serve.log")
    sessions = [[i, i + 1, i + 2] for i in range(1, 9)]  # max_batch_size 8
    stop, results, errors = threading.Event(), [], []

    def load():
        with RecommenderClient(url, timeout_s=30) as c:
            while not stop.is_set():
                try:
                    got = c.recommend_batch(sessions)
                    results.append((time.monotonic(), [r.item_ids for r in got]))
                except RecommendationError as e:
                    errors.append((time.monotonic(), str(e)))
    try:
        with RecommenderClient(url, retries=0) as probe:
            before = [r.item_ids for r in probe.recommend_batch(sessions)]
            assert before == [s[::-1] for s in sessions] and probe.is_ready()
            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(1.0)
            (stub,) = stubs_of(pid)
            t_not_ready, t_ready = kill_and_time_recovery(probe, stub, 3, 60, tmp_path / "serve.log")
            n_at_recovery = len(results)
            time.sleep(1.5)
            stop.set()
            for w in workers:
                w.join(60)
            after = [r.item_ids for r in probe.recommend_batch(sessions)]
        log = (tmp_path / "serve.log").read_text()
        print(f"\nstub killed: not ready after {t_not_ready:.2f}s, answering again after "
              f"{t_ready:.2f}s; {len(results)} requests answered, {len(errors)} failed")
        assert errors == [], errors[:3]
        assert len(results) > n_at_recovery  # answers resumed under load
        assert all(r == before for _, r in results) and after == before
        assert "is not ready" in log and "restarting tritonserver" in log and "restarted in" in log
        assert "answers again" in log
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certs(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=seqrec-test-ca", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN={'127.0.0.1' if who == 'server' else 'seqrec-client'}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", "-extfile", "san.cnf", cwd=d)
    return {n: str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="needs the openssl command")
def test_tls_with_client_certificates(tmp_path):
    c = _certs(tmp_path / "certs")
    repo = write_repo(tmp_path / "repo")
    tls = ServerTLS(certificate=c["server.pem"], private_key=c["server.key"], client_ca=c["ca.pem"])
    with TritonServer(repo, tls=tls) as srv:
        ok = TLS(root_certificates=c["ca.pem"], private_key=c["client.key"],
                 certificate_chain=c["client.pem"])
        with RecommenderClient(srv.grpc_url, tls=ok) as client:
            assert client.recommend([4, 5]).item_ids == [5, 4] and client.is_ready()
        for bad in (None, TLS(root_certificates=c["ca.pem"])):  # plaintext; no client certificate
            with RecommenderClient(srv.grpc_url, tls=bad, retries=0, timeout_s=5) as client:
                with pytest.raises(RecommendationError):
                    client.recommend([4, 5])
