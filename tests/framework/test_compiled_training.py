"""``model.conv.compile_mlp=true`` through the whole stack: Hydra config → Lightning fit/val/test →
checkpoint → restored task with the same predictions (compiled graphs in training and eval mode)."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import FAST
from torch_geometric.data import Batch

from steerable.checkpoint import load_checkpoint
from steerable.data.synthetic import SyntheticPointCloudDataModule
from steerable.kernels.edge_mlp import cpu_compiler
from steerable.nn.point_conv import ImplicitPointConv
from steerable.train import train

STEERABLE_CLASSIFIER = [
    "experiment=smoke", *FAST, "task=classification", "dataset.kind=classification", "dataset.num_samples=24",
    "trainer.max_epochs=1", "model=modelnet", "model.num_classes=3", "group=so3",
    "model.stages=[{channels: 2, ratio: 1.0, k: 4}, {channels: 2, ratio: 0.5, k: 4}]",
    "model.conv.channels=2", "model.conv.n_layers=2", "model.conv.compile_mlp=true",
]


@pytest.mark.slow
@pytest.mark.skipif(not cpu_compiler(), reason="torch.compile on CPU needs a C++ compiler (g++)")
def test_compiled_kernel_mlp_trains_and_restores(compose_cfg, tmp_path, monkeypatch):
    # compiles from scratch: no graph another test (or process) cached may stand in for these
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cfg = compose_cfg(STEERABLE_CLASSIFIER)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["train/loss"] == metrics["train/loss"]
    task, _ = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    convs = [m for m in task.modules() if isinstance(m, ImplicitPointConv)]
    assert convs and all(conv.kernel.ops.compiled for conv in convs)
    datamodule = SyntheticPointCloudDataModule(kind="classification", num_samples=24)
    datamodule.setup()
    batch = Batch.from_data_list(datamodule.splits["test"])
    again, _ = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    task.eval()
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(task(batch), again(batch))
