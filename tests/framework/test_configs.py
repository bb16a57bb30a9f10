"""Every config option composes and passes the schema check; every experiment runs 2 steps (slow).

Experiments are found by globbing ``conf/experiment/*.yaml``, so a new recipe is covered without
touching this file. Tiny data: an experiment on dataset ``X`` runs with ``dataset=X_tiny`` when
``conf/dataset/X_tiny.yaml`` exists, else with ``dataset.limit=8``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers.runs import CONF_DIR, FAST, HELPER_CONF, REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from steerable.config_checks import check_config
from steerable.train import build_callbacks, build_loggers, configure_wandb, plain_config, resume_path, train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")) + ["smoke"]
SHARED_MODELNET = REPO.parent / "shared" / "data" / "modelnet40"
TINY = ["trainer=cpu", "trainer.fast_dev_run=2", "dataset.num_workers=0", *FAST]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def experiment_dataset(name: str) -> str | None:
    """The dataset an experiment selects with ``override /dataset: …`` (None if it keeps the default)."""
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if not path.exists():
        path = HELPER_CONF / "experiment" / f"{name}.yaml"
    for entry in OmegaConf.load(path).get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for key, value in entry.items():
                if key.replace("override ", "").strip() == "/dataset":
                    return value
    return None


def tiny_overrides(experiment: str) -> list[str]:
    dataset = experiment_dataset(experiment)
    if dataset and (CONF_DIR / "dataset" / f"{dataset}_tiny.yaml").exists():
        return [f"dataset={dataset}_tiny"]
    return ["dataset.limit=8"]


def test_default_config_composes_and_validates(compose_cfg):
    check_config(plain_config(compose_cfg([])))


GROUPS = ["trainer", "logger", "callbacks", "task", "launcher", "hparams_search", "group"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_validates(compose_cfg, group):
    for option in options(group):
        extra = {"task": ["experiment=smoke", f"task={option}"]}.get(group, [f"{group}={option}"])
        check_config(plain_config(compose_cfg(["experiment=smoke", *extra])))


def test_loggers_and_callbacks_instantiate(compose_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_cfg(["experiment=smoke", "logger=wandb", "callbacks=early_stopping"])
    configure_wandb(cfg)
    assert cfg.logger.wandb.offline is True
    loggers = build_loggers(cfg)
    assert sorted(type(lg).__name__ for lg in loggers) == ["ResumableCSVLogger", "WandbLogger"]
    names = [type(cb).__name__ for cb in build_callbacks(cfg, with_logger=True)]
    assert {"EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "RichProgressBar"} <= set(names)
    assert names[0] == "ModelCheckpoint"  # the best-checkpoint callback comes first
    assert "LearningRateMonitor" not in {type(cb).__name__ for cb in build_callbacks(cfg, with_logger=False)}


def test_wandb_goes_online_only_when_asked(compose_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    cfg = compose_cfg(["experiment=smoke", "logger=wandb"])
    configure_wandb(cfg)
    assert cfg.logger.wandb.offline is False


def test_slurm_launcher_and_optuna_sweeper_compose(compose_cfg):
    cfg = compose_cfg(["experiment=smoke", "launcher=slurm", "hydra.launcher.partition=gpu"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
    cfg = compose_cfg(["experiment=smoke", "hparams_search=optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    sampler = instantiate(cfg.hydra.sweeper.sampler)
    assert type(sampler).__name__ == "TPESampler"
    assert cfg.hydra.sweeper.direction == "minimize"  # val/mae
    cfg = compose_cfg(["experiment=modelnet40_so3", "hparams_search=optuna"])
    assert cfg.hydra.sweeper.direction == "maximize"  # val/acc


def compose_tiny(compose_cfg, experiment: str):
    overrides = [f"experiment={experiment}", *tiny_overrides(experiment), *TINY]
    if SHARED_MODELNET.is_dir():
        overrides.append(f"paths.modelnet40={SHARED_MODELNET}")
    return compose_cfg(overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(compose_cfg, experiment):
    check_config(plain_config(compose_cfg([f"experiment={experiment}"])))
    check_config(plain_config(compose_tiny(compose_cfg, experiment)))


def test_modelnet_model_uses_the_normals_the_dataset_loads(compose_cfg):
    assert compose_cfg(["experiment=modelnet40_so3"]).model.use_normals is False
    assert compose_cfg(["experiment=modelnet40_so3", "dataset.use_normals=true"]).model.use_normals is True


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_steps_on_tiny_data(compose_cfg, experiment):
    cfg = compose_tiny(compose_cfg, experiment)
    if "modelnet" in experiment and not Path(cfg.paths.modelnet40).is_dir():
        pytest.skip(f"no ModelNet-40 files at {cfg.paths.modelnet40}")
    metrics = train(cfg)
    assert metrics and all(v == v for v in metrics.values()), metrics  # no NaN


def test_resume_prefers_the_newest_of_last_and_hpc_checkpoints(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=smoke"])
    assert resume_path(cfg) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resume_path(cfg) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # written by Lightning on SLURM's requeue signal
    hpc.write_bytes(b"")
    os.utime(hpc, (time.time() + 10, time.time() + 10))
    assert resume_path(cfg) == str(hpc)
    cfg.resume = "never"
    assert resume_path(cfg) is None
    cfg.ckpt_path = "last"
    assert resume_path(cfg) == str(last)
