"""resume=auto must refuse a last.ckpt left in the run dir by a run with a different recipe."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from steerable.checkpoint import CONFIG_KEY
from steerable.config_checks import ConfigError
from steerable.train import resume_path

RECIPE = {
    "group": {"name": "o3"},
    "dataset": {"subset": 1000},
    "model": {"kernel": "implicit"},
    "task": {"loss": "l1"},
    "seed": 0,
}


def _cfg(tmp_path, **changes):
    recipe = {**RECIPE, **changes}
    return OmegaConf.create(
        {**recipe, "paths": {"output_dir": str(tmp_path)}, "ckpt_path": None, "resume": "auto"}
    )


def _write_last(tmp_path, stored: dict) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_KEY: stored, "state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")


def test_same_recipe_resumes(tmp_path):
    _write_last(tmp_path, RECIPE)
    assert resume_path(_cfg(tmp_path)).endswith("last.ckpt")


def test_different_recipe_is_refused_with_the_differing_keys(tmp_path):
    _write_last(tmp_path, RECIPE)
    with pytest.raises(ConfigError, match=r"different dataset\.subset, model\.kernel"):
        resume_path(_cfg(tmp_path, dataset={"subset": 2000}, model={"kernel": "analytic"}))


def test_resume_never_ignores_the_checkpoint(tmp_path):
    _write_last(tmp_path, RECIPE)
    cfg = _cfg(tmp_path, model={"kernel": "analytic"})
    cfg.resume = "never"
    assert resume_path(cfg) is None


def test_execution_options_may_change_on_resume(tmp_path):
    """The contraction path, chunking, compilation and block sparsity change how the convolutions run,
    not what they compute: a user flips them to get past an out-of-memory error, and the run resumes."""
    conv = {"channels": 8, "path": "nodewise", "chunk_edges": None, "compile_mlp": False,
            "contraction": "blocks"}
    _write_last(tmp_path, {**RECIPE, "model": {"kernel": "implicit", "conv": conv}})
    flipped = {**conv, "path": "reference", "chunk_edges": 4096, "compile_mlp": True, "contraction": "dense"}
    assert resume_path(_cfg(tmp_path, model={"kernel": "implicit", "conv": flipped})).endswith("last.ckpt")
    with pytest.raises(ConfigError, match=r"different model\.conv\.channels;"):
        resume_path(_cfg(tmp_path, model={"kernel": "implicit", "conv": {**flipped, "channels": 16}}))


def test_execution_options_keep_the_parameters():
    """What the guard lets change keeps every parameter and buffer a checkpoint holds."""
    from steerable.models.qm9 import QM9Model

    small = {"channels": 2, "n_layers": 2, "n_rbf": 4}
    states = [QM9Model(group={"name": "o3"}, targets=["homo"], num_features=2, num_blocks=1,
                       conv={**small, **execution}).state_dict()
              for execution in ({}, {"path": "reference", "chunk_edges": 64, "compile_mlp": True,
                                     "contraction": "dense"})]
    assert {k: v.shape for k, v in states[0].items()} == {k: v.shape for k, v in states[1].items()}
