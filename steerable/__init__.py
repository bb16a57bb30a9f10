"""Implicit steerable convolutions: G-steerable kernels produced by G-equivariant MLPs."""

import hashlib
import os

# PyTorch's CPU allocator backs tensors ≥ 2 MB with transparent huge pages when this is set (read when
# torch first allocates, so it must be set before: entry points import this package first). Without it,
# every tensor above glibc's 32 MB mmap threshold is page-faulted in again at every step; measured on
# 2 CPU threads: node-wise conv step at 131k edges 0.52 → 0.28 s, per-edge reference 7.2 → 4.7 s.
# Export THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from omegaconf import OmegaConf  # noqa: E402

# conf/paths/default.yaml: the directory the command was started in (absolute), for the default root
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


def path_id(path: str) -> str:
    """A short stable id of a directory: the first 12 hex digits of the SHA-1 of its absolute path
    (symlinks resolved).

    conf/logger/wandb.yaml: the W&B run id of a run dir, so a resume or requeue in the same dir
    continues the same W&B run (and each multirun job, in its own dir, gets its own).
    """
    absolute = os.path.realpath(os.path.expanduser(str(path)))
    return hashlib.sha1(absolute.encode()).hexdigest()[:12]


OmegaConf.register_new_resolver("path_id", path_id, replace=True)

__version__ = "0.1.0"
