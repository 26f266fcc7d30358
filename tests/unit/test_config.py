"""The recipe loader: typed nested configs, dotted-path errors, workdir-derived paths, and the
command line's one error boundary (message on stderr, exit status 2, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from seqrec.config import SECTIONS, build, derived, load_recipe, section, structure, structure_nested
from seqrec.errors import ConfigError, SeqrecError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@dataclass
class Inner:
    name: str
    mode: Literal["a", "b"] = "a"
    sizes: dict[str, int] = field(default_factory=dict)
    count: int = derived("the data", default=0)


@dataclass
class Outer:
    rate: float = 0.1
    flag: bool = False
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    inner: Inner | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit {self.limit} must be >= 0")


def test_structure_builds_nested_typed_values():
    cfg = structure(Outer, {"rate": 1, "limit": None, "tags": ["x"],
                            "inner": {"name": "n", "mode": "b", "sizes": {"k": 2}}})
    assert cfg == Outer(rate=1.0, tags=["x"], inner=Inner("n", "b", {"k": 2}))
    assert isinstance(cfg.rate, float) and isinstance(cfg.inner, Inner)
    assert structure(Outer, {}) == Outer()
    assert structure(Outer, cfg) is cfg  # an instance passes as it is


@pytest.mark.parametrize("values,message", [
    ({"inner": {"name": "n", "mde": "a"}},
     "top.inner: unknown key 'mde' (did you mean 'mode'?); valid: mode, name, sizes"),
    ({"inner": {"name": "n", "mode": "c"}}, "top.inner.mode: 'c' is not one of 'a', 'b'"),
    ({"inner": {"mode": "a"}}, "top.inner: missing key(s) name"),
    ({"inner": {"name": "n", "count": 3}}, "top.inner.count: set from the data, not by a recipe"),
    ({"inner": {"name": "n", "sizes": {"k": "2"}}}, "top.inner.sizes.k: expected an integer, got string '2'"),
    ({"inner": ["n"]}, "top.inner: expected a mapping of Inner keys, got list ['n']"),
    ({"tags": "x"}, "top.tags: expected a list of strings, got string 'x'"),
    ({"tags": ["x", 1]}, "top.tags[1]: expected a string, got integer 1"),
    ({"flag": 1}, "top.flag: expected true or false, got integer 1"),
    ({"limit": True}, "top.limit: expected an integer, got boolean True"),
    ({"rate": None}, "top.rate: expected a number, got null"),
    ({"rate": "1e-3"}, "top.rate: expected a number, got string '1e-3' (YAML reads it as text: write 1.0e-3)"),
    ({"limit": -1}, "top: limit -1 must be >= 0"),  # the class's own check, with its path
])
def test_structure_names_the_dotted_path_and_the_problem(values, message):
    with pytest.raises(ConfigError) as err:
        structure(Outer, values, "top")
    assert str(err.value).startswith(message), str(err.value)


def test_derived_fields_are_accepted_from_a_saved_config():
    assert structure(Inner, {"name": "n", "count": 3}, allow_derived=True).count == 3


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_every_section(recipe):
    from seqrec.training.features import SideFeatureConfig
    from seqrec.training.model import ModelConfig

    loaded = load_recipe(recipe)
    configs = {name: section(loaded, name) for name in SECTIONS}
    train, export = configs["train"], configs["export"]
    assert isinstance(train.model, ModelConfig)
    assert train.model.side_features is None or isinstance(train.model.side_features, SideFeatureConfig)
    # each stage reads what the one before it wrote
    assert train.data_dir == configs["etl"].output_dir == export.data_dir
    assert export.model_dir == train.output_dir
    assert configs["incremental"].data_dir == configs["etl"].output_dir


def test_side_feature_recipe_is_typed():
    train = section(load_recipe(ROOT / "configs" / "ml-100k-side-features.yaml"), "train")
    side = train.model.side
    assert side.combine == "concat" and side.continuous_embedding == "soft-one-hot"
    assert side.categorical == ["release_year"] and "timestamp-since_prev" in side.log_scale


def test_paths_derive_from_workdir_unless_given(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("workdir: out/w\ntrain:\n  epochs: 1\n")
    r = load_recipe(recipe)
    assert r["etl"]["output_dir"] == "out/w/data" == r["train"]["data_dir"] == r["export"]["data_dir"]
    assert r["train"]["output_dir"] == "out/w/model" == r["export"]["model_dir"]
    assert r["export"]["repository"] == "out/w/model_repository"
    assert r["incremental"] == {"data_dir": "out/w/data", "output_dir": "out/w/incremental"}

    recipe.write_text("workdir: out/w\netl:\n  output_dir: shared/data\n"
                      "train:\n  output_dir: out/other\nexport:\n  repository: repo\n")
    r = load_recipe(recipe)
    assert r["train"]["data_dir"] == "shared/data" == r["export"]["data_dir"]
    assert r["export"]["model_dir"] == "out/other" and r["export"]["repository"] == "repo"

    recipe.write_text("etl:\n  output_dir: d\n")  # no workdir: links only, else the classes' defaults
    r = load_recipe(recipe)
    assert r["train"] == {"data_dir": "d"} and r["export"] == {"data_dir": "d"}
    assert section(r, "export").repository == "artifacts/ml-100k/model_repository"


def test_overrides_win_and_are_checked(tmp_path):
    from seqrec.training.trainer import TrainConfig

    assert build(TrainConfig, {"epochs": 3}, epochs=5, data_dir=None).epochs == 5
    with pytest.raises(ConfigError, match="^train.epochs: expected an integer"):
        build(TrainConfig, {}, at="train", epochs="5")


def test_old_checkpoint_configs_still_load(tmp_path):
    """config.json written before the side features were typed held `side_features: {}` (or a
    plain mapping); both load, and a new save round-trips."""
    import torch

    from seqrec.training.checkpoint import load_checkpoint, save_checkpoint
    from seqrec.training.features import SideFeatureConfig
    from seqrec.training.model import ModelConfig, SequenceRecommender

    items = torch.tensor([[3, 4, 5, 0]])
    for side in ({}, {"categorical": ["genre"], "cardinalities": {"genre": 7}, "combine": "sum"}):
        torch.manual_seed(0)
        model = SequenceRecommender(ModelConfig(num_items=12, max_len=4, d_model=8, n_layers=1,
                                                n_heads=2, side_features=side)).eval()
        folder = tmp_path / f"ckpt{len(side)}"
        save_checkpoint(model, folder)
        saved = json.loads((folder / "config.json").read_text())
        assert saved["side_features"] == (None if not side else SideFeatureConfig(**side).to_dict())
        saved["side_features"] = side  # the older layout
        (folder / "config.json").write_text(json.dumps(saved))
        loaded = load_checkpoint(folder)
        assert loaded.cfg == model.cfg
        assert (loaded.side is None) == (not side)
        if side:
            assert isinstance(loaded.cfg.side_features, SideFeatureConfig)
            assert loaded.cfg.side.cardinalities == {"genre": 7}
            features = {"genre": torch.tensor([[1, 2, 3, 0]])}
            torch.testing.assert_close(loaded.hidden_states(items, features=features),
                                       model.hidden_states(items, features=features))
        else:
            torch.testing.assert_close(loaded.hidden_states(items), model.hidden_states(items))


BAD_RECIPES = [
    ("train", "train:\n  model:\n    side_features:\n      continuous: [rating]\n      combin: sum\n",
     "error: train.model.side_features: unknown key 'combin' (did you mean 'combine'?); valid: "
     "categorical, categorical_dim, combine, continuous, continuous_dim, continuous_embedding, "
     "log_scale, soft_one_hot_bins\n"),
    ("train", "train:\n  model:\n    max_len: 50\n",
     "error: train.model.max_len: set from the data's window (etl.max_len)"),
    ("train", "train:\n  model:\n    d_model: 64\n    n_heads: 3\n",
     "error: train.model: d_model 64 is not divisible by n_heads 3\n"),
    ("preprocess", "etl:\n  source:\n    format: yoochoose\n    pth: x.dat\n",
     "error: etl.source: unknown key 'pth' (did you mean 'path'?); valid: columns, format, options, path\n"),
    ("export", "export:\n  top_k: ten\n", "error: export.top_k: expected an integer, got string 'ten'\n"),
    ("train", "trian:\n  epochs: 1\n", "error: unknown section 'trian' (did you mean 'train'?)"),
]


@pytest.mark.parametrize("command,text,message", BAD_RECIPES, ids=[b[2][7:40] for b in BAD_RECIPES])
def test_cli_reports_a_bad_recipe_with_status_2(tmp_path, capsys, command, text, message):
    from seqrec.cli import main

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert main([command, "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert not (tmp_path / "artifacts").exists()


def test_cli_exit_status_and_no_traceback_in_a_real_process(tmp_path):
    """The installed `seqrec` entry point (a recipe error found before any stage is imported)."""
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("workdir: w\nexprot:\n  top_k: 5\n")
    run = subprocess.run([str(Path(sys.executable).parent / "seqrec"), "export", "--config", str(recipe)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert run.stderr == ("error: unknown section 'exprot' (did you mean 'export'?); "
                          "valid: workdir, etl, train, incremental, rank, export, recformer\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written


def test_cli_flag_errors_are_project_errors(capsys):
    from seqrec.cli import main

    assert main(["query", "--items", "50,x", "--url", "127.0.0.1:1", "--no-titles"]) == 2
    assert capsys.readouterr().err == "error: --items: 'x' is not an integer item id\n"


def test_project_errors_are_value_errors_too():
    from seqrec.preprocessing.interactions import InteractionError

    assert issubclass(ConfigError, SeqrecError) and issubclass(ConfigError, ValueError)
    assert issubclass(InteractionError, SeqrecError)
    assert str(ConfigError("b", "bad").under("a")) == "a.b: bad"
    assert str(ConfigError("", "bad").under("a")) == "a: bad"


def test_incremental_serve_keys_are_typed_and_checked(tmp_path):
    recipe = tmp_path / "r.yaml"
    head = "workdir: w\nincremental:\n"
    recipe.write_text(head + "  serve:\n    repository: repo\n    url: 127.0.0.1:8001\n")
    serve = section(load_recipe(recipe), "incremental").serve
    assert (serve.repository, serve.url, serve.key_file, serve.request_rows) == \
        ("repo", "127.0.0.1:8001", None, 64)
    recipe.write_text(head + "  serve:\n    repo: x\n")
    with pytest.raises(ConfigError, match=r"^incremental\.serve: unknown key 'repo'.*; valid: export, key_file, repository"):
        section(load_recipe(recipe), "incremental")
    recipe.write_text(head + "  serve:\n    request_rows: 0\n")
    with pytest.raises(ConfigError, match=r"^incremental\.serve: request_rows must be >= 1"):
        section(load_recipe(recipe), "incremental")


@pytest.mark.parametrize("serve,message", [
    ("    request_rows: 65\n", "error: incremental.serve.request_rows: 65 sessions per request is "
                             "more than the exported max_batch_size (64)\n"),
    ("    url: 127.0.0.1:1\n  model:\n    side_features: {categorical: [mode]}\n",
     "error: incremental --serve evaluates through the server with item "
                             "ids only: a model with side features is not supported"),
])
def test_incremental_serve_refuses_before_training(tmp_path, capsys, serve, message):
    from seqrec.cli import main

    recipe = tmp_path / "inc.yaml"
    recipe.write_text(f"workdir: {tmp_path / 'w'}\nincremental:\n  serve:\n{serve}")
    assert main(["incremental", "--serve", "--config", str(recipe)]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "w").exists()  # nothing trained, nothing written


@dataclass
class Built:
    inner: Inner | None = None
    rate: float = 0.5

    def __post_init__(self):
        structure_nested(self)


def test_configs_built_in_code_structure_their_nested_mappings():
    built = Built(inner={"name": "n", "mode": "b"})
    assert built.inner == Inner(name="n", mode="b")
    assert Built().inner is None
    with pytest.raises(ConfigError, match=r"inner: unknown key 'mod'.*did you mean 'mode'"):
        Built(inner={"name": "n", "mod": "b"})
