"""Retry policy, failure classes, TLS and key handling of the client (no server)."""
from __future__ import annotations

import json
import time

import pytest
from tritonclient.utils import InferenceServerException

from seqrec.client.connection import (TLS, RetryPolicy, Retrying, channel_args, retryable,
                                     transport_fault)
from seqrec.client.control import KEY_ENV, ModelControlError, read_key


def err(status: str, msg: str) -> InferenceServerException:
    return InferenceServerException(msg=msg, status=status)


@pytest.mark.parametrize("status, msg, expected", [
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", True),
    ("StatusCode.INTERNAL", "Stub process 'seqrec_model_0_0' is not healthy.", True),
    ("StatusCode.INTERNAL", "Failed to process the request(s) for model 'seqrec_0_0', message: "
                            "RuntimeError: model bug on item 666", False),
    ("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header 'x'", False),
    ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'item_ids'", False),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", False),
])
def test_only_server_side_faults_are_retried(status, msg, expected):
    assert retryable(err(status, msg)) is expected


def test_backoff_is_exponential_and_capped():
    p = RetryPolicy(initial_backoff_s=0.1, multiplier=2, max_backoff_s=1.0)
    assert [p.backoff(i) for i in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    # the default policy's backoffs alone span a server restart (6-12 s)
    d = RetryPolicy()
    assert sum(d.backoff(i) for i in range(d.max_attempts - 1)) >= 12 and d.deadline_s >= 12


@pytest.mark.parametrize("kw, match", [({"deadline_s": 0}, "deadline_s"), ({"max_attempts": 0}, "max_attempts"),
                                       ({"initial_backoff_s": 2, "max_backoff_s": 1}, "backoff"),
                                       ({"multiplier": 0.5}, "multiplier")])
def test_bad_policy_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kw)


def test_retrying_retries_a_dead_backend_until_it_answers():
    calls, timeouts = [], []

    def fn(timeout):
        calls.append(time.monotonic())
        timeouts.append(timeout)
        if len(calls) < 4:
            raise err("StatusCode.INTERNAL", "Stub process 'm_0_0' is not healthy.")
        return "answer"

    r = Retrying(RetryPolicy(deadline_s=5, initial_backoff_s=0.05, multiplier=2, max_backoff_s=1))
    assert r.call(fn) == "answer"
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # exponential backoff
    assert timeouts[0] <= 5 and timeouts[-1] < timeouts[0]  # each attempt gets what is left


def test_retrying_gives_up_at_the_deadline_and_never_retries_a_model_error():
    n = []

    def down(timeout):
        n.append(1)
        raise err("StatusCode.UNAVAILABLE", "failed to connect to all addresses")

    t0 = time.monotonic()
    with pytest.raises(InferenceServerException, match="failed to connect"):
        Retrying(RetryPolicy(deadline_s=0.5, initial_backoff_s=0.1, max_backoff_s=0.1)).call(down)
    assert time.monotonic() - t0 < 0.7 and 3 <= len(n) <= 6

    def bug(timeout):
        n.append(1)
        raise err("StatusCode.INTERNAL", "RuntimeError: model bug")

    n.clear()
    with pytest.raises(InferenceServerException, match="model bug"):
        Retrying(RetryPolicy()).call(bug)
    assert len(n) == 1


def test_async_retrying_backs_off_and_stops_like_the_blocking_one():
    import asyncio

    policy = RetryPolicy(deadline_s=5, initial_backoff_s=0.05, multiplier=2, max_backoff_s=1)
    calls = []

    async def fn(timeout):
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise err("StatusCode.INTERNAL", "Stub process 'm_0_0' is not healthy.")
        return 7

    assert asyncio.run(Retrying(policy).acall(fn)) == 7 and len(calls) == 4
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2

    async def bug(timeout):
        calls.append(1)
        raise err("StatusCode.INTERNAL", "RuntimeError: model bug")

    calls.clear()
    with pytest.raises(InferenceServerException, match="model bug"):
        asyncio.run(Retrying(policy).acall(bug))
    assert len(calls) == 1

    async def down(timeout):
        calls.append(1)
        raise err("StatusCode.UNAVAILABLE", "failed to connect to all addresses")

    calls.clear()
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException, match="failed to connect"):
        asyncio.run(Retrying(RetryPolicy(deadline_s=0.5, initial_backoff_s=0.1,
                                         max_backoff_s=0.1)).acall(down))
    assert time.monotonic() - t0 < 0.7 and 3 <= len(calls) <= 6


