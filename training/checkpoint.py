"""A checkpoint is a folder: config.json (ModelConfig) + model.pt (state dict)."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from .model import ModelConfig, SequenceRecommender

# What a config.json written before these options existed meant: they are filled in from here,
# not from today's measured defaults, so an older checkpoint rebuilds the model it was saved from.
BEFORE_OPTIONS = {"mask_last_prob": 0.0, "label_smoothing": 0.0, "embedding_std": 0.02,
                  "embedding_norm": False}


def save_checkpoint(model: SequenceRecommender, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2))
    # Write then rename, so a crash never leaves a truncated model.pt behind.
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".pt.tmp")
    os.close(fd)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, folder / "model.pt")


def load_checkpoint(folder: str | Path) -> SequenceRecommender:
    folder = Path(folder)
    for name in ("config.json", "model.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: not a seqrec checkpoint")
    cfg = ModelConfig(**{**BEFORE_OPTIONS, **json.loads((folder / "config.json").read_text())})
    # The backbone is rebuilt from the config alone (model.pt holds every weight): a model trained
    # from a `pretrained` folder loads and serves without that folder.
    model = SequenceRecommender(replace(cfg, pretrained=None))
    model.cfg = cfg
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model
