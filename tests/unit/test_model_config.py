"""Model and training configuration: the backbone x task matrix, invalid pairs and unknown options
refused before any data is read, every recipe in configs/ buildable."""
from __future__ import annotations

import pytest

from helpers import ROOT
from seqrec.training.backbones import BACKBONES
from seqrec.training.model import ModelConfig
from seqrec.training.tasks import TASKS, valid_tasks
from seqrec.training.trainer import TrainConfig

INVALID = [(b, t) for b in BACKBONES for t in TASKS if t not in valid_tasks(b)]


def test_unknown_backbone_fails_at_configuration():
    with pytest.raises(ValueError, match="choose from"):
        ModelConfig(num_items=10, backbone="nope")


def test_the_matrix_is_what_the_tasks_declare():
    assert set(BACKBONES) == {"gpt2", "bert", "roberta", "albert", "electra", "xlnet", "longformer", "llama"}
    assert valid_tasks("gpt2") == valid_tasks("llama") == ["clm", "clm-last"]
    assert valid_tasks("xlnet") == ["clm", "clm-last", "mlm", "plm", "rtd"]
    for b in ("bert", "roberta", "albert", "electra", "longformer"):
        assert valid_tasks(b) == ["clm-last", "mlm", "rtd"]


@pytest.mark.parametrize("backbone,task", INVALID)
def test_invalid_pair_fails_at_configuration_naming_valid_choices(backbone, task):
    with pytest.raises(ValueError, match=r"valid backbones for .*valid tasks for") as err:
        ModelConfig(num_items=10, backbone=backbone, task=task)
    assert repr(valid_tasks(backbone)[0]) in str(err.value)
    with pytest.raises(ValueError, match="valid tasks"):  # before any data is read
        TrainConfig(data_dir="/nonexistent", model={"backbone": backbone, "task": task})


def test_unknown_model_option_is_named():
    with pytest.raises(ValueError, match=r"^model: unknown key 'd_modle' \(did you mean 'd_model'\?\); valid: "):
        TrainConfig(model={"d_modle": 8})


def test_every_recipe_builds_a_valid_train_config():
    from seqrec.config import build, load_recipe

    recipes = [load_recipe(p) for p in sorted(ROOT.glob("configs/*.yaml"))]
    recipes = [r for r in recipes if "model" in r["train"]]  # reader recipes (etl only) train nothing
    assert len(recipes) >= 6
    pairs = set()
    for recipe in recipes:
        cfg = build(TrainConfig, recipe["train"], at="train")
        pairs.add((cfg.model.backbone, cfg.model.task))
    assert {"clm", "clm-last", "mlm", "plm", "rtd"} <= {t for _, t in pairs}
