"""Device-correct models and tasks, checked on the CPU with :mod:`steerable.device_guard`.

For every model config in ``conf/model/`` (with the dataset of the first experiment that selects it,
in its tiny variant; the baseline with the ``smoke`` recipe), plus the code paths other options switch
on (analytic kernels, chunked convolutions, a shared kernel trunk, a point hierarchy built by the model,
test-time rotation averaging, EGNN's trajectory mode):

* a 2-step fit with validation, then a test run, under :class:`DeviceGuardCallback`: no tensor factory
  without ``device=``/``dtype=`` and no host sync in any step, except the allowed sites;
* ``.double()`` leaves no float32 tensor among the parameters, buffers and plain tensor attributes
  (caches), and the float64 forward is clean too; ``.to("meta")`` leaves no tensor behind (every
  escnn-derived basis is a buffer or a host-side float64 master).

The guard itself is shown to catch a deliberately careless module, directly and through a Lightning fit.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.runs import CONF_DIR, FAST, HELPER_CONF, compose_run
from omegaconf import OmegaConf, open_dict
from torch import nn
from torchmetrics import MeanMetric

from steerable.checkpoint import build, build_model_and_task, connect_loader_transform
from steerable.device_guard import PACKAGE_ROOT, Allowance, DeviceGuard, DeviceGuardCallback, DeviceViolation
from steerable.gpu_check.clouds import write_hdf5_dataset
from steerable.groups import build_group
from steerable.kernels.linear import EquivariantLinear
from steerable.models.blocks import check_batch
from steerable.nn.contraction import cached_segment_layout
from steerable.tasks.base import EpochMean
from steerable.tasks.trajectory import TrajectoryTask

HERE = Path(__file__).resolve().parent
SHARED_MODELNET = Path(__file__).resolve().parents[3] / "shared" / "data" / "modelnet40"
# without the shared real files: generated clouds in ModelNet-40's HDF5 layout, read by the real loader
GENERATED_MODELNET = Path(tempfile.gettempdir()) / "steerable-tests-generated-modelnet40"
MODELNET = SHARED_MODELNET if SHARED_MODELNET.is_dir() else GENERATED_MODELNET
# smaller than the recipes (where a model has the option): the checks do not depend on the size
SHRINK = {"num_blocks": 1, "num_layers": 2, "num_features": 4, "hidden": 16, "head_hidden": 16,
          "conv.channels": 4, "conv.n_layers": 2,
          "stages": [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.25, "k": 8}]}
DATA = {"batch_size": 4, "num_workers": 0, "num_points": 128, "num_samples": 40}
# code paths the recipes' options switch on, beyond each model's first experiment
VARIANTS = {
    "qm9-analytic": ("qm9", ["model.kernel=analytic"]),
    "nbody-chunked": ("nbody", ["model.conv.chunk_edges=40"]),
    "nbody-shared_phi": ("nbody", ["model.shared_phi=true", "model.position_updates=false"]),
    "nbody-attrs-centered": ("nbody", ["model.feature_attrs=true", "model.velocity_attrs=true",
                                       "model.centered_input=true"]),
    "modelnet-hierarchy_in_model-tta": ("modelnet", ["model.hierarchy_in_loader=false",
                                                     "task.tta_samples=2"]),
    "egnn-trajectory": ("egnn", ["experiment=nbody", "model=egnn", "dataset=nbody_tiny"]),
}


def _experiments() -> Iterator[Path]:
    yield from sorted((CONF_DIR / "experiment").glob("*.yaml"))
    yield from sorted((HELPER_CONF / "experiment").glob("*.yaml"))


def _override(path: Path, group: str) -> str | None:
    """The option an experiment selects with ``override /<group>: …`` (None if it keeps the default)."""
    for entry in OmegaConf.load(path).get("defaults", []):
        if OmegaConf.is_dict(entry) or isinstance(entry, dict):
            for key, value in entry.items():
                if key.replace("override ", "").strip() == f"/{group}":
                    return value
    return None


def recipe(model: str) -> list[str]:
    """Overrides that run ``model`` as its first experiment does, on that experiment's tiny dataset."""
    for path in _experiments():
        if _override(path, "model") == model:
            overrides = [f"experiment={path.stem}"]
            dataset = _override(path, "dataset")
            if dataset and (CONF_DIR / "dataset" / f"{dataset}_tiny.yaml").exists():
                overrides.append(f"dataset={dataset}_tiny")
            if dataset and dataset.startswith("modelnet40"):
                overrides.append(f"paths.modelnet40={MODELNET}")
            return overrides
    raise AssertionError(f"no experiment selects model={model}: add one (conf/experiment/) so the device "
                         "checks know its dataset")


MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
CASES = {name: recipe(name) for name in MODELS} | {
    name: recipe(model) + extra for name, (model, extra) in VARIANTS.items()}


def compose_case(name: str, run_dir: Path):
    if MODELNET == GENERATED_MODELNET and not (MODELNET / "shape_names.txt").is_file():
        write_hdf5_dataset(MODELNET, n_train=80, n_test=40, points=256)
    cfg = compose_run([*CASES[name], *FAST], run_dir)
    with open_dict(cfg):
        for section, values in (("model", SHRINK), ("dataset", DATA)):
            for key, value in values.items():
                if OmegaConf.select(cfg[section], key) is not None:
                    OmegaConf.update(cfg, f"{section}.{key}", value, merge=False)
    return cfg


def plain_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor a module tree holds: parameters, buffers, and the plain attributes (caches) of our
    own modules, also inside dicts, lists and tuples (escnn's modules keep a few index tensors as plain
    attributes for their own expansion, which our layers do not run)."""
    for prefix, sub in _modules_by_identity(module):
        for key, value in [*sub._parameters.items(), *sub._buffers.items()]:
            if value is not None:
                yield f"{prefix}.{key}", value
        if not type(sub).__module__.startswith("steerable."):
            continue
        for key, value in vars(sub).items():
            if key not in ("_parameters", "_buffers", "_modules"):
                yield from _inside(f"{prefix}.{key}", value)


def _modules_by_identity(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``named_modules()`` without hashing the modules: escnn's kernel bases hash by their tensors'
    values, which meta tensors do not have."""
    stack, seen = [("", root)], set()
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield prefix, module
        stack += [(f"{prefix}.{name}" if prefix else name, sub) for name, sub in module._modules.items()
                  if sub is not None]


def _inside(name: str, value, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield name, value
    elif depth < 4 and isinstance(value, dict):
        for key, item in value.items():
            yield from _inside(f"{name}[{key!r}]", item, depth + 1)
    elif depth < 4 and isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _inside(f"{name}[{i}]", item, depth + 1)


def _double(batch):
    return batch.apply(lambda t: t.double() if t.is_floating_point() else t)


@pytest.mark.parametrize("name", list(CASES))
def test_model_trains_without_device_mistakes(name, tmp_path):
    cfg = compose_case(name, tmp_path)
    pl.seed_everything(0, workers=True)
    datamodule = build(cfg.dataset, "dataset")
    task = build_model_and_task(cfg)
    connect_loader_transform(datamodule, task)
    guarded = DeviceGuardCallback(raise_at_end=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, limit_train_batches=2,
                         limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[guarded])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=datamodule)
        trainer.test(task, datamodule=datamodule, verbose=False)
    assert trainer.global_step == 2
    guarded.guard.assert_clean()

    # casts: an eval forward fills the caches, .double() must leave no float32 tensor anywhere
    model = task.model.eval()
    batch = task.on_before_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    with torch.no_grad():
        model(batch)
    model.double()
    float32 = [key for key, t in plain_tensors(model) if t.dtype == torch.float32]
    assert not float32, f"float32 tensors left after .double(): {float32[:10]}"
    with torch.no_grad(), DeviceGuard() as guard:
        out = model(_double(batch))
    guard.assert_clean()
    assert out.dtype == torch.float64

    model.to("meta")
    left_behind = [key for key, t in plain_tensors(model) if t.device.type != "meta"]
    assert not left_behind, f"tensors that do not follow .to(device): {left_behind[:10]}"


# --- the guard catches what it should -------------------------------------------------------------


