"""Shared fixtures (helpers live in ``tests/helpers``; see ``helpers/runs.py``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.runs import REPO, compose_run
from omegaconf import DictConfig


def _own_inductor_cache() -> None:
    """Compiled graphs (``compile_mlp``) are cached per checkout, Python and torch build.

    Inductor's default cache (``/tmp/torchinductor_<user>``) is shared by every checkout, venv and
    torch version on the machine; a graph cached by another process state must not decide whether
    a test passes. A user's explicit ``TORCHINDUCTOR_CACHE_DIR`` is kept. Subprocesses inherit it.
    """
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / f"inductor-{tag}"))


_own_inductor_cache()


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Every in-process test runs on one torch intra-op thread (subprocesses keep their own settings).

    The tensors are tiny; with several threads on a busy 2-core machine, OpenMP waits dominate
    (measured: an escnn point conv forward takes ~1 s with 2 threads under load vs 0.06 s with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_cfg(overrides)`` → a run config writing into this test's ``tmp_path``."""
    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        return compose_run(overrides, tmp_path, config_name)
    return _compose
