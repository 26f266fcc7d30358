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

from .connection import TLS, RetryPolicy, Retrying, channel_args, transport_fault

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
        # a load can take long (a torch model's stub imports torch): one attempt may use it all.
        # Only an unreachable server is retried: a backend that failed while loading (its stub
        # exited, say) is the load's answer, and repeating it would only run into the deadline.
        self._retry = Retrying(RetryPolicy(deadline_s=timeout_s), retry_if=transport_fault)
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
        """Load, or reload with the repository's newest versions, and check what got loaded.

        An ensemble that is loaded has its members (re)loaded first, one by one: Triton keeps a
        model's previous versions when its new ones fail, but a failed ensemble load unloads the
        ensemble, so the ensemble is loaded only once every member's newest version is ready,
        and afterwards every (member, version) its config names must be ready. Raises
        ModelControlError naming the member, version and the server's error; the previous
        consistent versions keep serving."""
        for member in self.members(name):
            try:
                self._call(f"load of {member!r} (a member of {name!r})", lambda t, m=member:
                           self._client.load_model(m, headers=self._headers, client_timeout=t))
            except ModelControlError as err:
                raise ModelControlError(f"{err}; {name!r} keeps serving its previous "
                                        "versions") from err.__cause__
            self._check_newest(member, name)
        self._call(f"load of {name!r}", lambda t: self._client.load_model(
            name, headers=self._headers, client_timeout=t))
        for member, version in self.member_versions(name).items():
            if not self.is_ready(member, "" if version == -1 else version):
                raise ModelControlError(
                    f"load of {name!r} at {self.url}: member {member!r} version {version} is not "
                    f"ready after the load: {self._reason(member, version)}")

    def members(self, name: str) -> list[str]:
        """The step models of a loaded ensemble ([] for a plain model or one not loaded)."""
        return list(self.member_versions(name))

    def member_versions(self, name: str) -> dict[str, int]:
        """{member: version} the loaded ensemble's config names (-1: the newest ready)."""
        try:
            config = self._client.get_model_config(name, as_json=True, client_timeout=10.0)
        except InferenceServerException:
            return {}  # not loaded (or unknown): the load itself reports it
        steps = config.get("config", {}).get("ensemble_scheduling", {}).get("step", [])
        return {s["model_name"]: int(s.get("model_version", -1)) for s in steps}

    def versions(self, name: str) -> dict[int, tuple[str, str]]:
        """{version: (state, reason)} of one model from the repository index."""
        return {int(m["version"]): (m.get("state", ""), m.get("reason", ""))
                for m in self.repository_index() if m.get("name") == name and m.get("version")}

    def _reason(self, member: str, version: int) -> str:
        known = self.versions(member)
        if version == -1 and known:
            version = max(known)
        state, reason = known.get(version, ("UNKNOWN", "not in the repository index"))
        return f"{state}: {reason}" if reason else state

    def _check_newest(self, member: str, ensemble: str) -> None:
        """The member's newest version (the one a new export's ensemble names) must be ready."""
        known = self.versions(member)
        if not known:
            return
        newest = max(known)
        state, reason = known[newest]
        if state != "READY":
            raise ModelControlError(
                f"load of {ensemble!r} at {self.url}: member {member!r} version {newest} did not "
                f"load ({state}: {reason or 'no reason given'}); {ensemble!r} keeps serving "
                f"its previous versions")

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
