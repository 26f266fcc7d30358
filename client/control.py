"""Model control over gRPC: load (reload), unload and readiness of served models.

The one client for Triton's repository API, used by `seqrec model` and by the tests. The server
started by seqrec restricts that API to callers sending a key (Triton's
`--grpc-restricted-protocol`); this client sends it as the header Triton expects. It never
sends model files or configs: the repository on disk is the only source of models.
"""
from __future__ import annotations

import os
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .connection import TLS, RetryPolicy, Retrying, channel_args

__all__ = ["ModelControl", "ModelControlError", "REPOSITORY_KEY_NAME", "KEY_ENV",
           "default_key_file", "read_key"]

REPOSITORY_KEY_NAME = "seqrec-repository-key"  # Triton: --grpc-restricted-protocol=...:<name>=<key>
KEY_ENV = "SEQREC_REPOSITORY_KEY"


class ModelControlError(Exception):
    """A load/unload the server refused or failed; the message carries the server's error."""


def default_key_file() -> Path:
    """Where `seqrec serve` writes the key and `seqrec model` reads it (owner-only file)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME") \
        or str(Path.home() / ".cache")
    return Path(base) / "seqrec" / "repository-key"


def read_key(key_file: str | Path | None = None) -> str | None:
    """The repository key: $SEQREC_REPOSITORY_KEY, else the key file (None if neither)."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    path = Path(key_file) if key_file is not None else default_key_file()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if key_file is not None:
            raise ModelControlError(f"repository key file {path} does not exist") from None
        return None


class ModelControl:
    """gRPC model control of one server. `key`: the repository key (see read_key)."""

    def __init__(self, url: str = "127.0.0.1:8001", *, key: str | None = None,
                 timeout_s: float = 120.0, tls: TLS | None = None):
        self.url = url
        # a load can take long (a torch model's stub imports torch): one attempt may use it all
        self._retry = Retrying(RetryPolicy(deadline_s=timeout_s))
        self._headers = {f"triton-grpc-protocol-{REPOSITORY_KEY_NAME}": key} if key else None
        self._client = grpcclient.InferenceServerClient(
            url=url, channel_args=channel_args(self._retry.policy),
            **(tls.client_kwargs() if tls else {}))

    def _call(self, what: str, fn):
        try:
            return self._retry.call(fn)
        except InferenceServerException as e:
            msg = e.message() or str(e)
            if "is restricted" in msg:
                msg = (f"the server restricts model control to callers with its key; set "
                       f"${KEY_ENV} or pass the key file `seqrec serve` wrote ({msg})")
            raise ModelControlError(f"{what} at {self.url}: {msg} [{e.status()}]") from e

    def load(self, name: str) -> None:
        """Load, or reload with the repository's newest versions; an ensemble (re)loads its
        changed members. Returns once loaded; raises ModelControlError naming the failure."""
        self._call(f"load of {name!r}", lambda t: self._client.load_model(
            name, headers=self._headers, client_timeout=t))

    def unload(self, name: str) -> None:
        self._call(f"unload of {name!r}", lambda t: self._client.unload_model(
            name, headers=self._headers, client_timeout=t))

    def is_ready(self, name: str, version: int | str = "") -> bool:
        """Triton's readiness flag of a model (or one version of it)."""
        try:
            return bool(self._client.is_model_ready(name, str(version), client_timeout=5.0))
        except InferenceServerException:
            return False

    def repository_index(self) -> list[dict]:
        """Every model in the repository with its state (needs the key)."""
        index = self._call("repository index", lambda t: self._client.get_model_repository_index(
            headers=self._headers, as_json=True, client_timeout=t))
        return list(index.get("models", []))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ModelControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
