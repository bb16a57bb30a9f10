"""Bad input → one clear error naming the problem; interrupted writes leave nothing a later run trusts.

``CASES`` is a table: each row builds a bad input, and the test asserts the exception
type and (part of) its message. Inputs that *must work* (one atom, duplicate points) and the
atomic-write checks follow the table. Command-line spellings of config errors (exit status 2,
one line) are covered in ``tests/framework/test_config_errors.py``; here they are checked at the
layer that raises them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.runs import CONF_DIR, compose_run
from omegaconf import OmegaConf
from torch_geometric.data import Batch, Data

from steerable.config_checks import ConfigError, check_config, check_override_choices
from steerable.data import modelnet_io, nbody_io, qm9_cache
from steerable.data.mesh import read_off
from steerable.data.modelnet_io import read_hdf5
from steerable.data.modelnet_layout import find_layout
from steerable.data.molecules import read_molecules
from steerable.data.nbody_sim import SimConfig
from steerable.geometry import knn_graph
from steerable.groups import GroupError, build_group
from steerable.io_utils import AtomicCheckpointIO
from steerable.models.qm9 import QM9Model
from steerable.nn.point_conv import ImplicitPointConv

TINY_QM9 = {"group": {"name": "so3"}, "num_blocks": 1, "num_features": 4, "conv": {"channels": 4}}


def molecule(pos: torch.Tensor) -> Data:
    """A carbon-only 'molecule' with fully connected edges (QM9Model's batch fields)."""
    n = pos.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T  # (2, 0) for an empty molecule
    x = F.one_hot(torch.zeros(n, dtype=torch.long), 5).float()
    return Data(x=x, pos=pos, edge_index=edge_index, edge_attr=torch.zeros(edge_index.shape[1], 4))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for name, value in datasets.items():
            h5[name] = value
    return path


def composed_run_config(overrides: list[str], tmp: Path) -> dict:
    """The resolved run config (what ``train`` checks) for ``experiment=qm9_homo`` + overrides."""
    cfg = compose_run(["experiment=qm9_homo", "dataset=qm9_tiny", *overrides], tmp)
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra")
    return container


# --- the table: case id → (build the bad input; expected exception; message pattern) ----------

Case = tuple[Callable[[Path], object], type[BaseException], str]
NAN = float("nan")

CASES: dict[str, Case] = {
    "unknown group": (
        lambda tmp: build_group("so4"),
        GroupError, r"unknown group 'so4' for dim=3; valid: .*\bso3\b.*"),
    "unknown dataset on the command line": (
        lambda tmp: check_override_choices(["dataset=qm10"], CONF_DIR),
        ConfigError, r"unknown dataset 'qm10'; valid: modelnet40, .*qm9, qm9_tiny, synthetic"),
    "unknown model on the command line": (
        lambda tmp: check_override_choices(["model=pointnet"], CONF_DIR),
        ConfigError, r"unknown model 'pointnet'.*valid: .*qm9"),
    "cn without a valid N": (
        lambda tmp: build_group("cn", N=1),
        GroupError, r"group 'cn' needs an integer N >= 2 \(the rotation order\), got N=1"),
    "cn with a fractional N": (
        lambda tmp: build_group("cn", N=2.5),
        GroupError, r"group 'cn' needs an integer N >= 2 \(the rotation order\), got N=2.5"),
    "dn with a non-numeric N": (
        lambda tmp: build_group("dn", N="four"),
        GroupError, r"group 'dn' needs an integer N >= 2 .* got N=four"),
    "cn with N missing": (
        lambda tmp: build_group("cn", N=None),
        GroupError, r"needs an integer N >= 2 .* got N=None"),
    "unknown model.kernel (constructor)": (
        lambda tmp: QM9Model(**TINY_QM9, kernel="foo"),
        ValueError, r"unknown model.kernel 'foo'; valid: implicit, analytic"),
    "unknown model.kernel (config check)": (
        lambda tmp: check_config(composed_run_config(["model.kernel=foo"], tmp)),
        ConfigError, r"invalid value model.kernel='foo'; valid: implicit, analytic"),
    "typo'd config key model.kernal": (
        lambda tmp: check_config(composed_run_config(["+model.kernal=analytic"], tmp)),
        ConfigError, r"unknown key 'model.kernal' for steerable.models.qm9.QM9Model "
                     r"\(did you mean 'kernel'\?\)"),
    "field type of another group": (
        lambda tmp: ImplicitPointConv(build_group("so3"), build_group("o3").field_type("1x1o"), "1x0e"),
        GroupError, r"cannot be carried by group 'so3'"),
    "regular field on a continuous group": (
        lambda tmp: build_group("so2").field_type("2xregular"),
        GroupError, r"group 'so2' is continuous and has no regular representation"),
    "unparsable field spec": (
        lambda tmp: QM9Model(**TINY_QM9, feature_spec="4x1q"),
        GroupError, r"cannot parse field spec token '4x1q'"),
    "analytic kernel with edge attributes": (
        lambda tmp: QM9Model(**TINY_QM9, kernel="analytic", edge_attrs=True),
        ValueError, r"analytic kernels cannot be conditioned on edge/node attributes; "
                    r"set model.edge_attrs=false"),
    "missing ModelNet directory": (
        lambda tmp: find_layout(tmp / "modelnet40"),
        FileNotFoundError, r"ModelNet-40 root '.*modelnet40' does not exist.*ply_data_\{train,test\}\*\.h5"
                           r".*modelnet40_shape_names\.txt.*<class>/\{train,test\}/<class>_XXXX\.off"),
    "malformed .xyz (coordinate)": (
        lambda tmp: read_molecules(str(write(tmp / "mol.xyz", "2\ncomment\nC 0 0 0\nH 1.0 abc 0\n"))),
        ValueError, r"mol\.xyz:4: coordinate 'abc' is not a number"),
    "malformed .xyz (truncated)": (
        lambda tmp: read_molecules(str(write(tmp / "mol.xyz", "3\ncomment\nC 0 0 0\n"))),
        ValueError, r"mol\.xyz:4: file ends after 1 of 3 atom lines"),
    ".xyz with a NaN coordinate": (
        lambda tmp: read_molecules(str(write(tmp / "mol.xyz", "2\n\nC 0 0 0\nH nan 0 0\n"))),
        ValueError, r"mol\.xyz:4: coordinate 'nan' is not finite"),
    ".xyz with zero atoms": (
        lambda tmp: read_molecules(str(write(tmp / "mol.xyz", "0\ncomment\n"))),
        ValueError, r"mol\.xyz:1: atom count must be at least 1, got 0"),
    "malformed .off (vertex)": (
        lambda tmp: read_off(write(tmp / "m.off", "OFF\n3 1 0\n0 0 0\n1 x 0\n0 1 0\n3 0 1 2\n")),
        ValueError, r"m\.off:4: vertex 1 has non-numeric coordinates"),
    "malformed .off (face index)": (
        lambda tmp: read_off(write(tmp / "m.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")),
        ValueError, r"m\.off:6: vertex index out of range \[0, 3\)"),
    ".off with a NaN vertex": (
        lambda tmp: read_off(write(tmp / "m.off", "OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n")),
        ValueError, r"m\.off:4: vertex 1 has non-finite coordinates"),
    ".h5 without 'data'": (
        lambda tmp: read_hdf5(write_h5(tmp / "ply_data_train0.h5", label=np.zeros((2, 1))).parent, "train"),
        ValueError, r"ply_data_train0\.h5: missing dataset 'data' \(has \['label'\]\)"),
    ".h5 that is not HDF5": (
        lambda tmp: read_hdf5(write(tmp / "ply_data_train0.h5", "not hdf5").parent, "train"),
        ValueError, r"ply_data_train0\.h5: not a readable HDF5 file"),
    ".h5 with NaN coordinates": (
        lambda tmp: read_hdf5(write_h5(tmp / "ply_data_train0.h5", label=np.zeros((2, 1)), data=np.stack(
            [np.zeros((4, 3)), np.full((4, 3), NAN)]).astype(np.float32)).parent, "train"),
        ValueError, r"ply_data_train0\.h5: dataset 'data' has NaN/inf coordinates in rows \[1\]"),
    "NaN coordinates into a graph builder": (
        lambda tmp: knn_graph(torch.tensor([[0.0, 0, 0], [NAN, 0, 0]]), 1),
        ValueError, r"contains NaN or inf values"),
    "point cloud with zero points into a graph builder": (
        lambda tmp: knn_graph(torch.zeros(0, 3), 1),
        ValueError, r"is empty \(0 points\)"),
    "NaN coordinates into a model": (
        lambda tmp: QM9Model(**TINY_QM9)(Batch.from_data_list(
            [molecule(torch.rand(3, 3)), molecule(torch.tensor([[0.0, 0, 0], [float("inf"), 0, 0]]))])),
        ValueError, r"NaN/inf coordinates in graph\(s\) \[1\] of the batch \(1 of 5 points\)"),
    "empty batch into a model": (
        lambda tmp: QM9Model(**TINY_QM9)(molecule(torch.zeros(0, 3))),
        ValueError, r"empty batch: no points"),
    "2-D positions into a 3-D conv": (
        lambda tmp: ImplicitPointConv(build_group("o3"), "1x0e", "1x0e")(
            torch.ones(4, 1), torch.zeros(4, 2), torch.tensor([[0, 1], [1, 0]])),
        ValueError, r"pos must be \(N, 3\) for group 'o3', got \(4, 2\)"),
    "edge attributes for another number of edges": (
        lambda tmp: ImplicitPointConv(build_group("o3"), "1x0e", "1x0e", edge_attr_type="2x0e")(
            torch.ones(4, 1), torch.zeros(4, 3), torch.tensor([[0, 1], [1, 0]]), edge_attr=torch.ones(3, 2)),
        ValueError, r"edge_attr must be \(E, 2\) = \(2, 2\), got \(3, 2\)"),
    "node attributes of the wrong width": (
        lambda tmp: ImplicitPointConv(build_group("o3"), "1x0e", "1x0e", node_attr_type="2x0e")(
            torch.ones(4, 1), torch.zeros(4, 3), torch.tensor([[0, 1], [1, 0]]), node_attr=torch.ones(4, 3)),
        ValueError, r"node_attr must be \(N, 2\), got \(4, 3\)"),
    "field spec without fields": (
        lambda tmp: build_group("o3").field_type("0x0e"),
        GroupError, r"'0x0e' has no fields"),
    "molecule with zero atoms inside a batch": (
        lambda tmp: QM9Model(**TINY_QM9)(Batch.from_data_list(
            [molecule(torch.rand(2, 3)), molecule(torch.zeros(0, 3)), molecule(torch.rand(2, 3))])),
        ValueError, r"graph\(s\) \[1\] of the batch have no points"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_error(case, tmp_path):
    build, error, pattern = CASES[case]
    with pytest.raises(error) as info:
        build(tmp_path)
    message = str(info.value)
    assert re.search(pattern, message, flags=re.DOTALL), f"{case}: {message!r}"


def test_the_table_is_long_enough():
    assert len(CASES) >= 15


# --- inputs that must work: one point, duplicate points (zero relative vectors) ---------------

def finite_grads(module: torch.nn.Module, *tensors: torch.Tensor) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None] + [t.grad for t in tensors]
    return bool(grads) and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("path", ["nodewise", "reference"])
def test_duplicate_points_give_finite_outputs_and_gradients_in_the_conv(path):
    group = build_group("o3")
    conv = ImplicitPointConv(group, "2x0e+1x1o", "2x0e+1x1o+1x2e", path=path)
    pos = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]], requires_grad=True)
    x = torch.randn(4, conv.in_type.size, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 3, 0, 1], [1, 0, 3, 2, 0, 2]])  # 0↔1, 2↔3 coincide, 0→0 loop
    out = conv(x, pos, edge_index)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and finite_grads(conv, pos, x)


