"""Training runs of the GPU check: ``python -m steerable.gpu_check.train [Hydra overrides]``.

The same as ``python -m steerable.train``, except that importing ``wandb`` raises ``ImportError``:
a run with ``logger=csv`` must not need it (the GPU machine has none). :class:`PeakMemory` adds the
run's peak memory to its metrics.
"""

from __future__ import annotations

import resource
import sys

import pytorch_lightning as pl
import torch


class PeakMemory(pl.Callback):
    """Logs the peak memory since the start of fit at the end of every training epoch.

    ``train/peak_memory_mb``: ``torch.cuda.max_memory_allocated`` of the module's device on CUDA
    (tensors only), else the process's peak resident set size (``ru_maxrss``, everything).
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pl_module.log("train/peak_memory_mb", float(peak), on_step=False, on_epoch=True)


def main() -> None:
    sys.modules["wandb"] = None  # any `import wandb` now fails: logger=csv runs must not need it
    from steerable.train import main as train_main

    train_main()


if __name__ == "__main__":
    main()
