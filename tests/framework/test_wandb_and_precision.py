"""One W&B run per run dir across resumes/requeues; ``trainer.precision=64-true`` with PyG batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.runs import FAST, compose_run

from steerable.train import train

SMOKE = ["experiment=smoke", *FAST, "dataset.num_samples=40", "trainer.max_epochs=1"]
WANDB = [("logger=wandb" if o == "logger=none" else o) for o in SMOKE]


def wandb_run_ids(run_dir: Path) -> list[str]:
    """Run ids of the offline W&B runs in ``run_dir`` (``wandb/offline-run-<time>-<id>``)."""
    return sorted(p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_resumed_run_continues_its_wandb_run(tmp_path, offline_wandb):
    """A resume/requeue in the same run dir logs to the same W&B run id; another dir gets its own."""
    run_dir, other_dir = tmp_path / "run", tmp_path / "other"
    train(compose_run(WANDB, run_dir))
    train(compose_run(WANDB, run_dir))  # resume=auto: picks up checkpoints/last.ckpt
    train(compose_run(WANDB, other_dir))
    first, again = wandb_run_ids(run_dir)  # two W&B sessions in the dir ...
    assert first == again  # ... of one W&B run
    other, = wandb_run_ids(other_dir)
    assert other != first


def test_wandb_run_id_follows_the_absolute_run_dir(tmp_path, monkeypatch):
    cfg = compose_run(WANDB, tmp_path / "a")
    same = compose_run(WANDB, tmp_path / "b" / ".." / "a")
    other = compose_run(WANDB, tmp_path / "b")
    assert cfg.logger.wandb.id == same.logger.wandb.id != other.logger.wandb.id
    assert cfg.logger.wandb.resume == "allow"
    monkeypatch.chdir(tmp_path)
    assert compose_run(WANDB, Path("a")).logger.wandb.id == cfg.logger.wandb.id  # relative run dir


class RecordDtypes(pl.Callback):
    """Test helper: dtypes of the batches and model outputs seen in each stage."""

    seen: dict[str, set[torch.dtype]] = {}

    def _record(self, stage: str, pl_module, batch) -> None:
        floats = {v.dtype for _, v in batch if torch.is_tensor(v) and v.is_floating_point()}
        with torch.no_grad():
            floats.add(pl_module.model(batch).dtype)
        RecordDtypes.seen.setdefault(stage, set()).update(floats)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert outputs["loss"].dtype == torch.float64
        self._record("train", pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record("test", pl_module, batch)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_double_precision_trains_and_tests(compose_cfg, tmp_path, task):
    """Lightning's 64-true casts the module, not the tensors inside a PyG ``Batch``: the task does."""
    extra = {"regression": [], "classification": ["task=classification", "dataset.kind=classification",
                                                  "model.out_dim=3", "task.tta_samples=2"]}[task]
    RecordDtypes.seen = {}
    record = [f"+callbacks.dtypes._target_={__name__}.RecordDtypes"]
    metrics = train(compose_cfg(SMOKE + extra + ["trainer.precision=64-true", *record]))
    assert ("test/mae" if task == "regression" else "test/acc") in metrics
    assert RecordDtypes.seen == {"train": {torch.float64}, "test": {torch.float64}}
    if task == "regression":  # evaluate runs at the training precision, through the same hook
        from omegaconf import OmegaConf

        from steerable.evaluate import evaluate

        best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
        evaluated = evaluate(OmegaConf.create({"ckpt_path": str(best), "accelerator": "cpu",
                                               "dataset": {}, "output": str(tmp_path / "evaluated.json")}))
        # load_checkpoint keeps float64 weights in float64: the same numbers to rounding
        assert evaluated["test/mae"] == pytest.approx(metrics["test/mae"], rel=1e-12)


def test_wandb_logger_prints_no_setting_warning(tmp_path, monkeypatch, capfd):
    """``logger=wandb`` starts its W&B run without wandb's "anonymous setting has no effect" warning."""
    from hydra.utils import instantiate

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    logger = instantiate(compose_run(WANDB, tmp_path).logger.wandb, offline=True)
    try:
        assert logger.experiment.id == compose_run(WANDB, tmp_path).logger.wandb.id
    finally:
        logger.experiment.finish()
    assert "anonymous" not in capfd.readouterr().err
