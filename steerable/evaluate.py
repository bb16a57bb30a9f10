"""Re-evaluate a checkpoint on its test set: ``python -m steerable.evaluate ckpt_path=…``.

Everything (model, task, datamodule) is rebuilt from the run config stored in the checkpoint;
``+dataset.<key>=…`` overrides single dataset settings (batch size, data dir, limit). Settings the
model was trained for (what it predicts or sees: QM9's targets, atomization, graph and radius, any
key the model config shares with the dataset config, the dataset class) cannot be overridden.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.checkpoint import build, connect_loader_transform, load_checkpoint
from steerable.config_checks import ConfigError
from steerable.train import CONF_DIR, exit_with_error, run_cli, write_json

#: dataset keys that fix what the model predicts or sees, per datamodule (besides the shared ones)
MODEL_DATA_KEYS: dict[str, tuple[str, ...]] = {
    "steerable.data.qm9.QM9DataModule": ("targets", "atomization", "graph", "radius"),
}


def fixed_dataset_keys(dataset: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """Keys of the stored ``dataset`` config the model was trained for: ``_target_``, those listed in
    :data:`MODEL_DATA_KEYS`, and those the ``model`` config holds with the same value (``targets``,
    ``graph``, ``use_normals`` via interpolation). ``radius`` only counts for ``graph: radius``."""
    keys = {"_target_", *MODEL_DATA_KEYS.get(str(dataset.get("_target_")), ())}
    keys |= {k for k in dataset if k in model and model[k] == dataset[k]}
    if dataset.get("graph") in ("bonds", "full"):  # no cutoff: the radius is not used
        keys.discard("radius")
    return sorted(k for k in keys if k in dataset)


def check_dataset_overrides(stored: Mapping[str, Any], merged: Mapping[str, Any],
                            model: Mapping[str, Any]) -> None:
    """Refuse overrides of :func:`fixed_dataset_keys` that change their value.

    Raises:
        ConfigError: naming each changed key with the value the checkpoint was trained with.
    """
    changed = [f"dataset.{k}={merged.get(k)!r} differs from the checkpoint's {stored[k]!r}"
               for k in fixed_dataset_keys(stored, model) if merged.get(k) != stored[k]]
    if changed:
        raise ConfigError(f"{'; '.join(changed)}: the model predicts and sees what it was trained for; "
                          "override only settings such as batch_size, num_workers, data_dir or limit")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path``; writes and returns the test metrics."""
    task, run_cfg = load_checkpoint(cfg.ckpt_path)
    dataset_cfg = OmegaConf.merge(run_cfg.dataset, cfg.dataset)
    check_dataset_overrides(OmegaConf.to_container(run_cfg.dataset, resolve=True),
                            OmegaConf.to_container(dataset_cfg, resolve=True),
                            OmegaConf.to_container(run_cfg.model, resolve=True))
    datamodule = build(dataset_cfg, "dataset")
    connect_loader_transform(datamodule, task)
    precision = cfg.get("precision") or OmegaConf.select(run_cfg, "trainer.precision", default="32-true")
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, precision=precision, logger=False,
                         enable_checkpointing=False, enable_model_summary=False)
    metrics = {k: float(v) for k, v in trainer.test(task, datamodule=datamodule)[0].items()}
    output = Path(cfg.output) if cfg.output else Path(f"{cfg.ckpt_path}.test_metrics.json")
    write_json(output, metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (ConfigError, OmegaConfBaseException) as err:
        exit_with_error(err)


def main() -> None:
    run_cli(_hydra_main)


if __name__ == "__main__":
    main()
