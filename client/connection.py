"""How a client reaches the server: deadline and retries, TLS, the gRPC channel options.

Two layers of retry, both bounded by one deadline per call:
- transport: gRPC's own service config. `waitForReady` holds a call while the channel reconnects
  (a server restarting on its port, with gRPC's exponential reconnect backoff), and `retryPolicy`
  re-sends calls that fail UNAVAILABLE (connection dropped mid-call).
- a backend that died behind a live server (Triton answers INTERNAL "Stub process ... is not
  healthy" until the model is reloaded or the server restarted): `Retrying` re-sends with
  exponential backoff. A gRPC retryPolicy acts on status codes alone and INTERNAL is also what a
  model's own bug returns, so this class is told apart by its message, with tenacity's retry
  loop (one configuration, run by tenacity.Retrying or tenacity.AsyncRetrying).
numpy-free: tritonclient, tenacity and the standard library.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import tenacity
from tritonclient.utils import InferenceServerException

__all__ = ["RetryPolicy", "TLS", "Retrying", "NO_RETRY", "channel_args", "retryable",
           "transport_fault"]

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


def transport_fault(e: BaseException) -> bool:
    """The server could not be reached (a restart, a dropped connection): nothing ran."""
    return (isinstance(e, InferenceServerException) and "UNAVAILABLE" in str(e.status() or "")
            and _RESTRICTED not in str(e.message() or "").lower())


def retryable(e: InferenceServerException) -> bool:
    """A fault of the server side that a later attempt may not meet (a dead backend being
    recovered, a server restarting); never a rejected request or a model's own error."""
    status, message = str(e.status() or ""), str(e.message() or "").lower()
    if "UNAVAILABLE" in status:
        return _RESTRICTED not in message
    return "INTERNAL" in status and any(m in message for m in _BACKEND_DOWN)


class Retrying:
    """Runs one call under a RetryPolicy. `fn(timeout_s)` makes one attempt with what is left
    of the deadline. `retry_if`: which failures to retry (default `retryable`; model control
    passes `transport_fault`: a load that failed inside a backend is reported, not repeated)."""

    def __init__(self, policy: RetryPolicy, retry_if=None):
        self.policy = policy
        self._retry_if = retry_if or (lambda e: isinstance(e, InferenceServerException)
                                      and retryable(e))

    def _controller(self, kind, spent_s: float):
        """tenacity's loop for what is left once the first attempt failed after spent_s."""
        p = self.policy
        return kind(stop=tenacity.stop_after_attempt(p.max_attempts)
                    | tenacity.stop_before_delay(max(p.deadline_s - spent_s, 0.0)),  # no sleep past the deadline
                    wait=tenacity.wait_exponential(multiplier=p.initial_backoff_s,
                                                   exp_base=p.multiplier, max=p.max_backoff_s),
                    retry=tenacity.retry_if_exception(self._retry_if), reraise=True)

    def _attempt(self, fn):
        deadline = time.monotonic() + self.policy.deadline_s
        return lambda: fn(max(deadline - time.monotonic(), 0.001))

    def _retries(self, e: BaseException) -> bool:
        return self.policy.retries and self._retry_if(e)

    # The first attempt runs bare: building tenacity's loop costs tens of microseconds, a
    # noticeable share of a served request, and nearly every call succeeds at once. Only after a
    # retryable failure does tenacity take over, its first attempt replaying that failure, so its
    # waits, attempt count and deadline are what they would have been had it made every attempt.
    def call(self, fn):
        attempt, start = self._attempt(fn), time.monotonic()
        try:
            return attempt()
        except Exception as e:  # noqa: BLE001 - re-raised unless the policy retries it
            if not self._retries(e):
                raise
            failed = [e]

        def replay_then_attempt():
            if failed:
                raise failed.pop()
            return attempt()
        return self._controller(tenacity.Retrying, time.monotonic() - start)(replay_then_attempt)

    async def acall(self, fn):
        attempt, start = self._attempt(fn), time.monotonic()
        try:
            return await attempt()
        except Exception as e:  # noqa: BLE001 - re-raised unless the policy retries it
            if not self._retries(e):
                raise
            failed = [e]

        async def replay_then_attempt():  # a coroutine function: what tenacity awaits between its sleeps
            if failed:
                raise failed.pop()
            return await attempt()
        return await self._controller(tenacity.AsyncRetrying, time.monotonic() - start)(
            replay_then_attempt)
