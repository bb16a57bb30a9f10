"""Training throughput of a run (``callbacks=timed``): samples per second of the training loop.

Equal-budget tables (``experiments/peers/``) compare models by what they reach in the same wall
clock; this callback records how much data each one saw per second to get there.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl


class TrainThroughput(pl.Callback):
    """Logs, at the end of every training epoch, totals since the start of fit:

    - ``train/samples_per_s``: training samples (graphs: molecules, N-body systems, clouds) divided
      by the seconds spent in the training loop (from each epoch's start to its last batch: data
      loading, forward, backward, optimiser; validation and checkpointing excluded),
    - ``train/epochs_done``: training epochs run (the last one may have been cut by ``max_time``),
    - ``train/loop_s``: those training-loop seconds.

    A batch's sample count is its ``num_graphs`` (PyG), else the length of its first dimension.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.epochs = 0
        self._epoch_start: float | None = None
        self._last_batch_end: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()
        self.samples += batch_samples(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_start is None:
            return
        self.seconds += self._last_batch_end - self._epoch_start
        self.epochs += 1
        self._epoch_start = None
        pl_module.log_dict({"train/samples_per_s": self.samples / max(self.seconds, 1e-9),
                            "train/epochs_done": float(self.epochs),
                            "train/loop_s": self.seconds}, on_step=False, on_epoch=True)

    def state_dict(self) -> dict:
        return {"samples": self.samples, "seconds": self.seconds, "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.samples, self.seconds, self.epochs = (state_dict["samples"], state_dict["seconds"],
                                                   state_dict["epochs"])


def batch_samples(batch) -> int:
    """Samples in a batch: ``num_graphs`` of a PyG batch, else the first dimension of its first tensor."""
    num_graphs = getattr(batch, "num_graphs", None)
    if num_graphs is not None:
        return int(num_graphs)
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return int(first.shape[0])
