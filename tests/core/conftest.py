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
    """Per test: seeded torch RNG, escnn's warnings silenced (one intra-op thread: ``tests/conftest.py``)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
