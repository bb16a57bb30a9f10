"""EquivariantLinear's sparse basis expansion ``vec(W) = M θ`` must equal escnn's own expansion.

Covers contiguous and interleaved field types (escnn places non-contiguous blocks by index grids),
regular representations of finite groups, planar groups, layers without any equivariant map, and
the fallback to escnn's expansion when the table does not reproduce it.
"""

from __future__ import annotations

import pytest
import torch
from helpers.params import slow_except

from steerable.kernels import linear as linear_module
from steerable.kernels.linear import EquivariantLinear
from steerable.testing import group, relative_difference

CASES = [
    (("so3", 3), "2x0e+2x1o", "3x0e+1x1o+1x2e"),
    (("o3", 3), "1x0e+1x1o+1x0e+1x2e+1x1o", "1x1o+2x0e+1x0o+1x1o"),  # interleaved: index-grid placement
    (("full_ico", 3), "regular", "1x0e+regular"),
    (("dn", 3), "2x0e+1x1o", "regular+1x1o"),
    (("o2", 2), "1x0e+1x1+1x2", "1x1+1x0o+1x0e"),
    (("cn", 2), "regular", "1x0e+1x1"),
]


IDS = [f"{case[0][0]}-{i}" for i, case in enumerate(CASES)]


def _random_theta(layer: EquivariantLinear, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.linear.weights.copy_(torch.randn(layer.linear.weights.shape, generator=gen))
        if layer.linear.bias is not None:
            layer.linear.bias.copy_(torch.randn(layer.linear.bias.shape, generator=gen))


# the regular representation of full_ico (120-dim) is slow; dn's regular representation is fast
@pytest.mark.parametrize("param, spec_in, spec_out", slow_except(CASES, set(CASES) - {CASES[2]}, unpack=True),
                         ids=IDS)
def test_sparse_expansion_equals_escnn(param, spec_in, spec_out):
    G = group(*param)
    layer = EquivariantLinear(G.field_type(spec_in, on="fiber"), G.field_type(spec_out, on="fiber"))
    assert layer.sparse_expansion
    _random_theta(layer, seed=1)  # not the weights the table was checked against
    weight, bias = layer.weight_and_bias()
    expected_weight, expected_bias = layer.linear.expand_parameters()
    assert relative_difference(weight, expected_weight) <= 1e-5  # float32 sums in another order
    torch.testing.assert_close(bias, expected_bias)
    probe = torch.randn_like(weight)
    grad = torch.autograd.grad((weight * probe).sum(), layer.linear.weights)[0]
    expected_grad = torch.autograd.grad((expected_weight * probe).sum(), layer.linear.weights)[0]
    assert relative_difference(grad, expected_grad) <= 1e-5


def test_float64_cast_keeps_matching_escnn():
    G = group("o3")
    spec_out = G.field_type("1x0e+1x1o+1x2e", on="fiber")
    layer = EquivariantLinear(G.field_type("2x0e+1x1o", on="fiber"), spec_out).double()
    _random_theta(layer, seed=2)
    weight, _ = layer.weight_and_bias()
    assert weight.dtype == torch.float64
    assert relative_difference(weight, layer.linear.expand_parameters()[0]) <= 1e-12


@pytest.mark.parametrize("param", [("o3", 3), ("ico", 3), ("o2", 2)], ids=lambda p: p[0])
def test_float64_layers_commute_exactly_with_tensor_product_types(param):
    """escnn samples its bases in float32 (its change of basis of ρ_o ⊗ ρ_i too): the table is built
    from a float64 resampling, and every cast re-derives the buffer from that, so a float64 layer
    (the kernel MLP's Hom layer) is equivariant to rounding (escnn's float32 table: 2e-8), and
    float32 → float64 round trips lose nothing."""
    G = group(*param)
    hidden = "2x0e+1x1o+1x2e" if G.dim == 3 else "2x0e+1x1+1x2"
    pairs = ("1x1o", "1x2e") if G.dim == 3 else ("1x1", "1x2")
    irrep = {spec: G.field_type(spec, on="fiber").representations[0] for spec in pairs}
    hom = G.fiber.type(*[G.tensor(irrep[a], irrep[b]) for a in pairs for b in pairs])
    layer = EquivariantLinear(G.field_type(hidden, on="fiber"), hom)
    _random_theta(layer, seed=3)
    layer.double().float().double()
    weight, _ = layer.weight_and_bias()
    assert weight.dtype == torch.float64
    for g in [G.group.sample() for _ in range(3)]:
        rho_in = torch.as_tensor(layer.in_type.representation(g), dtype=torch.float64)
        rho_out = torch.as_tensor(layer.out_type.representation(g), dtype=torch.float64)
        assert relative_difference(weight @ rho_in, rho_out @ weight) <= 1e-13
    assert relative_difference(weight, layer.linear.expand_parameters()[0].double()) <= 1e-6  # escnn: float32


def test_no_equivariant_map_gives_zero_matrix():
    G = group("so3")
    layer = EquivariantLinear(G.field_type("1x1o", on="fiber"), G.field_type("1x0e", on="fiber"))
    weight, _ = layer.weight_and_bias()
    assert weight.shape == (1, 3) and not weight.any()


def test_wrong_table_falls_back_to_escnn(monkeypatch, caplog):
    real = linear_module.expansion_table

    def shuffled(linear, *args):
        rows, cols, values = real(linear, *args)
        return rows, cols.flip(0), values

    monkeypatch.setattr(linear_module, "expansion_table", shuffled)
    G = group("so3")
    layer = EquivariantLinear(G.field_type("2x0e+1x1o", on="fiber"), G.field_type("1x0e+2x1o", on="fiber"))
    assert not layer.sparse_expansion
    assert "differs from escnn" in caplog.text
    torch.testing.assert_close(layer.weight_and_bias()[0], layer.linear.expand_parameters()[0])


def _layer(seed: int = 0) -> EquivariantLinear:
    G = group("so3")
    layer = EquivariantLinear(G.field_type("2x0e+1x1o", on="fiber"), G.field_type("1x0e+2x1o", on="fiber"))
    _random_theta(layer, seed)
    return layer


def test_expansion_cached_only_without_gradients():
    layer = _layer().eval()
    with torch.no_grad():
        first, second = layer.weight_and_bias()[0], layer.weight_and_bias()[0]
    assert first is second  # reused while θ is unchanged
    weight, _ = layer.weight_and_bias()  # gradients enabled: a fresh expansion in eval mode too
    assert weight.requires_grad and weight is not first
    (weight * torch.randn_like(weight)).sum().backward()
    assert layer.linear.weights.grad is not None and layer.linear.weights.grad.abs().sum() > 0


@pytest.mark.parametrize("change", ["load_state_dict", "optimizer_step", "data_write", "double"])
def test_cache_follows_parameter_changes_in_eval_mode(change):
    """A cached expansion must never outlive the θ it came from (a stale one gives silently wrong outputs)."""
    layer, other = _layer(seed=3).eval(), _layer(seed=4)
    with torch.no_grad():
        layer.weight_and_bias()  # fill the cache
    if change == "load_state_dict":
        layer.load_state_dict(other.state_dict())
    elif change == "optimizer_step":
        layer.linear.weights.grad = torch.ones_like(layer.linear.weights)
        torch.optim.SGD(layer.parameters(), lr=0.5).step()
    elif change == "data_write":  # e.g. an EMA update: bypasses autograd's version counter
        layer.linear.weights.data.mul_(2.0)
    else:
        layer.double()
    with torch.no_grad():
        weight, bias = layer.weight_and_bias()
        expected_weight, expected_bias = layer.linear.expand_parameters()
    assert weight.dtype == layer.linear.weights.dtype
    assert relative_difference(weight, expected_weight) <= 1e-5
    torch.testing.assert_close(bias, expected_bias)


def test_bias_table_follows_a_loaded_bias_expansion():
    """A checkpoint carries escnn's ``bias_expansion``: the sparse bias table is rebuilt from it."""
    G = group("o3")
    layer = EquivariantLinear(G.field_type("2x0e+1x1o", on="fiber"),
                              G.field_type("1x0e+1x1o+1x0e", on="fiber"))
    _random_theta(layer, seed=2)
    state = layer.state_dict()
    state["linear.bias_expansion"] = state["linear.bias_expansion"] * 2.0
    layer.load_state_dict(state)
    with torch.no_grad():
        bias = layer.weight_and_bias()[1]
    torch.testing.assert_close(bias, layer.linear.bias_expansion @ layer.linear.bias)
    assert float(bias.abs().max()) > 0
