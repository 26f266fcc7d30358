"""YAML recipe -> the stage dataclasses (unknown keys are an error, not silently ignored)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


def load_recipe(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"config {path}: unreadable ({err})") from err
    if not isinstance(recipe, dict):
        raise SystemExit(f"config {path}: expected a mapping of sections, got {type(recipe).__name__}")
    return recipe


def build(cls: type[T], section: dict | None, **overrides) -> T:
    values = dict(section or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SystemExit(f"{cls.__name__}: unknown option(s) {unknown}; valid: {sorted(known)}")
    return cls(**values)
