"""YAML recipe -> the stage configs, through one strict loader.

`structure(cls, mapping)` builds a (nested) config dataclass from its type hints: dataclass
fields recurse, `X | None`, `list[X]`, `dict[K, V]` and `Literal[...]` are checked, unknown keys
and wrong types are errors naming the dotted path and the valid keys. Fields marked `derived(...)`
are filled from the data (num_items, max_len, cardinalities): a recipe may not set them, a
checkpoint's saved config does.

A recipe is a mapping of sections (`etl`, `train`, `incremental`, `rank`, `export`) plus an optional
`workdir`, from which the paths the sections share default (see DEFAULT_PATHS).
"""
from __future__ import annotations

import difflib
import importlib
import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

T = TypeVar("T")

DERIVED = "seqrec.derived"  # field metadata key: where the value comes from instead of a recipe

# section -> (module, class); imported only when that section is built (torch, NVTabular)
SECTIONS = {
    "etl": ("seqrec.preprocessing.pipeline", "ETLConfig"),
    "train": ("seqrec.training.trainer", "TrainConfig"),
    "incremental": ("seqrec.training.incremental", "IncrementalConfig"),
    "rank": ("seqrec.training.ranker.trainer", "RankConfig"),
    "export": ("seqrec.model_repository.export", "ExportConfig"),
    "recformer": ("seqrec.training.recformer.train", "RecformerConfig"),
}
# Sections a recipe only has when it asks for them: `recformer` makes `seqrec train` train the
# text model instead of the `train` section's.
OPTIONAL_SECTIONS = ("recformer",)
# A path a recipe leaves out defaults to the path it is read from (another section's), or to
# <workdir>/<name>: each stage reads what the one before it wrote.
DEFAULT_PATHS = {
    ("etl", "output_dir"): "data",
    ("train", "data_dir"): ("etl", "output_dir"),
    ("train", "output_dir"): "model",
    ("incremental", "data_dir"): ("etl", "output_dir"),
    ("incremental", "output_dir"): "incremental",
    ("rank", "data_dir"): ("etl", "output_dir"),
    ("rank", "output_dir"): "ranker",
    ("rank", "generative_dir"): ("train", "output_dir"),
    ("export", "data_dir"): ("train", "data_dir"),
    ("export", "model_dir"): ("train", "output_dir"),
    ("export", "repository"): "model_repository",
    ("recformer", "data_dir"): ("etl", "output_dir"),
    ("recformer", "output_dir"): "recformer",
}


def derived(source: str, **kwargs):
    """A dataclass field set from the data (`source` says from what), never by a recipe."""
    return field(metadata={DERIVED: source}, **kwargs)


# ---------------------------------------------------------------------------- the loader

