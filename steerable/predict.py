"""Predict QM9 properties of new molecules: ``python -m steerable.predict ckpt_path=… input=…``.

``input`` is an ``.xyz`` file, a directory of them, or a text file with one SMILES per line; the
QM9 data module turns it into a batch (``steerable.data.qm9.molecules_to_batch``) exactly as in
training. Predictions are printed in reporting units, one molecule per line, with 7 significant
digits and at least 3 decimals (total energies of ~1e7 meV to 0.001 meV).
"""

from __future__ import annotations

import math

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.checkpoint import load_checkpoint
from steerable.config_checks import ConfigError
from steerable.tasks import RegressionTask
from steerable.train import CONF_DIR, exit_with_error, run_cli

QM9_DATASET = "steerable.data.qm9.QM9DataModule"


def predict(cfg: DictConfig) -> list[tuple[str, dict[str, float]]]:
    """Predictions ``[(molecule name, {"homo_meV": value, ...}), ...]`` for ``cfg.input``."""
    task, run_cfg = load_checkpoint(cfg.ckpt_path)
    dataset = OmegaConf.select(run_cfg, "dataset._target_", default=None)
    if not isinstance(task, RegressionTask) or dataset != QM9_DATASET:
        raise ConfigError(f"predict needs a checkpoint trained on QM9 ({QM9_DATASET}); {cfg.ckpt_path} "
                          f"was trained on {dataset} with {type(task).__name__}")
    try:
        from steerable.data.qm9 import molecules_to_batch
    except ImportError as err:
        raise ConfigError(f"steerable.data.qm9.molecules_to_batch is not available ({err})") from None
    dataset_cfg = OmegaConf.to_container(run_cfg.dataset, resolve=True)
    try:
        names, batch = molecules_to_batch(str(cfg.input), dataset_cfg)
    except ValueError as err:  # malformed input: the message names the file and line
        raise ConfigError(str(err)) from None
    with torch.no_grad():
        values = task(batch)  # (B, T) in reporting units
    keys = [f"{n}_{u}" for n, u in zip(task.target_names, task.target_units, strict=True)]
    rows = zip(names, values.tolist(), strict=True)
    return [(name, dict(zip(keys, row, strict=True))) for name, row in rows]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        rows = predict(cfg)
    except (ConfigError, OmegaConfBaseException) as err:
        exit_with_error(err)
    for name, values in rows:
        print(format_prediction(name, values))


def format_value(value: float) -> str:
    """7 significant digits, and never fewer than 3 decimals: a total energy of ~1e7 meV keeps its
    0.001 meV (``-11012345.679``), a dipole ``2.345678`` its 7 digits."""
    magnitude = math.floor(math.log10(abs(value))) + 1 if value and math.isfinite(value) else 1
    return f"{value:.{max(7, magnitude + 3)}g}"


def format_prediction(name: str, values: dict[str, float]) -> str:
    """One output line: ``name key=value key=value …``."""
    return " ".join([name, *(f"{key}={format_value(value)}" for key, value in values.items())])


def main() -> None:
    run_cli(_hydra_main)


if __name__ == "__main__":
    main()