def test_max_attempts_bounds_the_retries():
    n = []

    def down(timeout):
        n.append(1)
        raise err("StatusCode.UNAVAILABLE", "failed to connect to all addresses")

    with pytest.raises(InferenceServerException):
        Retrying(RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.01, max_attempts=3)).call(down)
    assert len(n) == 3


def test_model_control_retries_only_an_unreachable_server():
    """A load that failed inside a backend (its stub exited) is an answer: never repeated."""
    n = []

    def load(timeout):
        n.append(1)
        if len(n) == 1:
            raise err("StatusCode.UNAVAILABLE", "failed to connect to all addresses")
        raise err("StatusCode.INTERNAL", "failed to load 'm': Failed to initialize stub, stub "
                                         "process exited unexpectedly: m_0_0")

    r = Retrying(RetryPolicy(deadline_s=10, initial_backoff_s=0.01), retry_if=transport_fault)
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException, match="stub process exited"):
        r.call(load)
    assert len(n) == 2 and time.monotonic() - t0 < 1
    assert not transport_fault(err("StatusCode.UNAVAILABLE", "This protocol is restricted"))


def test_channel_args_carry_the_grpc_retry_config():
    args = dict(channel_args(RetryPolicy(initial_backoff_s=0.2, max_backoff_s=3, max_attempts=9)))
    method = json.loads(args["grpc.service_config"])["methodConfig"][0]
    assert method["waitForReady"] is True
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] == 5 and method["retryPolicy"]["initialBackoff"] == "0.200s"
    assert args["grpc.max_reconnect_backoff_ms"] == 3000 and args["grpc.enable_retries"] == 1
    assert "grpc.service_config" not in dict(channel_args(RetryPolicy(max_attempts=1)))


def test_tls_checks_its_files(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    assert TLS(root_certificates=str(pem)).client_kwargs()["ssl"] is True
    with pytest.raises(ValueError, match="no file"):
        TLS(root_certificates=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="go together"):
        TLS(private_key=str(pem))


def test_read_key_env_then_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    f = tmp_path / "key"
    f.write_text("abc\n")
    assert read_key(f) == "abc"
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert read_key(f) == "from-env"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ModelControlError, match="does not exist"):
        read_key(tmp_path / "nope")


def test_a_call_answered_at_once_never_builds_the_retry_loop(monkeypatch):
    """The happy path is bare (tenacity's loop costs tens of microseconds per call); a retryable
    failure still hands over to tenacity, which then answers."""
    import asyncio

    import tenacity

    built = []
    for kind in ("Retrying", "AsyncRetrying"):
        real = getattr(tenacity, kind)
        monkeypatch.setattr(tenacity, kind, lambda *a, _real=real, **kw: built.append(1) or _real(*a, **kw))
    r = Retrying(RetryPolicy(deadline_s=5, initial_backoff_s=0.01))

    async def answer(timeout):
        return "async"
    assert r.call(lambda timeout: "sync") == "sync" and asyncio.run(r.acall(answer)) == "async"
    assert built == []
    n = []

    def once_down(timeout):
        n.append(1)
        if len(n) == 1:
            raise err("StatusCode.INTERNAL", "Stub process 'm_0_0' is not healthy.")
        return "after"
    assert r.call(once_down) == "after" and len(n) == 2 and built == [1]
