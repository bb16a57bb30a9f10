"""Compose run configs with Hydra's compose API; run the CLI in a subprocess.

Tests add ``tests/helpers/conf`` to Hydra's search path (after ``conf/``): it provides the
``experiment=smoke`` recipe (synthetic data + non-equivariant baseline, seconds on one core).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
HELPER_CONF = REPO / "tests" / "helpers" / "conf"
SEARCHPATH = f"hydra.searchpath=[file://{HELPER_CONF}]"
# dataset caches are shared between tests (and with normal runs) unless this says otherwise
DATA_DIR = Path(os.environ.get("STEERABLE_TEST_DATA_DIR", REPO / "data"))
# quick, quiet, no W&B: what most in-process tests want on top of an experiment
FAST = ["logger=none", "callbacks.progress_bar=null", "trainer.enable_model_summary=false"]


def compose_run(overrides: list[str], run_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` and point every output path into ``run_dir``.

    Also registers the composed config with ``HydraConfig`` so ``${hydra:…}`` interpolations
    resolve as in a real run.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=[SEARCHPATH, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(REPO)
        cfg.hydra.job.num = 0
        if "paths" in cfg:
            cfg.paths.root_dir = str(run_dir)
            cfg.paths.data_dir = str(DATA_DIR)
            cfg.paths.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_cli(module: str, *args: str, cwd: Path, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` with the test search path, W&B offline, bounded in time."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "STEERABLE_ROOT": str(cwd), **(env or {})}
    full_env.pop("WANDB_API_KEY", None)
    full_env.pop("HYDRA_FULL_ERROR", None)
    flags = [a for a in args if a.startswith("-")]  # e.g. -m: Hydra wants flags before overrides
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run([sys.executable, "-m", module, *flags, SEARCHPATH, *overrides], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
