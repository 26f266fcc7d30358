"""scorer.pt2 is loaded only when it unpickles nothing but tensors: a crafted archive whose
payload torch.export.load would run as code is refused before it is read."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch

from seqrec.model_repository.safe_program import UnsafeProgramError, load_program

MARK = "SEQREC_TEST_UNPICKLED"


class _Payload:
    """Unpickling this sets an environment variable: code chosen by the file's author runs."""

    def __reduce__(self):
        return exec, (f"import os; os.environ[{MARK!r}] = '1'",)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).topk(2).indices


def _program(tmp_path: Path) -> Path:
    path = tmp_path / "scorer.pt2"
    torch.export.save(torch.export.export(_Tiny(), (torch.randn(2, 4),)), str(path))
    return path


def _replace(path: Path, member_suffix: str, data: bytes) -> Path:
    out = path.with_name("crafted.pt2")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        names = [n for n in src.namelist() if n.endswith(member_suffix)]
        assert names, member_suffix
        for item in src.infolist():
            dst.writestr(item, data if item.filename in names else src.read(item.filename))
    return out


def test_a_real_program_loads(tmp_path):
    x = torch.randn(2, 4)
    program = load_program(_program(tmp_path)).module()
    assert program(x).shape == (2, 2)


def test_a_pickled_payload_is_refused_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(MARK, raising=False)
    buffer = io.BytesIO()
    torch.save({"x": _Payload()}, buffer)
    crafted = _replace(_program(tmp_path), "sample_inputs/model.pt", buffer.getvalue())
    with pytest.raises(UnsafeProgramError, match=r"sample_inputs/model\.pt holds more than"):
        load_program(crafted)
    assert MARK not in os.environ
    try:  # what the check prevents: torch's own loader falls back to full unpickling
        torch.export.load(str(crafted))
    except Exception:  # noqa: BLE001 - it may fail afterwards; the payload ran already
        pass
    assert os.environ.get(MARK) == "1"


def test_weights_marked_as_pickled_are_refused(tmp_path):
    path = _program(tmp_path)
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith("model_weights_config.json")]
        text = z.read(name).decode().replace('"use_pickle": false', '"use_pickle": true', 1)
    with pytest.raises(UnsafeProgramError, match="stored as a pickled object"):
        load_program(_replace(path, "model_weights_config.json", text.encode()))


def test_not_an_archive(tmp_path):
    bad = tmp_path / "scorer.pt2"
    bad.write_bytes(b"not a program")
    with pytest.raises(UnsafeProgramError, match="not a readable exported program"):
        load_program(bad)
