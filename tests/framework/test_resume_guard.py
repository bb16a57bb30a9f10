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
