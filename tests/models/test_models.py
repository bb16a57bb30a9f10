"""Equivariance of the experiment networks (QM9, ModelNet-40, N-body) for the configured groups.

Models are built small (few features/blocks) so the whole file runs in about a minute; the
equivariance argument does not depend on width or depth.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from steerable.equivariance import model_error, transform_batch
from steerable.models.modelnet import ModelNetModel
from steerable.models.nbody import NBodyModel
from steerable.models.qm9 import QM9Model
from steerable.testing import relative_difference

TOL = 1e-5
# Of the paper's eight groups, these contain the point reflection −I (SO(2)⋊Inv = SO(2)×{±I}).
CONTAIN_INVERSION = {"inv", "so2_inv", "o3"}
SMALL_CONV = {"channels": 4, "n_layers": 2}


def _for_check(model, batch: Batch):
    """Eval mode; float64 for implicit models. Analytic models stay float32: escnn shares their kernel
    bases between layers, so casting one would change every later analytic layer (see nn/analytic.py)."""
    model = model.eval()
    if any(type(m).__name__ == "AnalyticPointConv" for m in model.modules()):
        return model, batch
    return model.double(), _double(batch)


def _double(batch: Batch) -> Batch:
    out = batch.clone()
    for key in ("pos", "x", "edge_attr", "vel", "charge", "normal"):
        if getattr(out, key, None) is not None:
            setattr(out, key, getattr(out, key).double())
    return out


def _molecules(generator: torch.Generator) -> Batch:
    mols = []
    for n in (5, 8, 3):
        ei = torch.combinations(torch.arange(n)).T
        ei = torch.cat([ei, ei.flip(0)], 1)
        mols.append(
            Data(
                pos=1.5 * torch.randn(n, 3, generator=generator),
                x=F.one_hot(torch.randint(0, 5, (n,), generator=generator), 5).float(),
                edge_index=ei,
                edge_attr=F.one_hot(torch.randint(0, 4, (ei.shape[1],), generator=generator), 4).float(),
            )
        )
    return Batch.from_data_list(mols)


def _particles(generator: torch.Generator) -> Batch:
    systems = []
    for _ in range(3):
        ei = torch.tensor([[i, j] for i in range(5) for j in range(5) if i != j]).T
        q = torch.randint(0, 2, (5, 1), generator=generator).float() * 2 - 1
        systems.append(
            Data(
                pos=torch.randn(5, 3, generator=generator),
                vel=torch.randn(5, 3, generator=generator),
                charge=q,
                edge_index=ei,
                edge_attr=q[ei[0]] * q[ei[1]],
            )
        )
    return Batch.from_data_list(systems)


def _clouds(generator: torch.Generator) -> Batch:
    return Batch.from_data_list(
        [
            Data(
                pos=torch.randn(64, 3, generator=generator),
                normal=F.normalize(torch.randn(64, 3, generator=generator), dim=1),
            )
            for _ in range(2)
        ]
    )


@pytest.mark.parametrize(
    "group,kwargs",
    [
        ("o3", {}),
        ("o3", {"edge_attrs": True, "node_attrs": True}),
        ("so3", {"kernel": "analytic"}),
        ("cyl", {}),
        ("o3", {"targets": ["polarizability_tensor"], "band_limit": 2}),
    ],
)
def test_qm9_model_equivariance(group, kwargs):
    torch.manual_seed(0)
    model = QM9Model(group={"name": group}, num_features=4, num_blocks=1, conv=SMALL_CONV, **kwargs)
    batch = _molecules(torch.Generator().manual_seed(0))
    out = model(batch)
    assert out.shape == (3, 9 if "targets" in kwargs else 1)
    assert model_error(*_for_check(model, batch)) < TOL
    if "targets" in kwargs:  # an isotropic c·I output would be equivariant too: it must not be one
        tensors = out.detach().view(-1, 3, 3)
        isotropic = tensors.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * torch.eye(3)
        assert (tensors - isotropic).norm() > 1e-3 * tensors.norm()


@pytest.mark.parametrize(("group", "kwargs"), [("o3", {}), ("so3", {"feature_spec": "4x0e+4x1o+4x1e"})])
def test_qm9_polarizability_needs_2e_features(group, kwargs):
    """Without 2e fields the readout can only produce c·I: refused at construction."""
    with pytest.raises(ValueError, match=r"anisotropic \(ℓ=2, 2e\) part.* reaches 1 of the 6"):
        QM9Model(group={"name": group}, targets=["polarizability_tensor"], num_features=4, num_blocks=1,
                 conv=SMALL_CONV, **kwargs)


def test_qm9_model_bare_target_string_is_one_target():
    model = QM9Model(group={"name": "o3"}, targets="lumo", num_features=4, num_blocks=1, conv=SMALL_CONV)
    assert model(_molecules(torch.Generator().manual_seed(0))).shape == (3, 1)


def test_qm9_model_refuses_a_2d_group():
    with pytest.raises(ValueError, match="QM9 positions are 3-D; group 'so2' \\(dim=2\\) acts on 2-D"):
        QM9Model(group={"name": "so2", "dim": 2}, num_features=4, num_blocks=1, conv=SMALL_CONV)


@pytest.mark.parametrize(
    "group,kwargs", [("o3", {}), ("so2", {"use_normals": True}), ("so2", {"kernel": "analytic"})]
)
def test_modelnet_model_invariance(group, kwargs):
    torch.manual_seed(0)
    stages = [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.25, "k": 8}]
    model = ModelNetModel(group={"name": group}, stages=stages, conv=SMALL_CONV, **kwargs)
    batch = _clouds(torch.Generator().manual_seed(1))
    assert model(batch).shape == (2, 40)
    assert model_error(*_for_check(model, batch)) < TOL


def test_modelnet_model_chunked_kernel_matches_and_stays_invariant():
    """``conv.chunk_edges`` (φ recomputed per chunk) gives the same logits and gradients, still invariant."""
    stages = [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.25, "k": 8}]
    batch = _clouds(torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    plain = ModelNetModel(group={"name": "o3"}, stages=stages, conv=SMALL_CONV)
    chunked = ModelNetModel(group={"name": "o3"}, stages=stages, conv={**SMALL_CONV, "chunk_edges": 100})
    chunked.load_state_dict(plain.state_dict())
    outs, grads = [], []
    for model in (plain, chunked):
        out = model(batch)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert relative_difference(outs[1], outs[0]) <= 1e-5
    assert relative_difference(grads[1], grads[0]) <= 1e-5  # float32, other summation order
    assert model_error(*_for_check(chunked, batch)) < TOL


@pytest.mark.parametrize("group", ["mirror", "inv", "so2_inv", "so2", "o2", "cone", "so3", "o3"])
def test_modelnet_reflection_changes_nothing_only_when_in_group(group):
    """The paper's eight groups: logits are invariant to the group, and to the point reflection −I
    exactly when −I is in the group (inv, so2_inv, o3)."""
    torch.manual_seed(0)
    stages = [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.5, "k": 8}]
    model = ModelNetModel(group={"name": group}, stages=stages, conv=SMALL_CONV).eval().double()
    batch = _double(_clouds(torch.Generator().manual_seed(2)))
    assert model_error(model, batch, n_elements=3) < TOL
    reflected = batch.clone()
    reflected.pos = -batch.pos
    with torch.no_grad():
        ref, out = model(batch), model(reflected)
    error = float((out - ref).norm() / ref.norm())
    if group in CONTAIN_INVERSION:
        assert error < TOL
    else:
        assert error > 1e-4


@pytest.mark.parametrize(
    "group,kwargs",
    [("o3", {}), ("so2", {}), ("so3", {"kernel": "analytic", "edge_attrs": False, "node_attrs": False})],
)
def test_nbody_model_equivariance(group, kwargs):
    torch.manual_seed(0)
    model = NBodyModel(group={"name": group}, num_features=4, num_layers=2, conv=SMALL_CONV, **kwargs)
    batch = _particles(torch.Generator().manual_seed(3))
    assert model(batch).shape == (15, 3)
    assert model_error(*_for_check(model, batch)) < TOL


def test_nbody_model_translation_equivariance():
    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV).eval().double()
    batch = _double(_particles(torch.Generator().manual_seed(4)))
    shifted = batch.clone()
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    shifted.pos = batch.pos + shift
    with torch.no_grad():
        assert torch.allclose(model(shifted), model(batch) + shift, atol=1e-10)


def test_equivariance_check_detects_a_broken_model():
    """Feeding raw positions as an invariant feature breaks equivariance; the check must notice."""
    model = QM9Model(group={"name": "so3"}, num_features=4, num_blocks=1, conv=SMALL_CONV).eval().double()
    batch = _double(_molecules(torch.Generator().manual_seed(5)))

    def broken(b):
        b = b.clone()
        b.x = torch.cat([b.x[:, :2], b.pos], dim=1)  # positions smuggled in as "atom types"
        return model(b)

    assert model_error(model, batch, forward=broken) > 1e-3
    assert (
        transform_batch(batch, model.group, model.group.sample(1, seed=0)[0], ()).pos.shape == batch.pos.shape
    )
