"""Atomic file writes: a temporary sibling, fsync, then ``os.replace`` onto the final name.

A reader therefore sees either the old file or the complete new one, never a truncated file —
even if the writer is killed (SIGKILL) mid-write. The data caches have their own writers
(:mod:`steerable.data.qm9_cache`, :mod:`steerable.data.modelnet_io`, :mod:`steerable.data.nbody_io`);
this module serves everything else (checkpoints, plots, metrics) without importing those, and gives
them :func:`usual_permissions`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and ``path``
    is left untouched. Temporary names are ``.{name}.tmp-{pid}``, so no reader mistakes them.

    >>> with atomic_write("/tmp/example.txt", "w") as fh:
    ...     _ = fh.write("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def usual_permissions(fd: int) -> None:
    """Give the open file ``fd`` the permissions a plain ``open`` would: ``0o666 & ~umask``.

    ``tempfile.mkstemp`` creates its files ``0o600``; a data cache renamed from one would be unreadable
    to the other users of a shared data dir. (The umask can only be read by setting it: set it back.)
    """
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` into ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        torch.save(obj, handle)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes every checkpoint with :func:`atomic_torch_save`.

    Lightning's default writes the serialised bytes straight onto the final name, so a job killed
    during the write leaves a truncated ``last.ckpt`` that ``resume=auto`` would then trust.
    Pass it as ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)
