"""N-body model options: `shared_phi` (φ hidden layers shared by the convolutions, run once per forward),
`velocity_skip` (a learnable pos + τ·vel term), `velocity_attrs` (velocities into φ), `feature_attrs`
(the invariants of each convolution's input into its φ), `centered_input` (pos − the system's mean
as an input) and `position_updates` (particles moved between convolutions)."""

from __future__ import annotations

import pytest
import torch
from test_models import SMALL_CONV, _particles

from steerable.equivariance import model_error
from steerable.kernels.implicit import ImplicitKernel, share_trunk
from steerable.models.blocks import add_self_loops
from steerable.models.nbody import NBodyModel


def _model(shared: bool) -> NBodyModel:
    torch.manual_seed(0)
    return NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV, shared_phi=shared)


def test_trunk_runs_once_per_forward_and_matches_separate_evaluation(monkeypatch):
    model = _model(True).train()
    kernels = [b.conv.kernel for b in model.blocks] + [model.readout.kernel]
    assert all(k.mlp is kernels[0].mlp and k.window is kernels[0].window for k in kernels)
    assert len({id(k.hom) for k in kernels}) == len(kernels)  # each convolution keeps its Hom layer
    calls = []
    original = ImplicitKernel._hidden
    monkeypatch.setattr(ImplicitKernel, "_hidden", lambda self, *a: calls.append(1) or original(self, *a))
    batch = _particles(torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        shared = model(batch)
        assert len(calls) == 1
        trunk, model.trunk = model.trunk, None  # every kernel evaluates the shared layers itself
        separate = model(batch)
        model.trunk = trunk
    assert len(calls) == 1 + len(kernels)
    torch.testing.assert_close(shared, separate, rtol=1e-6, atol=1e-6)


def test_shared_phi_model_is_equivariant_and_smaller():
    shared, plain = _model(True), _model(False)
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in plain.parameters())
    assert model_error(shared.eval(), _particles(torch.Generator().manual_seed(4))) <= 1e-5


def test_gradients_reach_the_shared_layers_from_every_convolution():
    model = _model(True).train()
    out = model(_particles(torch.Generator().manual_seed(5)))
    grads = torch.autograd.grad(out.square().sum(), [model.blocks[0].conv.kernel.mlp[0].linear.weights,
                                                     model.readout.kernel.hom.linear.weights])
    assert all(g.abs().sum() > 0 for g in grads)


def test_shared_trunk_refusals():
    with pytest.raises(ValueError, match="shared_phi needs implicit kernels"):
        NBodyModel(group={"name": "so3"}, kernel="analytic", num_features=4, num_layers=1, shared_phi=True)
    model = _model(True)
    kernel = model.blocks[0].conv.kernel
    with model.trunk.scope(), pytest.raises(ValueError, match="must see the same edges"):
        kernel.hidden(torch.randn(6, 3), torch.randn(6, 3))
        kernel.hidden(torch.randn(7, 3), torch.randn(7, 3))
    other = ImplicitKernel(kernel.group, kernel.in_type, kernel.out_type, channels=2)
    with pytest.raises(ValueError, match="cannot share"):
        share_trunk([kernel, other])


def test_velocity_skip_starts_from_constant_velocity_and_stays_equivariant():
    torch.manual_seed(0)
    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV, velocity_skip=1.0)
    batch = _particles(torch.Generator().manual_seed(6))
    model.eval()
    with torch.no_grad():
        with_skip = model(batch)
        model.tau.zero_()
        without = model(batch)
        model.tau.fill_(1.0)
    torch.testing.assert_close(with_skip - without, batch.vel)
    assert model_error(model, batch) <= 1e-5
    model.train()
    (grad,) = torch.autograd.grad(model(batch).square().sum(), [model.tau])
    assert grad.abs() > 0


def _system_shifted(batch, shifts: torch.Tensor):
    """A copy of ``batch`` with system b's positions moved by ``shifts[b]`` (each system its own shift)."""
    moved = batch.clone()
    moved.pos = batch.pos + shifts[batch.batch]
    return moved


@pytest.mark.parametrize("options", [{"velocity_attrs": True}, {"centered_input": True},
                                     {"velocity_attrs": True, "centered_input": True}])
def test_velocity_attrs_and_centered_input_stay_equivariant(options):
    batch = _particles(torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV, **options).eval()
    assert model_error(model, batch) <= 1e-5
    # a separate translation per system: predictions move with their own system only
    shifts = torch.randn(int(batch.num_graphs), 3, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(model(_system_shifted(batch, shifts)), model(batch) + shifts[batch.batch],
                                   rtol=1e-5, atol=1e-5)
    conv = model.blocks[0].conv
    # φ's attributes: the charge product, then (charge[, vel]) of source and target
    assert conv.kernel.attr_size == 1 + 2 * (1 + 3 * options.get("velocity_attrs", False))
    assert conv.in_type.size == 4 + 3 * options.get("centered_input", False)  # vel[, pos − mean], charge


def test_centered_input_sees_where_a_particle_sits_in_its_system():
    """The first convolution gets (vel, pos − its own system's mean, charge) per particle."""
    batch = _particles(torch.Generator().manual_seed(9))
    torch.manual_seed(0)
    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV,
                       centered_input=True).eval()
    centred = batch.pos - torch.stack([batch.pos[batch.batch == b].mean(0) for b in range(3)])[batch.batch]
    inputs = torch.cat([batch.vel, centred, batch.charge], dim=-1)
    seen = []
    hook = model.blocks[0].conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(batch)
    hook.remove()
    torch.testing.assert_close(seen[0], inputs)


