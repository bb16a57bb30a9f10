"""Shared LightningModule plumbing: optimiser/scheduler from config, hyper-parameters, forward."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Interval = Literal["epoch", "step"]
Mode = Literal["min", "max"]
# Lightning warns at every fit/test that the module's hook (BaseTask.on_after_batch_transfer) is used
# although a datamodule was passed: intended (our datamodules do not define the hook)
warnings.filterwarnings("ignore",
                        message="You have overridden `on_after_batch_transfer` in `LightningModule` but")


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
        self.epoch_means = nn.ModuleDict()  # validation/test metrics, created as they are first logged

    def forward(self, batch) -> torch.Tensor:
        """Model output for a PyG ``Batch`` (subclasses map it to reporting units)."""
        return self.model(batch)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Cast a PyG batch's floating-point tensors to float64 when the module is (``precision=64-true``).

        Lightning's double-precision plugin casts the module and plain tensors/collections, not the
        tensors inside a PyG ``Data``/``Batch``. Other precisions leave the batch as it is (e.g. QM9
        keeps float64 targets under float32 training).
        """
        if self.dtype == torch.float64 and hasattr(batch, "apply"):
            batch = batch.apply(lambda t: t.double() if t.is_floating_point() else t)
        return batch

    def _log_stage(self, stage: str, metrics: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log ``{stage}/{name}`` epoch means, each batch weighted by ``batch_size``.

        Validation and test means are exact over all ranks under DDP: torchmetrics sums the weighted
        values and the weights across ranks (Lightning's ``sync_dist`` averages the per-rank batch
        counts as integers, which truncates when ranks see different numbers of samples).
        Training means are per rank, as Lightning logs them.
        """
        if stage == "train":
            self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=batch_size,
                          on_step=False, on_epoch=True)
            return
        for name, value in metrics.items():
            key = f"{stage}/{name}"
            slot = key.replace("/", "__")
            if slot not in self.epoch_means:
                self.epoch_means[slot] = MeanMetric().to(self.device)
            self.epoch_means[slot].update(value.detach(), weight=batch_size)
            self.log(key, self.epoch_means[slot], on_step=False, on_epoch=True, prog_bar=True,
                     metric_attribute=f"epoch_means.{slot}")

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
