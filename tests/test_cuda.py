"""Device tests (marker ``cuda``): layers, whole models and a Lightning fit on the accelerator.

The device comes from ``STEERABLE_TEST_DEVICE`` (``cuda``, ``cuda:<i>`` or ``cpu``); without it the
tests use CUDA when torch sees a GPU and are skipped otherwise. ``make gpu-check`` runs them on the GPU
(``python -m steerable.gpu_check``), and its CPU run in ``tests/test_gpu_check.py`` runs them with
``STEERABLE_TEST_DEVICE=cpu`` so they are exercised on every machine.

Everything runs in float32 with TF32 off: equivariance to a relative error of 1e-5, node-wise and
per-edge contractions to the same, and weights that move between the device and the CPU unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers.bases import cyl_linear, mixed_checkpoint
from helpers.runs import FAST
from torch_geometric.data import Batch, Data

from steerable.equivariance import model_error
from steerable.geometry import knn_graph, radius_graph
from steerable.groups import build_group
from steerable.models.modelnet import ModelNetModel
from steerable.models.nbody import NBodyModel
from steerable.models.qm9 import QM9Model
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import (
    assert_equivariant_point_module,
    outputs_and_gradients_by_path,
    random_point_inputs,
    relative_difference,
)

pytestmark = pytest.mark.cuda

TOL = 1e-5
SMALL_CONV = {"channels": 4, "n_layers": 2}
DEVICE_VAR = "STEERABLE_TEST_DEVICE"


@pytest.fixture(scope="module")
def device() -> torch.device:
    """``STEERABLE_TEST_DEVICE`` if set (a CUDA device that is missing fails), else CUDA if any, else skip."""
    name = os.environ.get(DEVICE_VAR, "").strip()
    if not name:
        if not torch.cuda.is_available():
            pytest.skip(f"no CUDA device ({DEVICE_VAR}=cpu runs these tests on the CPU)")
        return torch.device("cuda")
    if name != "cpu" and not name.startswith("cuda"):
        raise pytest.UsageError(f"{DEVICE_VAR}={name!r}: expected cuda, cuda:<index> or cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"{DEVICE_VAR}={name} but torch sees no CUDA device")
    return dev


@pytest.fixture(autouse=True)
def _ieee_float32() -> Iterator[None]:
    """Full float32 matmuls (no TF32) and a seeded RNG; the previous settings are restored."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(0)
    yield
    torch.set_float32_matmul_precision(precision)


def _molecules(gen: torch.Generator) -> Batch:
    """Three small fully connected molecules: one-hot atom types (5) and bond types (4)."""
    mols = []
    for n in (5, 8, 3):
        edges = torch.combinations(torch.arange(n)).T
        edges = torch.cat([edges, edges.flip(0)], 1)
        bonds = torch.randint(0, 4, (edges.shape[1],), generator=gen)
        mols.append(Data(pos=1.5 * torch.randn(n, 3, generator=gen),
                         x=F.one_hot(torch.randint(0, 5, (n,), generator=gen), 5).float(),
                         edge_index=edges, edge_attr=F.one_hot(bonds, 4).float()))
    return Batch.from_data_list(mols)


def _particles(gen: torch.Generator) -> Batch:
    """Three charged 5-body systems (fully connected, charge products as edge attributes)."""
    systems = []
    edges = torch.tensor([[i, j] for i in range(5) for j in range(5) if i != j]).T
    for _ in range(3):
        charge = torch.randint(0, 2, (5, 1), generator=gen).float() * 2 - 1
        systems.append(Data(pos=torch.randn(5, 3, generator=gen), vel=torch.randn(5, 3, generator=gen),
                            charge=charge, edge_index=edges, edge_attr=charge[edges[0]] * charge[edges[1]]))
    return Batch.from_data_list(systems)


def _clouds(model: ModelNetModel, gen: torch.Generator) -> Batch:
    """Two clouds of 64 points with the point hierarchy built per item, as the data loaders do.

    Rotated copies of the batch reuse its hierarchy (it is rotation invariant), so the check sees the
    network, not float32 ties in farthest point sampling.
    """
    clouds = [Data(pos=torch.randn(64, 3, generator=gen)) for _ in range(2)]
    return Batch.from_data_list([model.loader_transform(cloud) for cloud in clouds])


def _model(family: str) -> tuple[torch.nn.Module, Batch]:
    gen = torch.Generator().manual_seed(1)
    if family == "nbody":
        model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV)
        return model, _particles(gen)
    if family == "qm9":
        model = QM9Model(group={"name": "o3"}, num_features=4, num_blocks=1, conv=SMALL_CONV,
                         edge_attrs=True, node_attrs=True)
        return model, _molecules(gen)
    stages = [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.25, "k": 8}]
    model = ModelNetModel(group={"name": "o3"}, stages=stages, conv=SMALL_CONV)
    return model, _clouds(model, gen)


@pytest.mark.parametrize("path", ["nodewise", "reference"])
def test_point_conv_equivariance(device, path):
    conv = ImplicitPointConv(build_group("o3"), "4x0e+2x1o+2x1e", "3x0e+2x1o", channels=4, path=path)
    conv = conv.to(device).eval()
    x, pos, edge_index = (t.to(device) for t in random_point_inputs(conv.in_type, 30, 120))
    assert_equivariant_point_module(conv, x, pos, edge_index, tol=TOL)


