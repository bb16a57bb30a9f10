"""Re-evaluate a checkpoint on its test set: ``python -m steerable.evaluate ckpt_path=…``.

Everything (model, task, datamodule) is rebuilt from the run config stored in the checkpoint;
``+dataset.<key>=…`` overrides single dataset settings (batch size, data dir, limit).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from steerable.checkpoint import build, connect_loader_transform, load_checkpoint
from steerable.config_checks import ConfigError
from steerable.train import CONF_DIR, exit_with_error, run_cli, write_json


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path``; writes and returns the test metrics."""
    task, run_cfg = load_checkpoint(cfg.ckpt_path)
    dataset_cfg = OmegaConf.merge(run_cfg.dataset, cfg.dataset)
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