@pytest.mark.parametrize("option", ["velocity_attrs", "feature_attrs"])
def test_attribute_options_need_implicit_kernels(option):
    with pytest.raises(ValueError, match=f"{option} needs implicit kernels"):
        NBodyModel(group={"name": "so3"}, kernel="analytic", num_features=4, num_layers=1, **{option: True})


def test_feature_attrs_make_the_kernels_depend_on_the_features():
    """Each φ gets (charge, asinh of its input's invariants): the charge and |vel| for the first convolution,
    4 scalars and 4 vector norms of the hidden features after it; O(3)-equivariant with reflections."""
    batch = _particles(torch.Generator().manual_seed(10))
    torch.manual_seed(0)
    model = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV,
                       feature_attrs=True).eval()
    assert model_error(model, batch) <= 1e-5
    sizes = [conv.kernel.attr_size for conv in [*(b.conv for b in model.blocks), model.readout]]
    assert sizes == [1 + 2 * (1 + 2), 1 + 2 * (1 + 8), 1 + 2 * (1 + 8)]
    seen = []
    hook = model.blocks[0].conv.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["node_attr"]), with_kwargs=True)
    with torch.no_grad():
        model(batch)
    hook.remove()
    torch.testing.assert_close(seen[0][:, 0:1], batch.charge)
    invariants = torch.asinh(torch.cat([batch.charge, batch.vel.norm(dim=-1, keepdim=True)], dim=-1))
    torch.testing.assert_close(seen[0][:, 1:], invariants, rtol=1e-5, atol=1e-5)
    model.train()
    out = model(batch)
    (grad,) = torch.autograd.grad(out.square().sum(), [model.blocks[1].conv.kernel.mlp[0].linear.weights])
    assert grad.abs().sum() > 0


def _moving_model() -> NBodyModel:
    torch.manual_seed(0)
    return NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV,
                      position_updates=True)


def _randomise_moves(model: NBodyModel, seed: int) -> None:
    """Give the (zero-initialised) position updates random weights."""
    with torch.no_grad():
        for move in model.moves:
            move.linear.weights.normal_(generator=torch.Generator().manual_seed(seed))


def test_position_updates_start_as_none_then_move_the_later_convolutions_geometry():
    """Zero moves at initialisation give the fixed-geometry model's output; with moves, the second
    convolution sees pos + W_0 h_0, and the output is the last moved position plus the readout."""
    batch = _particles(torch.Generator().manual_seed(11))
    moving = _moving_model().eval()
    torch.manual_seed(0)
    fixed = NBodyModel(group={"name": "o3"}, num_features=4, num_layers=2, conv=SMALL_CONV).eval()
    with torch.no_grad():
        torch.testing.assert_close(moving(batch), fixed(batch))
    _randomise_moves(moving, 12)
    with torch.no_grad():
        seen = []
        hook = moving.blocks[1].conv.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
        moving(batch)
        hook.remove()
    edge_index, edge_attr = add_self_loops(batch.edge_index, batch.pos.shape[0], batch.edge_attr)
    first = moving.blocks[0](torch.cat([batch.vel, batch.charge], -1), batch.pos, edge_index, edge_attr,
                             batch.charge)
    torch.testing.assert_close(seen[0], batch.pos + moving.moves[0](first).detach(), rtol=1e-5, atol=1e-5)
    assert (seen[0] - batch.pos).abs().max() > 1e-2


def test_position_updates_stay_equivariant_and_train():
    batch = _particles(torch.Generator().manual_seed(13))
    model = _moving_model()
    _randomise_moves(model, 14)
    model.eval()
    assert model_error(model, batch) <= 1e-5
    shifts = torch.randn(int(batch.num_graphs), 3, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        torch.testing.assert_close(model(_system_shifted(batch, shifts)), model(batch) + shifts[batch.batch],
                                   rtol=1e-5, atol=1e-5)
    fresh = _moving_model().train()  # zero moves still get a gradient: the later kernels depend on pos
    grads = torch.autograd.grad(fresh(batch).square().sum(), [m.linear.weights for m in fresh.moves])
    assert all(g.abs().sum() > 0 for g in grads)


def test_position_updates_refusals():
    with pytest.raises(ValueError, match="choose one"):
        NBodyModel(group={"name": "o3"}, num_features=4, num_layers=1, conv=SMALL_CONV,
                   position_updates=True, shared_phi=True)
    with pytest.raises(ValueError, match="maps onto a vector"):
        NBodyModel(group={"name": "o3"}, num_features=4, band_limit=0, num_layers=1, conv=SMALL_CONV,
                   position_updates=True)
