"""Callbacks that make a run survive being killed: reproducible data order, checkpoint on SIGTERM.

- :class:`ReproducibleTrainOrder` makes the training data order and every random draw a function of
  ``(seed, epoch, batch)`` / ``(seed, global_step)`` only, and makes the train loader resumable
  mid-epoch, so a run resumed from any checkpoint continues exactly as the uninterrupted run would.
- :class:`CheckpointOnSigterm` saves a checkpoint at the next batch boundary after SIGTERM (what
  SLURM sends on preemption/time-out) and exits with status 143; Lightning on its own only stops
  at the end of the epoch, which may be long after SLURM's grace period. Under submitit it does the
  same for the requeue signal (USR2) before handing it to submitit, which requeues the job.

Both are in ``conf/callbacks/default.yaml``; see DESIGN.md §4 (seeds). :class:`PlotsToLoggers` draws the
run's plots at the end of ``fit``. The plugin :class:`SyncFieldBatchNorm` extends Lightning's
``sync_batchnorm`` to the equivariant batch norms.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from steerable.fields import FieldBatchNorm
from steerable.seeding import mixed_seed, reseed_global

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
REQUEUE_SIGNAL = signal.SIGUSR2  # what submitit asks SLURM to send before the time limit / on preemption


class EpochSeededSampler(DistributedSampler):
    """Random permutation of ``range(n)`` that depends only on ``(seed, epoch)``; can skip batches.

    At the first index of every batch it also reseeds the global generators from
    ``(seed, epoch, batch)`` (and the rank, under DDP), so random augmentations drawn while loading
    (``num_workers=0``) are reproducible too.

    Under DDP (``num_replicas > 1``) every rank walks its own share of the same permutation: the
    permutation is padded to a multiple of ``num_replicas`` by repeating its first indices, as
    Lightning's training sampler does, and rank ``r`` takes positions ``r, r + num_replicas, …``. A
    ``DistributedSampler`` subclass, so Lightning keeps it instead of wrapping it in its own.

    Args:
        n: dataset length.
        batch_size: indices per batch (for the skip and the per-batch reseed).
        seed: run seed.
        num_replicas, rank: DDP world size and this process's rank (1 and 0 in one process).
    """

    def __init__(self, n: int, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        # DistributedSampler's attributes, set directly: its __init__ needs a dataset, which a sampler
        # of indices does not
        self.num_replicas, self.rank, self.shuffle, self.drop_last = num_replicas, rank, True, False
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.num_samples = -(-n // num_replicas)  # per rank
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self._skip: dict[str, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch's iteration."""
        self.epoch = epoch

    def skip_next(self, epoch: int, batches: int) -> None:
        """The next iteration, if it is for ``epoch``, starts after ``batches`` batches (of this rank)."""
        self._skip = {"epoch": epoch, "batches": batches}

    def __len__(self) -> int:
        return self.num_samples

    def _batch_seed(self, batch: int) -> int:
        if self.num_replicas == 1:
            return mixed_seed(self.seed, self.epoch, batch, "data")
        return mixed_seed(self.seed, self.epoch, batch, self.rank, "data")

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, None
        start = skip["batches"] * self.batch_size if skip and skip["epoch"] == self.epoch else 0
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(
            mixed_seed(self.seed, self.epoch, "order"))).tolist()
        if self.n and self.total_size > self.n:
            order += (order * (self.total_size // self.n + 1))[: self.total_size - self.n]
        mine = order[self.rank : self.total_size : self.num_replicas]
        for position in range(start, len(mine)):
            if position % self.batch_size == 0:
                reseed_global(self._batch_seed(position // self.batch_size))
            yield mine[position]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` with Lightning's ``state_dict``/``load_state_dict`` protocol.

    The state is ``{"epoch", "batches"}`` — how far training got, read from the trainer (not from
    the loader, whose workers may have fetched ahead); loading it makes the sampler skip those
    batches on its next pass over that epoch.
    """

    progress: Callable[[], dict[str, int]]

    def state_dict(self) -> dict[str, int]:
        return self.progress()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.skip_next(state["epoch"], state["batches"])


def resumable_copy(loader: DataLoader, seed: int, progress: Callable[[], dict[str, int]],
                   num_replicas: int = 1, rank: int = 0) -> ResumableLoader:
    """The same loader (dataset, collate, workers) with an :class:`EpochSeededSampler` (this rank's share)."""
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    copy = ResumableLoader(
        loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last,
        sampler=EpochSeededSampler(len(loader.dataset), loader.batch_size, seed, num_replicas, rank),
        collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers, **extra)
    copy.progress = progress
    return copy


class ReproducibleTrainOrder(pl.Callback):
    """Data order and randomness as pure functions of the seed and the training position.

    - The shuffled train loader of the datamodule is replaced by a :class:`ResumableLoader`: epoch
      ``e`` visits a permutation seeded by ``(seed, e)``; resuming mid-epoch skips the batches the
      checkpoint already trained on.
    - Before every training step the global generators are reseeded from ``(seed, global_step)``
      (dropout, random rotations inside the model…).

    So a run killed at any step and resumed from its last checkpoint ends with the same weights and
    metrics as an uninterrupted run (on CPU; GPU kernels may be non-deterministic), under DDP too:
    every rank walks its share of the epoch's permutation, resumes after the batches it had trained
    on, and reseeds with its rank mixed in. Loaders that do not shuffle and loaders passed to ``fit``
    directly are left alone. Augmentations drawn inside DataLoader *worker processes* are not covered.

    Args:
        seed: the run seed (``${seed}``).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        self._trainer = trainer
        replicas, rank = trainer.world_size, trainer.global_rank
        # a datamodule reused by another trainer is re-wrapped around its own method, not our wrapper
        original = getattr(datamodule.train_dataloader, "_original", datamodule.train_dataloader)

        def train_dataloader() -> DataLoader:
            loader = original()
            if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
                return resumable_copy(loader, self.seed, self.progress, replicas, rank)
            log.warning("ReproducibleTrainOrder: train loader %r does not shuffle; left as is", loader)
            return loader

        train_dataloader._original = original
        datamodule.train_dataloader = train_dataloader

    def progress(self) -> dict[str, int]:
        """Current epoch and batches trained on in it (what a checkpoint written now has seen)."""
        trainer = self._trainer
        return {"epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = (self.seed, trainer.global_step) if trainer.world_size == 1 else (
            self.seed, trainer.global_step, trainer.global_rank)
        reseed_global(mixed_seed(*step, "step"))


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM, save ``path`` at the end of the current training batch and exit with status 143.

    Lightning records SIGTERM (``trainer.received_sigterm``) but, in a single process, only stops
    after the epoch. Validation interrupted by SIGTERM is not saved (the last periodic checkpoint
    stands).

    The requeue signal (USR2) under submitit (``launcher=slurm``): submitit's handler requeues the job
    and exits at once, wherever training is, and Lightning installs no handler of its own beside it.
    So, while fitting, this callback takes the signal over: it saves ``path`` at the end of the
    current training batch and then calls submitit's handler, which requeues; the requeued job
    resumes from ``path`` with ``resume=auto``. A signal during validation is handed over at the next
    validation batch (the last periodic checkpoint stands), outside fit at once. Without a handler
    already on USR2 (no submitit) nothing changes: Lightning's SLURM plugin handles it.

    Under DDP the ranks agree before acting (saving is collective, and a signal may reach them at
    different batches): one small all-reduce every ``ddp_check_every`` training batches, which also
    waits for the device, so it is not done every batch.

    Args:
        path: checkpoint file to write (``${paths.output_dir}/checkpoints/last.ckpt``).
        ddp_check_every: under DDP, look for a signal every this many training batches.
    """

    def __init__(self, path: str, ddp_check_every: int = 16) -> None:
        if ddp_check_every < 1:
            raise ValueError(f"ddp_check_every must be >= 1, got {ddp_check_every}")
        self.path = Path(path)
        self.ddp_check_every = ddp_check_every
        self._requeue_handler: Callable[[int, Any], Any] | None = None  # submitit's, found at fit start
        self._pending_requeue: tuple[int, Any] | None = None
        self._fitting = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitting = True
        current = signal.getsignal(REQUEUE_SIGNAL)
        if callable(current) and current != self._on_requeue_signal:
            self._requeue_handler = current
            signal.signal(REQUEUE_SIGNAL, self._on_requeue_signal)

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        if self._fitting:
            self._pending_requeue = (signum, frame)  # acted on at the next batch boundary
        elif self._requeue_handler is not None:
            self._requeue_handler(signum, frame)

    def _hand_over_requeue(self) -> None:
        signum, frame = self._pending_requeue or (REQUEUE_SIGNAL, None)
        self._pending_requeue, self._fitting = None, False
        if self._requeue_handler is not None:
            self._requeue_handler(signum, frame)  # submitit: rank 0 requeues the job and exits

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        requeue = self._pending_requeue is not None
        stop = trainer.received_sigterm or requeue
        if trainer.world_size > 1:  # the ranks act together, at batches all of them check
            if (batch_idx + 1) % self.ddp_check_every:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            requeue = stop and trainer.strategy.reduce_boolean_decision(requeue, all=False)
        if not stop:
            return
        # the batch is done, but its progress counter is bumped after this hook: mirror what
        # ModelCheckpoint's own on_train_batch_end saves, which Lightning resumes correctly
        trainer.save_checkpoint(self.path)
        reason = "requeue signal" if requeue else "SIGTERM"
        log.warning("%s: saved %s at global step %d; exiting", reason, self.path, trainer.global_step)
        if requeue:
            self._hand_over_requeue()
        raise SIGTERMException(SIGTERM_EXIT_CODE)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._pending_requeue is not None:
            self._hand_over_requeue()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitting = False
        if self._pending_requeue is not None:
            self._hand_over_requeue()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._fitting = False  # later signals go straight to submitit


class PlotsToLoggers(pl.Callback):
    """At the end of ``fit``, draw the run's plots (:mod:`steerable.run_plots`) and send them to W&B.

    The PNGs land in ``<run_dir>/plots/`` as with ``python -m steerable.plot``; with a W&B logger
    they are also logged as images under ``plots/``. Learning curves need the CSV logger (the default
    ``logger=wandb`` includes it); kernel plots use the best checkpoint. Off unless ``enabled``.

    Args:
        run_dir: the run dir (``${paths.output_dir}``).
        enabled: draw at all (``callbacks.plots.enabled=true``).
    """

    def __init__(self, run_dir: str, enabled: bool = False) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        from pytorch_lightning.loggers import WandbLogger

        from steerable.run_plots import plot_run

        for logger in trainer.loggers:
            logger.save()  # flush the CSV rows of the last epoch
        try:
            paths = plot_run(self.run_dir)  # kernel of the best checkpoint, if the model has one
        except (FileNotFoundError, ValueError) as err:
            log.warning("PlotsToLoggers: no plots (%s)", err)
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="plots", images=[str(p) for p in paths], caption=[p.stem for p in paths])


class SyncFieldBatchNorm(TorchSyncBatchNorm):
    """``Trainer(sync_batchnorm=True)`` for :class:`~steerable.fields.FieldBatchNorm` too.

    Lightning's own layer sync converts torch's batch norms only; this plugin (``steerable.train`` passes it
    when ``trainer.sync_batchnorm`` is true) also sets ``sync`` on every FieldBatchNorm while fitting, so
    under DDP they normalise with the statistics of all ranks' batches together and every rank keeps the
    same running statistics (those a single process would get on the concatenated batch).
    """

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        _set_sync(model, True)
        return super().apply(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        _set_sync(model, False)
        return super().revert(model)


def _set_sync(model: torch.nn.Module, sync: bool) -> None:
    for module in model.modules():
        if isinstance(module, FieldBatchNorm):
            module.sync = sync
