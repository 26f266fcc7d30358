"""Load a `torch.export` program (scorer.pt2) without unpickling anything but tensors, and the
AOTInductor build of it (scorer_compiled.pt2) as a callable that reads its call spec once.

torch.export.load unpickles in places a crafted archive controls: weights or constants marked
`use_pickle`, custom and opaque objects, legacy .pt payloads, and a `weights_only=False`
fallback when a payload does not load with weights_only=True. The archive is checked first:
every payload it would unpickle must load with weights_only=True, and nothing may ask for
pickled objects; only then is it handed to torch.export.load (whose weights_only=True attempt
then succeeds, so its fallback never runs). torch and the standard library only: this file is
copied beside the served model.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

__all__ = ["UnsafeProgramError", "check_program", "load_program", "CompiledProgram"]


class UnsafeProgramError(ValueError):
    """The archive is not a program, or would unpickle more than tensors."""


def _config_entries(config: dict):
    entries = config.get("config", config)
    return entries.items() if isinstance(entries, dict) else []


def check_program(path: str | Path) -> None:
    """Raise UnsafeProgramError unless loading `path` unpickles nothing but tensors."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafeProgramError(f"{path} is not a readable exported program (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
                config = json.loads(archive.read(name))
                for fqn, meta in _config_entries(config):
                    if not isinstance(meta, dict):
                        continue
                    kind = str(meta.get("path_name", "")).split("_")[0]
                    if meta.get("use_pickle") or kind in ("custom", "opaque"):
                        raise UnsafeProgramError(
                            f"{path}: {fqn} is stored as a pickled object, which loading would "
                            "run; an exported seqrec scorer holds tensors only")
            elif base.endswith(".pt") or name.endswith((".pkl", ".pickle")):
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as err:  # noqa: BLE001 - any refusal means: not tensors only
                    raise UnsafeProgramError(
                        f"{path}: {name} holds more than tensors and plain values, which "
                        f"loading would unpickle ({type(err).__name__}: {err})") from None


def load_program(path: str | Path):
    """check_program, then torch.export.load."""
    check_program(path)
    return torch.export.load(str(path))


class CompiledProgram:
    """An AOTInductor package (torch._inductor.aoti_compile_and_package), called positionally.
    torch's own wrapper parses the package's input and output tree specs from JSON on every
    call, a measurable share of one served request (15-35 microseconds of ~100-250); here the
    output spec is read once, and the inputs are flattened as torch's wrapper flattens them."""

    def __init__(self, path: str | Path):
        self.loader = torch._inductor.aoti_load_package(str(path)).loader
        self._out_spec = pytree.treespec_loads(self.loader.get_call_spec()[1])

    def __call__(self, *args):
        flat = [x for x in pytree.tree_leaves((args, {})) if isinstance(x, torch.Tensor)]
        return pytree.tree_unflatten(self.loader.boxed_run(flat), self._out_spec)