def structure(cls: type[T], values: Any, path: str = "", *, allow_derived: bool = False) -> T:
    """`values` (a mapping, e.g. parsed YAML) -> a `cls` instance, checked against its type hints.
    `path` names where `values` sits in the recipe (errors start with it). An instance of `cls`
    is returned as it is."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(path, f"expected a mapping of {cls.__name__} keys, got {_describe(values)}")
    known = {f.name: f for f in fields(cls) if f.init}
    accepted = sorted(n for n, f in known.items() if allow_derived or DERIVED not in f.metadata)
    for key in values:
        if key in accepted:
            continue
        if key in known:
            raise ConfigError(_join(path, key), f"set from {known[key].metadata[DERIVED]}, "
                                                 "not by a recipe: remove it")
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(path, f"unknown key {key!r}{hint}; valid: {', '.join(accepted)}")
    missing = [n for n in accepted if n not in values and _required(known[n])]
    if missing:
        raise ConfigError(path, f"missing key(s) {', '.join(missing)}")
    hints = _hints(cls)
    kwargs = {k: _convert(hints[k], v, _join(path, k), allow_derived) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a nested check of the config (relative path): seen from here
        raise err.under(path) from None
    except ValueError as err:  # its own checks (a pair of options that do not go together, ...)
        raise ConfigError(path, str(err)) from None


def structure_nested(config) -> None:
    """Structure, in place, every field of dataclass `config` whose declared type is a config
    dataclass (alone or `X | None`) and whose value is still a mapping: for configs built in code
    with plain dicts (the recipe loader hands over instances already). Called by __post_init__."""
    for f in fields(config):
        value = getattr(config, f.name)
        if not isinstance(value, Mapping):
            continue
        tp = _hints(type(config))[f.name]
        options = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (
            Union, types.UnionType) else [tp]
        if len(options) == 1 and is_dataclass(options[0]):
            setattr(config, f.name, structure(options[0], value, f.name))


def _convert(tp, value, path: str, allow_derived: bool):
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: X's own error says more than "expected X or null"
            return _convert(options[0], value, path, allow_derived)
        for option in options:
            try:
                return _convert(option, value, path, allow_derived)
            except ConfigError:
                continue
        raise ConfigError(path, f"expected {_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if any(value == c and type(value) is type(c) for c in args):
            return value
        raise ConfigError(path, f"{value!r} is not one of {', '.join(map(repr, args))}")
    if is_dataclass(tp):
        return structure(tp, value, path, allow_derived=allow_derived)
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected {_name(tp)}, got {_describe(value)}")
        item = args[0] if args else Any
        return [_convert(item, v, f"{path}[{i}]", allow_derived) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {_describe(value)}")
        key_tp, value_tp = args or (Any, Any)
        return {_convert(key_tp, k, path, allow_derived): _convert(value_tp, v, _join(path, k), allow_derived)
                for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # YAML `lr: 1` is a fine float
    if tp in (bool, int, str):
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
        raise ConfigError(path, f"expected {_name(tp)}, got {_describe(value)}")
    if tp is float:
        hint = ""
        if isinstance(value, str) and _is_number(value):  # PyYAML reads 1e-3 (no dot) as text
            written = re.sub(r"^([+-]?[0-9]+)([eE])", r"\1.0\2", value)
            hint = f" (YAML reads it as text: write {written})"
        raise ConfigError(path, f"expected a number, got {_describe(value)}{hint}")
    raise TypeError(f"{path}: the config loader does not handle the type {tp!r}")


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return get_type_hints(cls)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _name(tp) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _name(a) for a in args)
    if tp is list or origin is list:
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return "a list" if not args else f"a list of {plural.get(args[0]) or _name(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(value) -> str:
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


# ---------------------------------------------------------------------------- recipes

def load_recipe(path: str | Path | None) -> dict:
    """The YAML recipe at `path` as a mapping of sections, checked at the top level, with the
    paths it leaves out filled in (DEFAULT_PATHS). None: the empty recipe (every default)."""
    if path is None:
        return resolve_paths({})
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(str(path), f"unreadable ({err})") from None
    recipe = {} if recipe is None else recipe
    if not isinstance(recipe, Mapping):
        raise ConfigError(str(path), f"expected a mapping of sections, got {_describe(recipe)}")
    return resolve_paths(recipe)


def resolve_paths(recipe: Mapping) -> dict:
    """Top-level keys checked; every section a mapping; DEFAULT_PATHS filled where absent."""
    valid = ["workdir", *SECTIONS]
    for key in recipe:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError("", f"unknown section {key!r}{hint}; valid: {', '.join(valid)}")
    workdir = recipe.get("workdir")
    if workdir is not None and not isinstance(workdir, str):
        raise ConfigError("workdir", f"expected a string, got {_describe(workdir)}")
    out = {}
    for name in SECTIONS:
        part = recipe.get(name)
        if part is not None and not isinstance(part, Mapping):
            raise ConfigError(name, f"expected a mapping, got {_describe(part)}")
        out[name] = dict(part or {})

    def default(section: str, key: str):
        if key in out[section]:
            return out[section][key]
        source = DEFAULT_PATHS[(section, key)]
        if isinstance(source, tuple):
            return default(*source)
        return None if workdir is None else str(Path(workdir) / source)

    for section, key in DEFAULT_PATHS:
        if section in OPTIONAL_SECTIONS and section not in recipe:
            continue  # a section that chooses what a stage runs stays absent unless written
        value = default(section, key)
        if value is not None:
            out[section][key] = value
    if workdir is not None:
        out["workdir"] = workdir
    return out


def build(cls: type[T], section: Mapping | None, *, at: str = "", **overrides) -> T:
    """One section (a mapping) -> its config; overrides (e.g. command-line flags) win unless None.
    `at` is the section's name in the recipe, for the errors."""
    values = dict(section or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return structure(cls, values, at)


def section(recipe: Mapping, name: str, **overrides):
    """The config of section `name` of a loaded recipe (the stage's module imported only now)."""
    if name not in SECTIONS:
        raise ConfigError("", f"unknown section {name!r}; valid: {', '.join(SECTIONS)}")
    module, cls = SECTIONS[name]
    return build(getattr(importlib.import_module(module), cls), recipe.get(name), at=name, **overrides)


__all__ = ["DEFAULT_PATHS", "SECTIONS", "build", "derived", "load_recipe", "resolve_paths",
           "section", "structure"]
