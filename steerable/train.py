"""Training entrypoint: ``python -m steerable.train [overrides]`` (console script ``steerable-train``).

:func:`train` is a pure function of the composed config (tests call it directly); :func:`main` is
the thin Hydra wrapper. Config mistakes end in a single ``error: …`` line and exit status 2.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from steerable.callbacks import SIGTERM_EXIT_CODE, SyncFieldBatchNorm
from steerable.checkpoint import (
    CONFIG_KEY,
    StoreConfig,
    build,
    build_model_and_task,
    connect_loader_transform,
)
from steerable.config_checks import ConfigError, check_config, check_override_choices, redact_secrets
from steerable.io_utils import AtomicCheckpointIO, atomic_write

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
OPTUNA_DIRECTIONS = {"min": "minimize", "max": "maximize"}
# conf/hparams_search/optuna.yaml: the study's direction follows task.monitor_mode
OmegaConf.register_new_resolver("optuna_direction", OPTUNA_DIRECTIONS.__getitem__, replace=True)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config as a plain dict, without Hydra's own ``hydra`` node."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def configure_wandb(cfg: DictConfig) -> None:
    """Fill W&B's automatic fields in place: offline mode and the sweep group.

    ``offline: null`` → offline unless ``WANDB_MODE`` is set (then W&B obeys it) or
    ``WANDB_API_KEY`` is set. ``group: null`` → the sweep dir name for multirun jobs.
    """
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return
    with open_dict(wandb_cfg):
        if wandb_cfg.get("offline") is None:
            wandb_cfg.offline = "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY")
        if wandb_cfg.get("group") is None and HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                wandb_cfg.group = Path(hydra_cfg.sweep.dir).name


def resume_path(cfg: DictConfig) -> str | None:
    """Checkpoint to resume from.

    ``ckpt_path`` (a path, or ``last`` for the run dir's ``checkpoints/last.ckpt``) wins; otherwise,
    with ``resume=auto``, the newest of ``checkpoints/last.ckpt`` and Lightning's SLURM-requeue
    ``hpc_ckpt_*.ckpt`` in the run dir, if any.
    """
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path is not None:
        path = last if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no checkpoint at {path}")
        return str(path)
    if cfg.resume != "auto":
        return None
    candidates = [p for p in (last, *output_dir.glob("hpc_ckpt_*.ckpt")) if p.is_file()]
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    check_same_recipe(newest, cfg)
    return str(newest)


RECIPE_SECTIONS = ("group", "dataset", "model", "task", "seed")
# Keys that may change between a run and its resume, because they change how the run executes, not
# what it computes. How data is loaded (another node, STEERABLE_ROOT), and how the convolutions run:
# the contraction path, chunking, compilation and block sparsity give the same function with the same
# parameters (a user flips them to get past an out-of-memory error or a missing compiler).
LOADER_KEYS = ("num_workers", "data_dir", "root", "progress", "processes")
EXECUTION_KEYS = ("path", "chunk_edges", "compile_mlp", "contraction")
RESUMABLE_CHANGES = frozenset({*(f"dataset.{key}" for key in LOADER_KEYS),
                               *(f"model.conv.{key}" for key in EXECUTION_KEYS)})


def check_same_recipe(ckpt: Path, cfg: DictConfig) -> None:
    """``resume=auto`` must not silently continue a *different* run that left a checkpoint in this dir.

    Loader and execution settings (:data:`RESUMABLE_CHANGES`) may differ.

    Raises:
        ConfigError: naming the keys whose values differ from the checkpoint's stored config.
    """
    try:
        stored = torch.load(ckpt, map_location="cpu", weights_only=True).get(CONFIG_KEY)
    except Exception:  # unreadable/foreign file: Lightning's own loading reports it when resuming
        return
    if stored is None:
        return
    current = plain_config(cfg)
    differing = [key for section in RECIPE_SECTIONS
                 for key in _differing_keys(section, stored.get(section), current.get(section))]
    if differing:
        raise ConfigError(f"resume=auto: {ckpt} was written by a run with different {', '.join(differing)}; "
                          "use a fresh run dir, resume=never, or ckpt_path=… to resume it on purpose")


def _differing_keys(prefix: str, stored: Any, current: Any) -> list[str]:
    """Dotted keys under ``prefix`` whose values differ, nested dicts key by key, except
    :data:`RESUMABLE_CHANGES` (a value that is not a dict on either side: ``prefix`` itself)."""
    if prefix in RESUMABLE_CHANGES:
        return []
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return [] if stored == current else [prefix]
    return [key for name in sorted(set(stored) | set(current))
            for key in _differing_keys(f"{prefix}.{name}", stored.get(name), current.get(name))]


def stored_fit_state(ckpt_path: str, monitor: str) -> dict[str, Any]:
    """What a checkpoint says about its run's fit: ``stopped_early`` (an ``EarlyStopping`` callback
    ended it), and ``best_path``/``best_score`` of the ``ModelCheckpoint`` that monitors ``monitor``."""
    try:
        states = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("callbacks", {})
    except Exception:  # Lightning reports an unreadable checkpoint itself
        return {}
    state: dict[str, Any] = {"stopped_early": any(
        key.startswith("EarlyStopping") and int(value.get("stopped_epoch", 0)) > 0
        for key, value in states.items())}
    for key, value in states.items():
        if key.startswith("ModelCheckpoint") and value.get("monitor") == monitor \
                and value.get("best_model_path"):
            score = value.get("best_model_score")
            state.update(best_path=value["best_model_path"],
                         best_score=None if score is None else float(score))
    return state


def cluster_plugins() -> list[Any]:
    """Under SLURM: Lightning's requeue on USR2, for jobs started with plain ``sbatch``.

    Under submitit (``launcher=slurm``) submitit's own USR2 handler is already installed, so Lightning
    adds none; :class:`steerable.callbacks.CheckpointOnSigterm` saves and hands the signal to it.
    """
    if "SLURM_JOB_ID" in os.environ and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR2)]
    return []


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [build(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items() if node]


def build_callbacks(cfg: DictConfig, with_logger: bool) -> list[pl.Callback]:
    """Callbacks from ``cfg.callbacks`` (``null`` entries skipped; the LR monitor needs a logger)."""
    nodes = (cfg.get("callbacks") or {}).items()
    callbacks = [build(node, f"callbacks.{name}") for name, node in nodes if node]
    return [cb for cb in callbacks if with_logger or not isinstance(cb, LearningRateMonitor)]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (a temp file of this process, then rename)."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True))


def redact_saved_config() -> None:
    """Redact credentials in ``<run>/.hydra/config.yaml``, which Hydra wrote before :func:`train` ran.

    (The checkpoint, W&B and CSV copies are redacted when they are written.)
    """
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is None:
        return
    hydra_cfg = HydraConfig.get()
    path = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir / "config.yaml"
    if not path.is_file():
        return
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    redacted = redact_secrets(saved)
    if redacted != saved:
        with atomic_write(path, "w") as handle:
            handle.write(OmegaConf.to_yaml(redacted))


def finish_wandb(loggers: list[Any], failed: bool) -> None:
    """End this job's W&B run, so the next job of a local multirun (same process) starts its own."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def check_launch(resolved: dict[str, Any]) -> None:
    """Refuse ``trainer=ddp`` (several devices) in a multirun of Hydra's local launcher.

    Lightning starts ranks 1… by running the same command line again, ``-m`` included, so each rank
    would launch the whole sweep in its own sweep dir. SLURM (``launcher=slurm``) starts the ranks as
    tasks of each job instead.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    trainer = resolved.get("trainer") or {}
    strategy, devices = str(trainer.get("strategy", "")), trainer.get("devices", 1)
    launcher = str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default=""))
    if strategy.startswith("ddp") and "spawn" not in strategy and devices not in (1, "1", [0]) \
            and launcher.endswith("BasicLauncher"):
        raise ConfigError("trainer=ddp in a local multirun: Lightning starts the other ranks by re-running "
                          "the command, -m included, so every rank would run the whole sweep; run the jobs "
                          "one by one (without -m) or use launcher=slurm")


def best_score_key(monitor: str) -> str:
    """``metrics.json`` key of the monitored metric's best value (``val/mae`` → ``val/mae_best``)."""
    return f"{monitor}_best"


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate, seed, build, fit, test the best checkpoint; write ``metrics.json`` in the run dir.

    Returns:
        Every metric Lightning collected (``train/…``, ``val/…``, ``test/…``) as floats, plus the best
        value of the monitored metric (the tested checkpoint's) under :func:`best_score_key`. A run
        resumed in its own dir keeps the entries of its earlier ``metrics.json`` that it does not
        produce again (e.g. re-running a finished run only tests).

    Raises:
        ConfigError: on any config problem, before training starts; also ``train=false`` without a
            checkpoint to test (it would test untrained weights).
    """
    redact_saved_config()
    resolved = plain_config(cfg)
    check_config(resolved)
    check_launch(resolved)
    ckpt_path = resume_path(cfg)
    if not cfg.train and ckpt_path is None:
        why = ("resume=never ignores the run dir's checkpoints" if cfg.resume == "never" else
               f"{Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'} does not exist")
        raise ConfigError(f"train=false would test untrained weights: {why}; run it in the trained run's "
                          "dir with resume=auto, or pass ckpt_path=…")
    pl.seed_everything(cfg.seed, workers=True)
    configure_wandb(cfg)
    datamodule = build(cfg.dataset, "dataset")
    task = build_model_and_task(cfg)
    connect_loader_transform(datamodule, task)
    loggers = build_loggers(cfg)
    try:
        metrics = _fit_and_test(cfg, resolved, ckpt_path, datamodule, task, loggers)
    except BaseException as err:
        finish_wandb(loggers, failed=True)
        if isinstance(err, SIGTERMException) and err.code is None:  # Lightning's own, outside our
            raise SIGTERMException(SIGTERM_EXIT_CODE) from err  # save window: still "killed", not 0
        raise
    finish_wandb(loggers, failed=False)
    return metrics


def _fit_and_test(cfg: DictConfig, resolved: dict[str, Any], ckpt_path: str | None,
                  datamodule: pl.LightningDataModule, task: pl.LightningModule, loggers: list[Any]
                  ) -> dict[str, float]:
    callbacks = build_callbacks(cfg, with_logger=bool(loggers))
    callbacks.append(StoreConfig(redact_secrets(resolved)))
    layer_sync = [SyncFieldBatchNorm()] if cfg.trainer.get("sync_batchnorm") else []
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
                                plugins=[*cluster_plugins(), AtomicCheckpointIO(), *layer_sync])
    for logger in loggers:
        logger.log_hyperparams(redact_secrets(resolved))

    stored = stored_fit_state(ckpt_path, cfg.task.monitor) if ckpt_path else {}
    # resume=auto in a run dir early stopping has ended: the run is finished (only tests), as when
    # max_epochs was reached; Lightning itself would train on, since it does not save should_stop
    fit = cfg.train and not (stored.get("stopped_early") and cfg.ckpt_path is None)
    if fit:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpointing = trainer.checkpoint_callback
    best_score = checkpointing.best_model_score if checkpointing is not None else None
    best_score = stored.get("best_score") if best_score is None else float(best_score)
    if best_score is not None:
        metrics[best_score_key(cfg.task.monitor)] = best_score
    if cfg.test:
        best = checkpointing.best_model_path if checkpointing else ""
        if not best and Path(stored.get("best_path") or "").is_file():  # not fitted now: the stored best
            best = stored["best_path"]
        test_ckpt = best or (None if fit else ckpt_path)
        trainer.test(task, datamodule=datamodule, ckpt_path=test_ckpt)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    path = Path(cfg.paths.output_dir) / "metrics.json"
    if ckpt_path is not None and path.is_file():  # resumed: keep what this run does not measure again
        metrics = {**json.loads(path.read_text()), **metrics}
    if trainer.is_global_zero:  # under DDP every rank gets here; one writes
        write_json(path, metrics)
    return metrics


def one_line(err: BaseException) -> str:
    """Hydra/OmegaConf messages span many lines (search paths, ``full_key``…): keep the gist."""
    parts = [str(err)]
    if isinstance(err.__cause__, OmegaConfBaseException):
        parts.append(str(err.__cause__))
    lines = []
    for text in parts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("Config search path", "full_key:", "object_type=", "reference_type=")):
                break
            if line:
                lines.append(line)
    return " ".join(lines)


def exit_with_error(err: BaseException) -> None:
    """Print ``error: <one line>`` on stderr and exit with status 2."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)


# The user's own HYDRA_FULL_ERROR, kept for the processes this one starts: Lightning starts DDP ranks
# 1… by re-running the command with this process's environment, in which HYDRA_FULL_ERROR is 1.
USER_FULL_ERROR = "STEERABLE_USER_HYDRA_FULL_ERROR"


def run_cli(hydra_main: Callable[[], Any]) -> None:
    """Run a Hydra main function; config errors → ``error: <one line>`` on stderr, exit 2.

    ``HYDRA_FULL_ERROR=1`` in the environment keeps full tracebacks; DDP ranks started by this
    process follow the user's setting too (one line each, unless the user asked for tracebacks).
    """
    saved = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", USER_FULL_ERROR)}
    os.environ.setdefault(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "0"))
    verbose = os.environ[USER_FULL_ERROR] == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # make Hydra raise instead of printing, so we can format
    try:
        check_override_choices(sys.argv[1:], CONF_DIR)
        hydra_main()
    except (ConfigError, CompactHydraException, OmegaConfBaseException) as err:
        if verbose or isinstance(err, InstantiationException):
            raise
        exit_with_error(err)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra task: returns the best value of the monitored metric (what sweepers optimise)."""
    try:
        metrics = train(cfg)
        return metrics.get(best_score_key(cfg.task.monitor), metrics.get(cfg.task.monitor))
    except (ConfigError, OmegaConfBaseException) as err:  # inside the job, before Hydra logs it
        exit_with_error(err)


def main() -> None:
    run_cli(_hydra_main)


if __name__ == "__main__":
    main()
