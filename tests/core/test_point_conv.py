"""Point convolutions: equivariance for every registry group (implicit and analytic), field types,
attributes, bipartite graphs, a broken kernel that must fail, degenerate geometry.

All equivariance checks run in float32 at 1e-5: measured errors are ≤ 6e-7 for every group with both
kernels (escnn's analytic bases included), so no float64 is needed; see ``python -m steerable.check``.
The fast suite checks one group per family (:data:`helpers.params.GROUP_REPRESENTATIVES`), ``slow``
the other groups.
"""

from __future__ import annotations

import pytest
import torch
from escnn.nn import GeometricTensor
from helpers.params import GROUP_REPRESENTATIVES, slow_except

from steerable.nn.analytic import AnalyticPointConv
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import (
    assert_equivariant_point_module,
    group,
    group_id,
    point_module_errors,
    random_graph,
    random_point_inputs,
    registry_groups,
    vector_spec,
)

SMALL = dict(channels=2, n_layers=2)  # small kernel MLP: fast, still exercises every code path
KERNELS = {"implicit": (ImplicitPointConv, SMALL), "analytic": (AnalyticPointConv, dict(n_rings=2))}


def _types(dim: int) -> tuple[str, str]:
    """Small mixed types with a pseudo-scalar, so parity and every kernel block type are exercised."""
    if dim == 3:
        return "1x0e+1x0o+1x1o+1x2e", "1x0e+1x0o+1x1o"
    return "1x0e+1x0o+1x1+1x2", "1x0e+1x0o+1x1"


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("param", slow_except(registry_groups(), GROUP_REPRESENTATIVES), ids=group_id)
def test_equivariance_every_group(param, kernel):
    """Every registry group, both kernels, float32, random elements incl. a reflection where G has one."""
    cls, kwargs = KERNELS[kernel]
    spec_in, spec_out = _types(param[1])
    conv = cls(group(*param), spec_in, spec_out, **kwargs)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert_equivariant_point_module(conv, x, pos, edge_index, n_elements=4)


@pytest.mark.parametrize("kernel, nonlinearity",
                         [("implicit", "gated"), ("implicit", "norm"), ("analytic", None)])
def test_mixed_types_o3(kernel, nonlinearity):
    cls, kwargs = KERNELS[kernel]
    kwargs = dict(kwargs, nonlinearity=nonlinearity) if nonlinearity else kwargs
    conv = cls(group("o3"), "2x0e+3x1o+1x2e", "4x0e+2x1o", **kwargs)
    assert (conv.in_type.size, conv.out_type.size) == (2 + 9 + 5, 4 + 6)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert conv(x, pos, edge_index).shape == (20, 10)
    assert_equivariant_point_module(conv, x, pos, edge_index)


@pytest.mark.parametrize("param", [("cone", 3), ("o2", 3), ("cyl", 3), ("fullcyl", 3), ("o2", 2)],
                         ids=group_id)
