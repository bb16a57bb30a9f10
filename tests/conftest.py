"""Shared fixtures (helpers live in ``tests/helpers``; see ``helpers/runs.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.runs import compose_run
from omegaconf import DictConfig


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_cfg(overrides)`` → a run config writing into this test's ``tmp_path``."""
    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        return compose_run(overrides, tmp_path, config_name)
    return _compose
