"""Shared LightningModule plumbing: optimiser/scheduler from config, hyper-parameters, forward."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import Metric

from steerable.models.blocks import check_batch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Interval = Literal["epoch", "step"]
Mode = Literal["min", "max"]
# Lightning warns at every fit/test that the module's hooks (BaseTask.on_{before,after}_batch_transfer)
# are used although a datamodule was passed: intended (our datamodules do not define them)
warnings.filterwarnings(
    "ignore", message="You have overridden `on_(before|after)_batch_transfer` in `LightningModule` but")


class EpochMean(Metric):
    """Weighted mean of the values of an epoch; the sums add up exactly across DDP ranks.

    Computes what torchmetrics' ``MeanMetric()`` does (NaN values left out, with a warning), but
    ``update`` leaves them out on the device: ``MeanMetric`` reads ``isnan(value).any()`` on the host,
    which stalls every step on an accelerator. The warning comes with :meth:`compute`, once an epoch.

    Args:
        device: where the sums live (the module's device).
    """

    full_state_update = False

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        for name in ("total", "weight", "nans"):
            default = torch.zeros((), dtype=torch.get_default_dtype(), device=device)
            self.add_state(name, default=default, dist_reduce_fx="sum")
        self.to(device)

    def update(self, value: torch.Tensor, weight: float) -> None:
        """Add ``value`` (any shape: each element counts) with weight ``weight``."""
        value = value.to(self.dtype)
        nan = torch.isnan(value)
        self.total += torch.where(nan, 0.0, value * weight).sum()
        self.weight += (~nan).to(self.dtype).sum() * weight
        self.nans += nan.sum()

    def compute(self) -> torch.Tensor:
        if self.nans > 0:
            rank_zero_warn(f"{int(self.nans)} NaN value(s) left out of an epoch mean")
        return self.total / self.weight


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

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Reject batches no model can use (:func:`~steerable.models.blocks.check_batch`) while they are
        still on the host, where the check costs nothing; on an accelerator the models skip it."""
        if getattr(batch, "pos", None) is not None:
            check_batch(batch)
        return batch

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

        Validation and test means are exact over all ranks under DDP: :class:`EpochMean` sums the weighted
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
                self.epoch_means[slot] = EpochMean(self.device)
            self.epoch_means[slot].update(value.detach(), weight=batch_size)
            self.log(key, self.epoch_means[slot], on_step=False, on_epoch=True, prog_bar=True,
                     metric_attribute=f"epoch_means.{slot}")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        if fused and self._clips_mixed_precision_gradients():
            # a fused optimiser unscales inside its step, so Lightning cannot clip before it: unfuse
            rank_zero_warn("trainer.precision is mixed and gradients are clipped: the optimiser runs unfused")
            optimizer = self.optimizer_factory(params=self.parameters(), fused=False)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": scheduler, "interval": self.hparams.scheduler_interval,
            "monitor": self.hparams.monitor,
        }}

    def _clips_mixed_precision_gradients(self) -> bool:
        """Whether the attached trainer clips gradients under mixed precision."""
        trainer = self._trainer
        return (trainer is not None and "mixed" in str(trainer.precision)
                and bool(trainer.gradient_clip_val))

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
