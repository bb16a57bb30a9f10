"""Unit tests of steerable.config_checks (no Hydra involved)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from steerable.config_checks import (
    REDACTED,
    ConfigError,
    check_config,
    check_override_choices,
    locate,
    redact_secrets,
)

VALID = {
    "seed": 0, "resume": "auto",
    "dataset": {"_target_": "steerable.data.synthetic.SyntheticPointCloudDataModule", "kind": "regression"},
    "model": {"_target_": "steerable.models.baseline.PointNetBaseline", "out_dim": 2},
    "task": {"_target_": "steerable.tasks.RegressionTask", "loss": "l1",
             "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}},
    "trainer": {"_target_": "pytorch_lightning.Trainer", "max_epochs": 1},
}


def with_(path: str, value) -> dict:
    """A copy of VALID with ``path`` (dotted) set to ``value``."""
    cfg = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = cfg
    for key in parents:
        node = node[key]
    node[leaf] = value
    return cfg


def test_valid_config_passes():
    check_config(VALID)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("model.kernal", "implicit", "unknown key 'model.kernal'"),
    ("task.loss", "huber", "invalid value task.loss='huber'; valid: l1, mse"),
    ("dataset.kind", "segmentation", "valid: regression, classification, trajectory"),
    ("trainer.max_epoch", 3, "did you mean 'max_epochs'?"),
    ("task.optimizer.lrr", 0.1, "unknown key 'task.optimizer.lrr'"),
    ("model._target_", "steerable.models.nope.Model", "cannot import"),
    ("seeed", 1, "unknown top-level key 'seeed' (did you mean 'seed'?)"),
])
def test_bad_config_is_named(path, value, message):
    with pytest.raises(ConfigError) as err:
        check_config(with_(path, value))
    assert message in str(err.value)


def test_missing_group_is_reported():
    cfg = dict(VALID)
    del cfg["model"]
    with pytest.raises(ConfigError, match="'model' is missing"):
        check_config(cfg)


def test_override_choices(tmp_path: Path):
    (tmp_path / "group").mkdir()
    for name in ("so3", "o3"):
        (tmp_path / "group" / f"{name}.yaml").write_text("")
    check_override_choices(["group=so3", "group=so3,o3", "seed=1", "hydra/launcher=submitit_slurm",
                            "group.name=x", "~group", "group=null"], tmp_path)
    with pytest.raises(ConfigError, match=r"unknown group 'so4' \(did you mean 'so3'\?\); valid: o3, so3"):
        check_override_choices(["group=so4"], tmp_path)
    with pytest.raises(ConfigError, match="unknown group 'o2'"):
        check_override_choices(["group=so3,o2"], tmp_path)


def test_override_choices_see_extra_search_path(tmp_path: Path):
    (tmp_path / "main" / "experiment").mkdir(parents=True)
    (tmp_path / "extra" / "experiment").mkdir(parents=True)
    (tmp_path / "extra" / "experiment" / "smoke.yaml").write_text("")
    overrides = [f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "experiment=smoke"]
    check_override_choices(overrides, tmp_path / "main")
    for flags in (["--config-dir", str(tmp_path / "extra")], [f"--config-dir={tmp_path / 'extra'}"],
                  ["-cd", str(tmp_path / "extra")]):
        check_override_choices([*flags, "experiment=smoke"], tmp_path / "main")
    with pytest.raises(ConfigError, match="unknown experiment 'smoke'"):
        check_override_choices(["experiment=smoke"], tmp_path / "main")


def test_conv_options_are_checked():
    """``model.conv`` is a plain dict handed to the convs: a misspelt key must not pass silently."""
    model = {"_target_": "steerable.models.qm9.QM9Model"}
    for good in ({"chunk_edges": 8192, "compile_mlp": True, "channels": 4}, {"n_rings": 5, "width": 2.0}):
        check_config(with_("model", {**model, "conv": good}))
    for bad, hint in (("chunk_edgs", "chunk_edges"), ("n_ring", "n_rings")):
        with pytest.raises(ConfigError, match=f"unknown key 'model.conv.{bad}' \\(did you mean '{hint}'"):
            check_config(with_("model", {**model, "conv": {bad: 1}}))


def test_redact_secrets_keeps_structure():
    cfg = {"logger": {"wandb": {"api_key": "abc", "project": "p", "token": None}},
           "list": [{"password": "x"}], "n": 1}
    assert redact_secrets(cfg) == {"logger": {"wandb": {"api_key": REDACTED, "project": "p", "token": None}},
                                   "list": [{"password": REDACTED}], "n": 1}


def test_redact_secret_values_from_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    monkeypatch.setenv("MY_TOKEN", "short")  # < 8 characters: too likely to match innocent text
    cfg = {"logger": {"wandb": {"notes": "run with key 0123456789abcdef", "project": "short"}},
           "tags": ["0123456789abcdef", "qm9"]}
    assert redact_secrets(cfg) == {"logger": {"wandb": {"notes": REDACTED, "project": "short"}},
                                   "tags": [REDACTED, "qm9"]}


def test_locate_nested_attribute():
    import torch
    assert locate("torch.optim.lr_scheduler.CosineAnnealingLR") is torch.optim.lr_scheduler.CosineAnnealingLR


def test_build_turns_an_unexpected_keyword_into_a_config_error():
    from omegaconf import OmegaConf

    from steerable.checkpoint import build

    node = OmegaConf.create({"_target_": "steerable.kernels.linear.EquivariantLinear", "in_type": None,
                             "out_type": None, "biass": True})
    with pytest.raises(ConfigError, match="^layer: .*unexpected keyword argument 'biass'"):
        build(node, "layer")
