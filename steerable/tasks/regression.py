"""Regression of per-graph targets (QM9 properties) on standardised targets."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from steerable.tasks.base import BaseTask, Interval, Mode, OptimizerFactory, SchedulerFactory


class RegressionTask(BaseTask):
    """L1/MSE loss on targets standardised with the training-set mean/std.

    The datamodule provides ``target_mean``/``target_std`` (tensors ``(T,)``), ``target_names`` and
    ``target_units``; the stats become buffers, so a checkpoint carries them. Logged per stage:
    ``{stage}/loss`` (standardised), ``{stage}/{name}_mae_{unit}`` (physical units) and
    ``{stage}/mae`` (mean of those MAEs).

    Args:
        model: ``forward(batch) -> (B, T)`` standardised predictions.
        loss: ``l1`` or ``mse``.
        (others as in :class:`~steerable.tasks.base.BaseTask`)

    Shapes:
        ``batch.y: (B, T)`` in reporting units; ``forward(batch): (B, T)`` in reporting units.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, loss: Literal["l1", "mse"] = "l1",
                 scheduler: SchedulerFactory | None = None, scheduler_interval: Interval = "epoch",
                 monitor: str = "val/mae", monitor_mode: Mode = "min") -> None:
        super().__init__(model, optimizer, scheduler, scheduler_interval, monitor, monitor_mode)
        self.register_buffer("target_mean", torch.zeros(0))
        self.register_buffer("target_std", torch.ones(0))
        self.target_names: list[str] = []
        self.target_units: list[str] = []

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if self.target_mean.numel() == 0:
            # float64: QM9 total energies are ~1e7 meV, where a float32 mean is off by up to 0.5 meV
            self.target_mean = torch.as_tensor(datamodule.target_mean, dtype=torch.float64).clone()
            self.target_std = torch.as_tensor(datamodule.target_std, dtype=torch.float64).clone()
        if not self.target_names:
            self.target_names = list(datamodule.target_names)
            self.target_units = list(datamodule.target_units)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["target_names"] = self.target_names
        checkpoint["target_units"] = self.target_units

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        self.target_mean = torch.empty_like(state["target_mean"])
        self.target_std = torch.empty_like(state["target_std"])
        self.target_names = list(checkpoint.get("target_names", []))
        self.target_units = list(checkpoint.get("target_units", []))

    def forward(self, batch) -> torch.Tensor:
        """Predictions in reporting units, ``(B, T)``, in the precision of the target statistics."""
        return self.model(batch).to(self.target_std.dtype) * self.target_std + self.target_mean

    def _step(self, batch, stage: str) -> torch.Tensor:
        pred = self.model(batch)
        # standardised in the targets' own precision (QM9 keeps float64: total energies are ~1e7 meV,
        # where float32 steps by 1 meV), then cast: the standardised values are O(1)
        target = ((batch.y - self.target_mean) / self.target_std).to(pred.dtype)
        loss = F.l1_loss(pred, target) if self.hparams.loss == "l1" else F.mse_loss(pred, target)
        mae = ((pred - target).abs() * self.target_std.to(pred.dtype)).mean(dim=0)  # (T,) physical units
        metrics = {"loss": loss, "mae": mae.mean()}
        for name, unit, value in zip(self.target_names, self.target_units, mae, strict=True):
            metrics[f"{name}_mae_{unit}"] = value
        self._log_stage(stage, metrics, batch_size=batch.y.shape[0])
        return loss
