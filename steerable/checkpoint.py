"""Config → objects, and checkpoint → (task, config).

Every checkpoint written by :mod:`steerable.train` carries the resolved run config (secrets
redacted) under ``checkpoint["steerable_config"]``, so :func:`load_checkpoint` rebuilds the exact
model and task from the recipe and loads the weights — no pickled modules, no guessing.

This is the one library module that uses ``hydra.utils.instantiate`` (it is the config → objects
boundary shared by the three entrypoints ``train``, ``evaluate`` and ``predict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from steerable.config_checks import ConfigError

CONFIG_KEY = "steerable_config"


class StoreConfig(pl.Callback):
    """Writes the resolved run config into every checkpoint (``checkpoint["steerable_config"]``).

    Args:
        config: the resolved run config as a plain dict, secrets already redacted.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with plain containers passed to the target.

    A ``ValueError``/``KeyError`` raised by the target's constructor (a bad option for this group,
    an incompatible field type…), Lightning's ``MisconfigurationException`` (a bad Trainer option), or
    a ``TypeError`` for an unexpected keyword argument, becomes a
    :class:`ConfigError` naming the config ``key``.
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, KeyError, MisconfigurationException)) or (
                isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause)):
            raise ConfigError(f"{key}: {cause}") from err
        raise


def build_model_and_task(cfg: DictConfig) -> pl.LightningModule:
    """The task LightningModule wrapping a freshly built ``cfg.model``."""
    return build(cfg.task, "task", model=build(cfg.model, "model"))


def connect_loader_transform(datamodule: pl.LightningDataModule, task: pl.LightningModule) -> None:
    """Hand the model's per-item transform (``model.loader_transform``, e.g. the ModelNet point
    hierarchy) to the data module, whose loader workers then apply it; a no-op when either side
    has none (the model then does that work itself)."""
    transform = getattr(getattr(task, "model", None), "loader_transform", None)
    if transform is not None and hasattr(datamodule, "set_item_transform"):
        datamodule.set_item_transform(transform)


def load_checkpoint(ckpt_path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[pl.LightningModule, DictConfig]:
    """Rebuild the task (with its model) from a checkpoint and load the weights.

    The file is read with ``torch.load(weights_only=True)``: no pickled code runs.

    Returns:
        ``(task, cfg)``: the task in eval mode and the run config it was trained with.

    Raises:
        ConfigError: if the file is missing, unreadable (truncated, corrupt, not a checkpoint) or was
            not written by ``steerable.train``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises anything from EOFError to UnpicklingError on a bad file
        raise ConfigError(f"{path} is not a readable checkpoint: {_load_error_reason(err)}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        what = "no 'state_dict'" if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}"
        raise ConfigError(f"{path} is not a readable checkpoint: it holds {what}, not a Lightning checkpoint")
    if CONFIG_KEY not in checkpoint:
        raise ConfigError(f"{path} holds no '{CONFIG_KEY}' (was it written by steerable.train?)")
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    task = build_model_and_task(cfg)
    task.on_load_checkpoint(checkpoint)
    if {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()} == {torch.float64}:
        task = task.double()  # trained at precision=64-true: keep every digit of the weights
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval(), cfg


def _load_error_reason(err: Exception) -> str:
    """Why ``torch.load`` failed, in one short line (its weights-only refusal spans several paragraphs)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = "not a weights-only file: " + " ".join(detail.split()).split(". ")[0]
    text = " ".join(text.split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
