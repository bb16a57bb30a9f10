"""Fixtures shared by the core tests (groups, kernels, point and grid convolutions).

Parameter lists and helpers live in :mod:`steerable.testing`. The ``slow`` marker is registered in
``pyproject.toml``; run the fast subset with ``pytest -m "not slow"``.
"""

from __future__ import annotations

import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_problem_settings():
    """Per test: seeded torch RNG, one intra-op thread, escnn's warnings silenced.

    The tensors here are tiny; with several threads on a busy 2-core machine, OpenMP waits dominate
    (measured: an escnn point conv forward takes ~1 s with 2 threads under load vs 0.06 s with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.set_num_threads(threads)