class Careless(nn.Module):
    """Every mistake the guard knows, one per line (line numbers are asserted below)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, batch) -> torch.Tensor:
        pos = batch.pos
        index = torch.arange(pos.shape[0])  # device
        scale = torch.ones(3, device=pos.device)  # dtype
        if pos.abs().max() > 0:  # sync (__bool__)
            scale = scale / pos.abs().max().item()  # sync (item)
        shift = pos.mean(0).to("cpu")  # sync (to the host)
        return pos + self.linear(pos[index] * scale) + shift.to(pos)


def _line(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.strip().startswith(text))


EXPECTED = {("device", "torch.arange", "index = torch.arange"), ("dtype", "torch.ones", "scale = torch.ones"),
            ("sync", "Tensor.__bool__", "if pos.abs().max()"), ("sync", "Tensor.item", "scale = scale /"),
            ("sync", "Tensor.to", "shift = pos.mean(0)")}


def _found(guard: DeviceGuard) -> set[tuple[str, str, int]]:
    return {(v.kind, v.op, int(v.site.split(":")[1].split()[0])) for v in guard.violations}


def test_guard_names_every_mistake_at_its_line():
    from torch_geometric.data import Data

    batch = Data(pos=torch.randn(5, 3))
    with DeviceGuard(roots=[HERE]) as guard:
        Careless()(batch)
    assert _found(guard) == {(kind, op, _line(text)) for kind, op, text in EXPECTED}
    assert all(v.site.startswith("tests/models/test_device_correct.py:") for v in guard.violations)
    with pytest.raises(DeviceViolation, match=r"5 device/dtype/sync violation\(s\)"):
        guard.assert_clean()
    with DeviceGuard() as library_only:  # the default roots check the steerable package only
        Careless()(batch)
    assert library_only.violations == []


def test_guard_callback_fails_a_careless_fit_and_spares_data_loading(tmp_path):
    from steerable.data.synthetic import SyntheticPointCloudDataModule

    datamodule = SyntheticPointCloudDataModule(kind="trajectory", num_samples=20, batch_size=4)
    task = TrajectoryTask(Careless(), optimizer=torch.optim.SGD)
    guarded = DeviceGuardCallback(roots=[HERE, PACKAGE_ROOT])  # the task's code is checked too
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[guarded])
    with warnings.catch_warnings(), pytest.raises(DeviceViolation) as raised:
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=datamodule)
    # the synthetic data is built and collated with CPU factories: outside the guarded steps
    assert _found(guarded.guard) == {(kind, op, _line(text)) for kind, op, text in EXPECTED}
    assert "test_device_correct.py" in str(raised.value)


def test_allowances_host_only_and_via():
    def validate(t: torch.Tensor) -> bool:
        return bool(t.sum() > 0)

    site = f"{Path(__file__).name}:test_allowances_host_only_and_via.<locals>.validate"
    on_host, on_device = torch.ones(2), torch.ones(2, device="meta")
    with DeviceGuard(roots=[HERE], allowed={site: Allowance("test", host_only=True)}) as guard:
        validate(on_host)  # allowed
        with pytest.raises((RuntimeError, NotImplementedError)):
            validate(on_device)  # not allowed: recorded, then torch refuses to read a meta tensor
    assert [(v.kind, v.op) for v in guard.violations] == [("sync", "Tensor.__bool__")]
    with DeviceGuard(roots=[HERE], allowed={site: Allowance("test", via="escnn/")}) as guard:
        validate(on_host)  # the site's own sync, not one inside escnn
    assert len(guard.violations) == 1


def test_host_only_paths_skip_their_syncs_on_a_device():
    """What the host-only allowances claim: on a non-CPU device the cache check and the batch check
    are skipped (``meta`` stands in for an accelerator: reading a value there raises)."""
    from torch_geometric.data import Batch, Data

    G = build_group("so3")
    layer = EquivariantLinear(G.field_type("2x0e+1x1o", on="fiber"), G.field_type("1x0e+2x1o", on="fiber"))
    layer.eval().to("meta")
    batch = Batch.from_data_list([Data(pos=torch.randn(4, 3)), Data(pos=torch.randn(2, 3))]).to("meta")
    with torch.no_grad(), DeviceGuard() as guard:
        layer(torch.randn(5, layer.in_type.size, device="meta"))
        check_batch(batch)
    guard.assert_clean()
    assert layer._cache is None


def test_layout_is_shared_by_the_layers_of_one_graph_only():
    edge_index = torch.tensor([[0, 1, 2, 2, 0], [1, 2, 0, 1, 1]])
    first = cached_segment_layout(edge_index, 3)
    assert cached_segment_layout(edge_index, 3) is first
    assert cached_segment_layout(edge_index.clone(), 3) is not first  # another graph (object)
    other = cached_segment_layout(edge_index, 4)  # other targets
    assert other is not first and other.num_targets == 4
    edge_index[1, 0] = 0  # modified in place: analysed again
    changed = cached_segment_layout(edge_index, 4)
    assert changed is not other and changed.deg.tolist() == [2, 2, 1, 0]


def test_epoch_mean_matches_torchmetrics_and_leaves_nan_out():
    values = [(torch.tensor(1.5), 4), (torch.tensor([2.0, 3.0]), 2), (torch.tensor(float("nan")), 8),
              (torch.tensor(-1.0), 1)]
    ours, reference = EpochMean(), MeanMetric()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for value, weight in values:
            ours.update(value, weight)
            reference.update(value, weight)
        expected = reference.compute()
    with pytest.warns(UserWarning, match="1 NaN value"):
        torch.testing.assert_close(ours.compute(), expected)
