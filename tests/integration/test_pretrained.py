"""`model.pretrained`: a backbone saved with save_pretrained is loaded from its local folder
(nothing downloaded), trained from, and the checkpoint no longer needs the folder."""
from __future__ import annotations

import shutil

import pytest
import torch

from seqrec.preprocessing.pipeline import read_split
from seqrec.preprocessing.workflow import ITEM_LIST
from seqrec.training.backbones import build_backbone
from seqrec.training.checkpoint import load_checkpoint
from seqrec.training.loop import data_window
from seqrec.training.model import ModelConfig, SequenceRecommender
from seqrec.training.trainer import TrainConfig, train

pytestmark = pytest.mark.slow

SMALL = {"backbone": "gpt2", "task": "clm", "d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0}


@pytest.fixture()
def saved_backbone(tmp_path, etl):
    # The max_len train() derives from the data (the ETL's window), so the saved config matches the run's.
    max_len = data_window(etl.output_dir, int(read_split(etl.output_dir, "test")[ITEM_LIST].map(len).max()))
    torch.manual_seed(123)
    backbone = build_backbone(ModelConfig(num_items=10, max_len=max_len, **SMALL))
    folder = tmp_path / "gpt2-small"
    backbone.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in backbone.state_dict().items()}, max_len


def test_train_starts_from_the_saved_weights(saved_backbone, etl, tmp_path):
    folder, saved, _ = saved_backbone

    def run(name, **model):
        # lr 0: the weights after training are the weights training started from
        cfg = TrainConfig(data_dir=etl.output_dir, output_dir=str(tmp_path / name), epochs=1,
                          steps_per_epoch=2, lr=0.0, model={**SMALL, **model})
        train(cfg, progress=False)
        return load_checkpoint(tmp_path / name)

    shutil.copytree(folder, tmp_path / "copy")  # the checkpoint must not need the folder later
    model = run("from-pretrained", pretrained=str(tmp_path / "copy"))
    shutil.rmtree(tmp_path / "copy")
    trained = model.backbone.state_dict()
    assert model.cfg.pretrained == str(tmp_path / "copy")
    assert trained.keys() == saved.keys()
    assert all(torch.equal(trained[k], saved[k]) for k in saved)
    scratch = run("scratch").backbone.state_dict()  # the same seed without the folder differs
    assert not all(torch.equal(scratch[k], saved[k]) for k in saved)


def test_pretrained_folder_errors_name_the_problem(saved_backbone, tmp_path):
    folder, _, max_len = saved_backbone
    build = lambda **kw: SequenceRecommender(ModelConfig(num_items=50, max_len=max_len, **{**SMALL, **kw}))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build(pretrained=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model folder"):
        build(pretrained="gpt2")  # a hub name is never downloaded
    with pytest.raises(ValueError, match=r"n_embd: saved 16 vs config 32"):
        build(pretrained=str(folder), d_model=32)
    with pytest.raises(ValueError, match=r"n_layer: saved 1 vs config 2"):
        build(pretrained=str(folder), n_layers=2)
    with pytest.raises(ValueError, match="holds a 'gpt2' model, but model.backbone is 'llama'"):
        build(pretrained=str(folder), backbone="llama")
    # an attribute the config does not set reaches it through hf_overrides
    with pytest.raises(ValueError, match="activation_function"):
        build(pretrained=str(folder), hf_overrides={"activation_function": "relu"})