def test_high_frequency_hom_on_planar_groups(param):
    """2e → 2e kernels need Hom frequency 4 ⊗ hidden frequency 1: irreps escnn must have instantiated."""
    spec = "1x2e" if param[1] == 3 else "1x2"
    conv = ImplicitPointConv(group(*param), spec, spec, **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert_equivariant_point_module(conv, x, pos, edge_index)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("name, spec_in, spec_out", [("octa", "1xregular", "1x0e+1x1o"),
                                                     ("dn", "1x0e+1x1o", "2xregular")])
def test_regular_representations(kernel, name, spec_in, spec_out):
    cls, kwargs = KERNELS[kernel]
    conv = cls(group(name), spec_in, spec_out, **kwargs)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert_equivariant_point_module(conv, x, pos, edge_index)


def test_eval_mode_and_geometric_tensor_io():
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    conv(x, pos, edge_index)  # one train-mode pass updates the batch-norm statistics
    conv.eval()
    assert_equivariant_point_module(conv, x, pos, edge_index)
    out = conv(GeometricTensor(x, conv.in_type, coords=pos), pos, edge_index)
    assert isinstance(out, GeometricTensor) and out.type == conv.out_type
    torch.testing.assert_close(out.tensor, conv(x, pos, edge_index))
    with pytest.raises(ValueError):
        conv(GeometricTensor(torch.randn(20, 3), group("o3").field_type("1x1o"), coords=pos), pos, edge_index)



def test_eval_mode_trains_and_follows_loaded_weights():
    """Eval mode (frozen batch norms) still trains every weight, and ``load_state_dict`` takes effect."""
    source = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL)
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    source.eval(), conv.eval()
    with torch.no_grad():
        conv(x, pos, edge_index)  # an inference pass first (expanded weights cached)
    conv(x, pos, edge_index).square().sum().backward()
    assert all(p.grad is not None for p in conv.parameters())
    conv.load_state_dict(source.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(conv(x, pos, edge_index), source(x, pos, edge_index))

def _edge_vectors(edge_index: torch.Tensor, seed: int = 5) -> torch.Tensor:
    return torch.randn(edge_index.shape[1], 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attr", ["invariant", "typed"])
def test_edge_attributes(attr):
    G = group("o3")
    edge_attr_type = G.field_type("3x0e" if attr == "invariant" else "1x1o", on="fiber")
    conv = ImplicitPointConv(G, "1x0e+1x1o", "1x0e+1x1o", edge_attr_type=edge_attr_type, **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    if attr == "invariant":
        edge_attr = torch.nn.functional.one_hot(torch.arange(edge_index.shape[1]) % 3, 3).float()
    else:
        edge_attr = _edge_vectors(edge_index)
    out = conv(x, pos, edge_index, edge_attr=edge_attr)
    shuffled = conv(x, pos, edge_index, edge_attr=edge_attr.roll(1, 0))
    assert not torch.allclose(out, shuffled), "the attribute is ignored"
    assert_equivariant_point_module(conv, x, pos, edge_index, edge_attr=edge_attr,
                                    edge_attr_type=edge_attr_type if attr == "typed" else None)
    if attr == "typed":  # a vector attribute that is *not* rotated breaks equivariance: the check sees it
        assert max(point_module_errors(conv, x, pos, edge_index, edge_attr=edge_attr)) > 1e-3
    with pytest.raises(ValueError):
        conv(x, pos, edge_index)


@pytest.mark.parametrize("spec", ["2x0e", "1x1o"])
def test_node_attributes(spec):
    G = group("o3")
    node_attr_type = G.field_type(spec, on="fiber")
    conv = ImplicitPointConv(G, "1x0e+1x1o", "1x0e+1x1o", node_attr_type=node_attr_type, **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    node_attr = torch.randn(20, node_attr_type.size, generator=torch.Generator().manual_seed(9))
    out = conv(x, pos, edge_index, node_attr=node_attr)
    shuffled = conv(x, pos, edge_index, node_attr=node_attr.roll(1, 0))
    assert not torch.allclose(out, shuffled), "the attribute is ignored"
    assert_equivariant_point_module(conv, x, pos, edge_index, node_attr=node_attr,
                                    node_attr_type=node_attr_type if spec == "1x1o" else None)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_bipartite(kernel):
    """Edges from a dense set (20 points) to a subset (6 targets, e.g. after farthest-point sampling)."""
    cls, kwargs = KERNELS[kernel]
    conv = cls(group("o3"), "1x0e+1x1o", "2x0e+1x1o", **kwargs)
    (pos_src, pos_dst), edge_index = random_graph(20, 60, num_targets=6, seed=2)
    x = torch.randn(20, conv.in_type.size)
    out = conv(x, (pos_src, pos_dst), edge_index)
    assert out.shape == (6, conv.out_type.size)
    assert_equivariant_point_module(conv, x, (pos_src, pos_dst), edge_index)
    if kernel == "implicit":
        typed = ImplicitPointConv(group("o3"), "1x0e+1x1o", "2x0e+1x1o", node_attr_type="1x1o", **SMALL)
        node_attr = (torch.randn(20, 3), torch.randn(6, 3))
        assert_equivariant_point_module(typed, x, (pos_src, pos_dst), edge_index, node_attr=node_attr,
                                        node_attr_type=group("o3").field_type("1x1o", on="fiber"))


@pytest.mark.parametrize("breakage", ["linear", "weight_noise"])
def test_broken_kernel_fails_the_check(breakage, monkeypatch):
    """The equivariance check is not vacuous: a non-equivariant kernel is caught."""
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert max(point_module_errors(conv, x, pos, edge_index)) < 1e-5
    if breakage == "linear":
        index = next(i for i, m in enumerate(conv.kernel.mlp) if hasattr(m, "weight_and_bias"))
        original = conv.kernel.mlp[index]
        plain = torch.nn.Linear(original.in_type.size, original.out_type.size)
        plain.weight_and_bias = lambda: (plain.weight, plain.bias)  # same shapes, unconstrained weights
        conv.kernel.mlp[index] = plain
    else:
        clean = conv.kernel.contraction_weights  # W̃ or its block entries (with block sparsity)
        noise = 1e-2 * torch.randn_like(clean()[0])
        monkeypatch.setattr(conv.kernel, "contraction_weights",
                            lambda a=None: (clean(a)[0] + noise, *clean(a)[1:]))
    assert max(point_module_errors(conv, x, pos, edge_index)) > 1e-3
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant_point_module(conv, x, pos, edge_index)


@pytest.mark.parametrize("path", ["nodewise", "reference"])
def test_duplicate_points_are_finite(path):
    G = group("o3")
    conv = ImplicitPointConv(G, "1x0e+1x1o", "1x0e+1x1o", path=path, **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    pos = pos.clone()
    pos[1] = pos[0]  # two identical points, plus self-loops: zero relative vectors
    edge_index = torch.cat([edge_index, torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])], dim=1)
    x.requires_grad_(True)
    pos.requires_grad_(True)
    out = conv(x, pos, edge_index)
    assert torch.isfinite(out).all()
    (out ** 2).sum().backward()
    grads = [x.grad, pos.grad] + [p.grad for p in conv.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


def test_self_loops_do_not_perturb_position_gradients():
    """A self-loop's relative vector is identically zero, so it adds exactly nothing to ∂out/∂pos."""
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", aggr="add", batch_norm=False, **SMALL)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(20).repeat(2, 1)
    weights = torch.randn(20, conv.out_type.size)
    grads = []
    for edges in (edge_index, torch.cat([edge_index, loops, loops], dim=1)):
        p = pos.clone().requires_grad_(True)
        (conv(x, p, edges) * weights).sum().backward()  # linear in the messages: loop terms have no pos
        grads.append(p.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("param", [("o3", 3), ("so2_inv", 3), ("so2", 2)], ids=group_id)
def test_std_fields_are_cartesian_vectors(param):
    """``std`` outputs turn with the positions' own matrices: out(R·pos) = R·out(pos), reflections included.

    (escnn's ``1o`` is the same irrep in a (y, z, x) basis, so it would fail this check in 3-D.)
    """
    G = group(*param)
    conv = ImplicitPointConv(G, "1x0e", vector_spec(2), **SMALL).eval()
    x, pos, edge_index = random_point_inputs(conv.in_type)
    assert conv(x, pos, edge_index).shape == (20, 2 * G.dim)
    for g in G.sample(3, seed=4):
        R = torch.as_tensor(G.std_matrix(g), dtype=torch.float32)
        R2 = torch.block_diag(R, R)
        turned, expected = conv(x, pos @ R.T, edge_index), conv(x, pos, edge_index) @ R2.T
        assert ((turned - expected).norm() / expected.norm()).item() <= 1e-5
    assert_equivariant_point_module(conv, x, pos, edge_index)


def test_conv_with_no_targets():
    """A bipartite layer onto zero target nodes gives a (0, C_out) output in both implicit paths."""
    for path in ("nodewise", "reference"):
        conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e", path=path, channels=2, n_layers=2)
        x = torch.randn(4, 4, requires_grad=True)
        out = conv(x, (torch.randn(4, 3), torch.randn(0, 3)), torch.zeros(2, 0, dtype=torch.long))
        assert out.shape == (0, 1)
        out.sum().backward()


def test_float64_after_float32_and_back():
    """Casting one analytic layer must not break another layer of the same types (shared escnn bases)."""
    G = group("trivial")
    spec_in, spec_out = "2x0e+1x1o+1x2e", "2x0e+1x1o"  # equal bases inside one layer: the hardest case
    a = AnalyticPointConv(G, spec_in, spec_out, n_rings=2)
    b = AnalyticPointConv(G, spec_in, spec_out, n_rings=2).double()
    x, pos, edge_index = random_point_inputs(a.in_type)
    out_b = b(x.double(), pos.double(), edge_index)
    assert out_b.dtype == torch.float64
    assert a(x, pos, edge_index).dtype == torch.float32
    torch.testing.assert_close(b.float()(x, pos, edge_index), out_b.float())


def test_check_cli_table(capsys):
    """``python -m steerable.check`` prints one row per group and exits 0 below tolerance, 1 above."""
    from steerable.check import main

    assert main(["group=flip", "dim=2", "n_elements=2"]) == 0
    out = capsys.readouterr().out
    assert "implicit-gated f32" in out and "analytic f64" in out and "\nflip " in out
    assert main(["group=flip", "dim=2", "n_elements=2", "tol=0"]) == 1  # analytic f32 error > 0 for flip
    capsys.readouterr()
    assert main(["group=flip", "dim=all", "n_elements=2"]) == 0  # flip exists in 2-D only: no error for 3-D
    rows = [row.split()[:2] for row in capsys.readouterr().out.splitlines() if row.startswith("flip")]
    assert rows == [["flip", "2"]]
    with pytest.raises(SystemExit, match="unknown group 'nonsense' for dim=all"):
        main(["group=nonsense", "dim=all"])
    with pytest.raises(SystemExit):
        main(["colour=red"])
    with pytest.raises(SystemExit, match="N must be an integer, got 'x'"):
        main(["group=so2", "N=x"])
    with pytest.raises(SystemExit, match="needs an integer N >= 2"):  # one error, not one FAIL per cell
        main(["group=cn", "dim=2", "N=1"])


def test_a_call_in_inference_mode_does_not_poison_later_gradients():
    """Lightning validates under ``torch.inference_mode``: the caches filled there (the direction-square
    map, the expanded weights of frozen layers) must still serve autograd afterwards."""
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL).eval()
    x, pos, edge_index = torch.randn(5, 4), torch.randn(5, 3), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    with torch.inference_mode():
        conv(x, pos, edge_index)
    forces = torch.autograd.grad(conv(x, pos.requires_grad_(), edge_index).sum(), pos)[0]
    assert forces.shape == (5, 3) and forces.abs().sum() > 0
    conv.requires_grad_(False)  # frozen: the expanded weights are now cached
    with torch.inference_mode():
        conv(x, pos.detach(), edge_index)
    grad_x = torch.autograd.grad(conv(x.requires_grad_(), pos.detach(), edge_index).sum(), x)[0]
    assert grad_x.abs().sum() > 0


@pytest.mark.parametrize("path", ["nodewise", "reference"])
def test_nan_position_gives_nan_not_a_zero_length_edge(path):
    conv = ImplicitPointConv(group("o3"), "1x0e", "1x0e", path=path, **SMALL)
    x, pos, edge_index = torch.randn(3, 1), torch.randn(3, 3), torch.tensor([[2, 0], [0, 1]])
    pos[2] = float("nan")
    out = conv.eval()(x, pos, edge_index)
    assert out[0].isnan().all() and not out[1].isnan().any()  # eval: only the target of the NaN source
    assert conv.train()(x, pos, edge_index)[:2].isnan().all()  # training: the batch statistics see it


def test_kernels_that_cannot_reach_the_output_irreps():
    """With band_limit=1 φ's hidden type has no ℓ=2 field, so (Schur) a scalar → ℓ=2 kernel is zero:
    refused with the fix; a partly dead kernel is a warning naming the dead blocks."""
    G = group("o3")
    with pytest.raises(ValueError, match="identically zero.*raise band_limit"):
        ImplicitPointConv(G, "1x0e", "1x2e", **SMALL)
    conv = ImplicitPointConv(G, "1x0e", "1x2e", **{**SMALL, "band_limit": 2})
    x, pos, edge_index = random_point_inputs(conv.in_type, 10, seed=0)
    assert conv(x, pos, edge_index).abs().max() > 1e-3


def test_partly_dead_kernel_blocks_are_a_warning(caplog):
    with caplog.at_level("WARNING", logger="steerable.kernels.implicit"):
        ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x2e", **SMALL)
    assert "irrep_0,0 -> O(3):irrep_0,2 are identically zero" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="steerable.kernels.implicit"):
        ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL)
    assert "identically zero" not in caplog.text


def test_library_equivariance_check_takes_bipartite_pairs():
    from steerable.equivariance import point_module_error

    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", **SMALL).eval()
    x, pos_src, pos_dst = torch.randn(6, 4), torch.randn(6, 3), torch.randn(2, 3)
    edge_index = torch.stack([torch.arange(6), torch.tensor([0, 0, 0, 1, 1, 1])])
    assert point_module_error(conv, x, (pos_src, pos_dst), edge_index) < 1e-5
