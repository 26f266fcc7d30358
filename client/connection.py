"""How a client reaches the server: deadline and retries, TLS, the gRPC channel options.

Two layers of retry, both bounded by one deadline per call:
- transport: gRPC's own service config. `waitForReady` holds a call while the channel reconnects
  (a server restarting on its port, with gRPC's exponential reconnect backoff), and `retryPolicy`
  re-sends calls that fail UNAVAILABLE (connection dropped mid-call).
- a backend that died behind a live server (Triton answers INTERNAL "Stub process ... is not
  healthy" until the model is reloaded or the server restarted): `Retrying` re-sends with
  exponential backoff. gRPC cannot tell this INTERNAL from a model bug, so it is matched here.
numpy-free, tritonclient + stdlib only.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass

from tritonclient.utils import InferenceServerException

__all__ = ["RetryPolicy", "TLS", "Retrying", "NO_RETRY", "channel_args", "retryable"]

_MAX_MESSAGE = 2**31 - 1  # tritonclient's default limits, kept when we pass our own options
# Messages of server-side faults that a retry after recovery answers correctly.
_BACKEND_DOWN = ("is not healthy", "stub process", "failed to connect to all addresses")
_RESTRICTED = "is restricted"  # a restricted API answers UNAVAILABLE: a retry never helps


@dataclass(frozen=True)
class RetryPolicy:
    """Deadline and exponential backoff of one client call.

    deadline_s bounds the whole call, retries and waiting for a restarting server included; the
    default 20 s covers a server restart (6-12 s with a torch model on 2 cores). Backoff before
    retry n is min(initial_backoff_s * multiplier**n, max_backoff_s)."""

    deadline_s: float = 20.0
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    max_attempts: int = 20  # 1: no retry at all, fail on the first error

    def __post_init__(self):
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoff needs 0 < initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def backoff(self, retry: int) -> float:
        return min(self.initial_backoff_s * self.multiplier ** retry, self.max_backoff_s)

    @property
    def retries(self) -> bool:
        return self.max_attempts > 1


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class TLS:
    """TLS for the gRPC channel (PEM files). root_certificates None: the system's roots;
    private_key + certificate_chain: a client certificate for servers that require one."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def __post_init__(self):
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("TLS: private_key and certificate_chain go together")
        for field in ("root_certificates", "private_key", "certificate_chain"):
            path = getattr(self, field)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"TLS {field}: no file {path}")

    def client_kwargs(self) -> dict:
        """Keyword arguments of tritonclient's (sync and aio) InferenceServerClient."""
        return dict(ssl=True, root_certificates=self.root_certificates,
                    private_key=self.private_key, certificate_chain=self.certificate_chain)


def channel_args(policy: RetryPolicy) -> list[tuple]:
    """gRPC channel options: tritonclient's message limits + the transport retry config."""
    args = [("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE)]
    if not policy.retries:
        return args + [("grpc.enable_retries", 0)]
    method = {
        "name": [{"service": "inference.GRPCInferenceService"}],
        "waitForReady": True,
        "retryPolicy": {
            "maxAttempts": min(policy.max_attempts, 5),  # gRPC caps it at 5
            "initialBackoff": f"{policy.initial_backoff_s:.3f}s",
            "maxBackoff": f"{policy.max_backoff_s:.3f}s",
            "backoffMultiplier": policy.multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }
    ms = lambda s: int(s * 1000)  # noqa: E731
    return args + [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps({"methodConfig": [method]})),
        # reconnect to a restarting server promptly: exponential from initial to max backoff
        ("grpc.initial_reconnect_backoff_ms", ms(policy.initial_backoff_s)),
        ("grpc.min_reconnect_backoff_ms", ms(policy.initial_backoff_s)),
        ("grpc.max_reconnect_backoff_ms", ms(policy.max_backoff_s)),
    ]


def retryable(e: InferenceServerException) -> bool:
    """A fault of the server side that a later attempt may not meet (a dead backend being
    recovered, a server restarting); never a rejected request or a model's own error."""
    status, message = str(e.status() or ""), str(e.message() or "").lower()
    if "UNAVAILABLE" in status:
        return _RESTRICTED not in message
    return "INTERNAL" in status and any(m in message for m in _BACKEND_DOWN)


class Retrying:
    """Runs one call under a RetryPolicy. `fn(timeout_s)` makes one attempt with what is left
    of the deadline; the retry decision is `_next_delay`, shared by the sync and async paths."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy

    def _next_delay(self, e: InferenceServerException, retry: int, deadline: float) -> float | None:
        if retry + 1 >= self.policy.max_attempts or not retryable(e):
            return None
        delay = self.policy.backoff(retry)
        return delay if time.monotonic() + delay < deadline else None

    def call(self, fn):
        deadline = time.monotonic() + self.policy.deadline_s
        retry = 0
        while True:
            try:
                return fn(max(deadline - time.monotonic(), 0.001))
            except InferenceServerException as e:
                delay = self._next_delay(e, retry, deadline)
                if delay is None:
                    raise
            time.sleep(delay)
            retry += 1

    async def acall(self, fn):
        deadline = time.monotonic() + self.policy.deadline_s
        retry = 0
        while True:
            try:
                return await fn(max(deadline - time.monotonic(), 0.001))
            except InferenceServerException as e:
                delay = self._next_delay(e, retry, deadline)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            retry += 1