@pytest.mark.parametrize("family", ["nbody", "qm9", "modelnet"])
def test_model_equivariance(device, family):
    model, batch = _model(family)
    model, batch = model.to(device).eval(), batch.to(device)
    with torch.no_grad():
        out = model(batch)
    assert out.device.type == device.type and torch.isfinite(out).all()
    assert model_error(model, batch) <= TOL


def test_nodewise_matches_reference(device):
    """Outputs and gradients of both contraction paths agree on fixed, padded and scatter layouts."""
    from steerable.nn.contraction import segment_layout

    gen = torch.Generator().manual_seed(0)
    conv = ImplicitPointConv(build_group("so3"), "8x0e+4x1o", "4x0e+4x1o", channels=4).to(device)
    n = 64
    pos = 1.5 * torch.randn(n, 3, generator=gen)
    star = torch.stack([torch.arange(1, n), torch.zeros(n - 1, dtype=torch.long)])
    graphs = [("fixed", knn_graph(pos, 8)), ("padded", radius_graph(pos, 1.5)), ("scatter", star)]
    pos = pos.to(device)
    for mode, edge_index in graphs:
        edge_index = edge_index.to(device)
        assert segment_layout(edge_index[1], n).mode == mode
        x = torch.randn(n, conv.in_type.size, generator=gen).to(device).requires_grad_(True)
        weights = torch.randn(n, conv.out_type.size, generator=gen).to(device)
        results = outputs_and_gradients_by_path(conv, x, pos, edge_index, weights)
        # parameters' gradients as one vector:
        for reference, nodewise in zip(results["reference"], results["nodewise"], strict=True):
            assert reference.device.type == device.type
            assert relative_difference(nodewise, reference) <= TOL, mode  # small ones cancel in float32


@pytest.mark.parametrize("family", ["nbody", "modelnet"])
def test_state_dict_round_trips_between_device_and_cpu(device, family):
    torch.manual_seed(0)
    model, batch = _model(family)
    on_device = model.to(device).eval()
    state = on_device.state_dict()
    assert all(t.device.type == device.type for t in state.values()), "a tensor stayed behind on the CPU"
    torch.manual_seed(1)  # other initial weights: loading must overwrite every one of them
    on_cpu, _ = _model(family)
    on_cpu.load_state_dict(state)
    on_cpu.eval()
    for key, value in on_cpu.state_dict().items():
        assert value.device.type == "cpu"
        torch.testing.assert_close(value, state[key].cpu(), rtol=0, atol=0, msg=key)
    with torch.no_grad():
        expected = on_device(batch.to(device)).cpu()
        assert relative_difference(on_cpu(batch.cpu()), expected) <= TOL
    back, _ = _model(family)
    back.load_state_dict(on_cpu.state_dict())
    back = back.to(device).eval()
    with torch.no_grad():
        assert relative_difference(back(batch.to(device)).cpu(), expected) <= TOL


def test_a_checkpoint_in_another_escnn_basis_loads_on_the_device(device):
    """Weights saved where escnn's basis is mixed are re-expressed into a layer already on the device."""
    layer = cyl_linear()
    weight, _ = layer.weight_and_bias()
    state = mixed_checkpoint(layer)  # on the CPU, like a checkpoint from another cluster
    torch.manual_seed(1)
    loaded = cyl_linear().to(device)
    loaded.load_state_dict(state)
    assert loaded.linear.weights.device.type == device.type
    torch.testing.assert_close(loaded.weight_and_bias()[0].cpu(), weight, rtol=0, atol=1e-10)


class DeviceProbe(pl.Callback):
    """Records the device of the model's parameters and of every training batch."""

    seen: set[str] = set()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch,
                             batch_idx: int) -> None:
        DeviceProbe.seen.add(next(pl_module.parameters()).device.type)
        DeviceProbe.seen.add(batch.pos.device.type)


def test_lightning_fit_two_steps(device, compose_cfg, tmp_path):
    """``trainer=gpu`` (accelerator overridden to ``cpu`` on the CPU) fits 2 steps, tests, checkpoints;
    the checkpoint written on the device loads on the CPU."""
    from steerable.checkpoint import load_checkpoint
    from steerable.train import train

    overrides = ["experiment=nbody", "dataset=nbody_tiny", "trainer=gpu", *FAST,
                 "trainer.limit_train_batches=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1", "dataset.progress=false", "model.num_features=4",
                 "model.num_layers=2", "model.conv.channels=4", "model.conv.n_layers=2",
                 f"+callbacks.device_probe._target_={__name__}.DeviceProbe"]
    if device.type == "cpu":
        overrides.append("trainer.accelerator=cpu")
    elif device.index is not None:
        overrides.append(f"trainer.devices=[{device.index}]")
    DeviceProbe.seen = set()
    metrics = train(compose_cfg(overrides))
    assert DeviceProbe.seen == {device.type}
    for key in ("train/loss", "val/mse", "test/mse"):
        assert key in metrics and metrics[key] == metrics[key] and metrics[key] < float("inf"), key
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert stored["global_step"] == 2
    task, _ = load_checkpoint(ckpt)
    batch = _particles(torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.isfinite(task(batch)).all()
