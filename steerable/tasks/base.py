"""Shared LightningModule plumbing: optimiser/scheduler from config, hyper-parameters, forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Interval = Literal["epoch", "step"]
Mode = Literal["min", "max"]


class BaseTask(pl.LightningModule):
    """Wraps a model ``forward(batch) -> Tensor`` with losses, metrics and optimisation.

    Tasks never build models: the model arrives ready-made; its recipe lives in the run config
    stored in every checkpoint (see :mod:`steerable.checkpoint`).

    Args:
        model: a ``torch.nn.Module`` mapping a PyG ``Batch`` to a tensor.
        optimizer: partial optimiser, called as ``optimizer(params=...)`` (config ``_partial_: true``).
        scheduler: partial LR scheduler, called as ``scheduler(optimizer=...)``, or ``None``.
        scheduler_interval: ``epoch`` or ``step``.
        monitor: metric that selects the best checkpoint (also fed to ``ReduceLROnPlateau``).
        monitor_mode: ``min`` or ``max``.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory,
                 scheduler: SchedulerFactory | None = None, scheduler_interval: Interval = "epoch",
                 monitor: str = "val/loss",
                 monitor_mode: Mode = "min") -> None:
        super().__init__()
        # Factories stay out of the hyper-parameters so checkpoints load with weights_only=True;
        # the run config stored in each checkpoint holds their recipe.
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"], logger=False)
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def forward(self, batch) -> torch.Tensor:
        """Model output for a PyG ``Batch`` (subclasses map it to reporting units)."""
        return self.model(batch)

    def _log_stage(self, stage: str, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=batch_size,
                      on_step=False, on_epoch=True, prog_bar=stage != "train", sync_dist=stage != "train")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": scheduler, "interval": self.hparams.scheduler_interval,
            "monitor": self.hparams.monitor,
        }}

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Loss of one batch; logs the stage's metrics. Implemented by each task."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch)
