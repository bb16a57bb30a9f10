"""Seeds derived from run state: every random draw of a run is a function of ``(seed, …)`` only.

Used by the training callbacks (data order, per-step reseeding, :mod:`steerable.callbacks`) and by
the classification task (test-time rotations per sample, :mod:`steerable.tasks.classification`).
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def mixed_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and Python versions)."""
    return zlib.crc32(repr(parts).encode()) | (zlib.adler32(repr(parts[::-1]).encode()) << 31)


def reseed_global(seed: int) -> None:
    """Seed the global torch, NumPy and ``random`` generators (what models and datasets draw from)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
