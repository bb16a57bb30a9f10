"""In-process training of the three tasks on synthetic data with the baseline model."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.runs import FAST
from torch_geometric.data import Batch

from steerable.checkpoint import CONFIG_KEY, load_checkpoint
from steerable.data.synthetic import SyntheticPointCloudDataModule
from steerable.tasks import ClassificationTask
from steerable.train import train

SMOKE = ["experiment=smoke", *FAST, "dataset.num_samples=40", "trainer.max_epochs=2"]


def test_regression_trains_tests_and_writes_metrics(compose_cfg, tmp_path):
    cfg = compose_cfg(SMOKE)
    metrics = train(cfg)
    for stage in ("train", "val", "test"):
        expected = {f"{stage}/{name}" for name in ("loss", "mae", "gyration_mae_Ang", "extent_mae_Ang")}
        assert expected <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_checkpoint_rebuilds_task_with_identical_predictions(compose_cfg, tmp_path):
    cfg = compose_cfg(SMOKE)
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=True)[CONFIG_KEY]
    assert stored["model"]["_target_"] == "steerable.models.baseline.PointNetBaseline"
    task, run_cfg = load_checkpoint(ckpt)
    assert run_cfg.seed == cfg.seed
    assert task.target_names == ["gyration", "extent"] and task.target_units == ["Ang", "Ang"]
    datamodule = SyntheticPointCloudDataModule(num_samples=40)
    datamodule.setup()
    batch = Batch.from_data_list(datamodule.splits["test"])
    again, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        pred = task(batch)
        assert pred.shape == batch.y.shape
        torch.testing.assert_close(pred, again(batch))
    torch.testing.assert_close(task.target_mean, datamodule.target_mean.double())
    assert pred.dtype == torch.float64  # de-standardised in the statistics' float64


def _evaluate(ckpt, tmp_path, **dataset) -> dict[str, float]:
    from omegaconf import OmegaConf

    from steerable.evaluate import evaluate

    return evaluate(OmegaConf.create({"ckpt_path": str(ckpt), "accelerator": "cpu", "dataset": dataset,
                                      "output": str(tmp_path / "evaluated.json")}))


def test_classification_with_test_time_rotation_averaging(compose_cfg, tmp_path):
    cfg = compose_cfg(SMOKE + ["task=classification", "dataset.kind=classification", "model.out_dim=3",
                               "task.tta_samples=3", "task.label_smoothing=0.1"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "val/acc" in metrics
    assert metrics["val/acc_best"] >= metrics["val/acc"]  # the tested checkpoint is the best one
    # the rotations are seeded per test epoch: re-testing the checkpoint reproduces the accuracy
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    torch.manual_seed(123)  # whatever the global RNG holds
    assert _evaluate(best, tmp_path)["test/acc"] == metrics["test/acc"]


def test_tta_probabilities_are_averaged_over_rotations():
    class Norms(torch.nn.Module):  # logits from the first point's coordinates: not rotation-invariant
        def forward(self, batch):
            return batch.pos[batch.ptr[:-1]]

    task = ClassificationTask(Norms(), optimizer=torch.optim.SGD, tta_samples=4, tta_rotation="so3")
    datamodule = SyntheticPointCloudDataModule(kind="classification", num_samples=20)
    datamodule.setup()
    batch = Batch.from_data_list(datamodule.splits["train"][:4])
    task.on_test_epoch_start()
    probs = task._probabilities(batch)
    assert probs.shape == (4, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    assert not torch.allclose(probs, Norms()(batch).softmax(-1))
    # every test epoch draws the same rotations, whatever the global RNG did in between
    torch.rand(7)
    task.on_test_epoch_start()
    torch.testing.assert_close(task._probabilities(batch), probs, rtol=0, atol=0)
    other = ClassificationTask(Norms(), optimizer=torch.optim.SGD, tta_samples=4, tta_seed=1)
    other.on_test_epoch_start()
    assert not torch.allclose(other._probabilities(batch), probs)


@pytest.mark.parametrize("with_ids", [True, False])
def test_tta_rotations_do_not_depend_on_batching(with_ids):
    """A graph's test-time rotations follow its ``sample_id`` (without one: its place in the epoch),
    so batch sizes (``evaluate +dataset.batch_size=…``) and DDP shards see the same ones."""
    task = ClassificationTask(torch.nn.Identity(), optimizer=torch.optim.SGD, tta_samples=3,
                              tta_rotation="o3")
    datamodule = SyntheticPointCloudDataModule(kind="classification", num_samples=20)
    datamodule.setup()
    items = [d.clone() for d in datamodule.splits["train"][:6]]
    if not with_ids:
        for item in items:
            del item.sample_id

    def epoch(sizes):
        task.on_test_epoch_start()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        batches = [Batch.from_data_list(items[a:a + n]) for a, n in zip(starts, sizes)]
        return torch.cat([task._tta_rotations(batch) for batch in batches], dim=1)

    whole = epoch([6])
    assert whole.shape == (3, 6, 3, 3)
    torch.testing.assert_close(epoch([2, 1, 3]), whole, rtol=0, atol=0)
    assert (torch.linalg.det(whole.double()) < 0).any()  # o3: reflections too
    if with_ids:  # graphs 3..5 alone, in another order, keep their own rotations
        task.on_test_epoch_start()
        alone = task._tta_rotations(Batch.from_data_list([items[5], items[3], items[4]]))
        torch.testing.assert_close(alone, whole[:, [5, 3, 4]], rtol=0, atol=0)


def test_trajectory_task(compose_cfg, tmp_path):
    model = ["model.out_dim=3", "model.readout=node", "+model.use_velocity=true",
             "+model.predict_positions=true"]
    sizes = ["dataset.min_points=2", "dataset.max_points=30"]  # systems of different sizes
    cfg = compose_cfg(SMOKE + ["task=trajectory", "dataset.kind=trajectory", *model, *sizes])
    metrics = train(cfg)
    assert metrics["test/mse"] >= 0 and "val/mse" in metrics
    # per-particle MSE: the same whatever the batch size
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    one, many = (_evaluate(best, tmp_path, batch_size=size)["test/mse"] for size in (1, 7))
    assert one == pytest.approx(many, rel=1e-5)


def test_early_stopping_and_scheduler_step_interval(compose_cfg):
    cfg = compose_cfg(SMOKE + ["callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                               "task.scheduler_interval=step", "callbacks.progress_bar=null"])
    assert "test/mae" in train(cfg)


def test_evaluate_uses_the_precision_the_run_trained_with(compose_cfg, tmp_path):
    metrics = train(compose_cfg(SMOKE + ["trainer.precision=bf16-mixed"]))
    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert _evaluate(best, tmp_path)["test/mae"] == pytest.approx(metrics["test/mae"], rel=1e-12, abs=0)


def test_predict_refuses_a_checkpoint_not_trained_on_qm9(compose_cfg, tmp_path):
    from omegaconf import OmegaConf

    from steerable.config_checks import ConfigError
    from steerable.predict import predict

    train(compose_cfg(SMOKE))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="needs a checkpoint trained on QM9.*SyntheticPointCloudDataModule"):
        predict(OmegaConf.create({"ckpt_path": str(ckpt), "input": "CCO"}))


def test_credentials_in_the_saved_hydra_config_are_redacted(compose_cfg, tmp_path):
    """Hydra writes `.hydra/config.yaml` before training starts: a key from a config file is redacted."""
    saved = tmp_path / ".hydra" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text("seed: 0\nlogger:\n  wandb:\n    api_key: SUPERSECRETKEY1234567890\n    project: x\n")
    train(compose_cfg(SMOKE + ["trainer.max_epochs=1"]))
    text = saved.read_text()
    assert "SUPERSECRETKEY" not in text and "api_key: <redacted>" in text and "project: x" in text