@pytest.mark.parametrize("points", [
    pytest.param(torch.zeros(1, 3), id="one atom"),
    pytest.param(torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]]), id="duplicate atoms"),
])
def test_one_point_and_duplicate_points_through_a_model(points):
    model = QM9Model(**TINY_QM9)
    pos = points.clone().requires_grad_(True)
    out = model(Batch.from_data_list([molecule(pos), molecule(torch.rand(3, 3))]))
    out.sum().backward()
    assert out.shape == (2, 1) and torch.isfinite(out).all() and finite_grads(model, pos)


# --- interrupted writes leave no file that a later run trusts ---------------------------------

def dying_torch_save(real_save):
    """``torch.save`` that writes part of the file and then dies (as if killed mid-write)."""
    def save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(64)
        raise KeyboardInterrupt("killed mid-write")
    return save


def test_qm9_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "qm9" / "cache.pt"
    monkeypatch.setattr(qm9_cache.torch, "save", dying_torch_save(torch.save))
    with pytest.raises(KeyboardInterrupt):
        qm9_cache.save_atomic({"name": ["x"]}, path)
    assert list(path.parent.iterdir()) == []


def test_nbody_cache_write_is_atomic(tmp_path, monkeypatch):
    def dying_savez(handle, **arrays):
        handle.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(nbody_io.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        nbody_io.ensure_split(tmp_path, SimConfig(n_steps=40, sample_every=20), "test", 2, seed=0,
                              progress=False)
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))


def test_modelnet_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "off_train.pt"
    monkeypatch.setattr(modelnet_io.torch, "save", dying_torch_save(torch.save))
    with pytest.raises(KeyboardInterrupt):
        modelnet_io._cached(path, {"k": 1}, lambda: {"points": torch.zeros(2, 3)})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A checkpoint interrupted while being written leaves the previous one intact (and no temp file)."""
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    from steerable import io_utils
    monkeypatch.setattr(io_utils.torch, "save", dying_torch_save(torch.save))
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.randn(1000)}}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True) == {"global_step": 1}
