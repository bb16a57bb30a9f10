"""Implicit kernel: steerability of k itself, its nonlinearities, the two contraction paths, init scale.

The kernel constraint ``k(g·x) = ρ_out(g) k(x) ρ_in(g)ᵀ`` is checked directly on
:class:`~steerable.kernels.ImplicitKernel`; the node-wise contraction (DESIGN.md §2) is checked against
the per-edge reference on every degree layout it dispatches to.
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers.params import slow_except

from steerable.equivariance import rep_matrix, std_matrix
from steerable.fields import FieldBatchNorm, GatedNonlinearity, NormNonlinearity
from steerable.kernels import ImplicitKernel
from steerable.kernels.edge_mlp import hidden_layer_t
from steerable.nn.chunked import node_chunks
from steerable.nn.contraction import segment_layout
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import group, group_id, relative_difference

KERNEL_GROUPS = [("o3", 3), ("so3", 3), ("cone", 3), ("full_ico", 3), ("dn", 3), ("o2", 2), ("cn", 2)]


def _kernel_error(kernel: ImplicitKernel, n_edges: int = 40, seed: int = 0) -> float:
    """Max relative violation of the steerability constraint over a few group elements."""
    spec = kernel.group
    rel = torch.randn(n_edges, spec.dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        k = kernel.kernel(rel)
        errors = []
        for g in spec.sample(3, seed=seed) + [e for e in spec.sample(16, seed=seed + 1)
                                              if torch.det(std_matrix(spec, e, rel)) < 0][:1]:
            rho_out, rho_in = rep_matrix(kernel.out_type, g, k), rep_matrix(kernel.in_type, g, k)
            moved = kernel.kernel(rel @ std_matrix(spec, g, rel).T)
            errors.append(relative_difference(moved, rho_out @ k @ rho_in.T))
    return max(errors)


@pytest.mark.parametrize("nonlinearity", ["gated", "norm"])
@pytest.mark.parametrize("param", KERNEL_GROUPS, ids=group_id)
def test_kernel_is_steerable(param, nonlinearity):
    G = group(*param)
    spec_in, spec_out = ("2x0e+1x1o+1x2e", "1x0o+1x1e") if G.dim == 3 else ("2x0e+1x1+1x2", "1x0o+1x1")
    kernel = ImplicitKernel(G, G.field_type(spec_in), G.field_type(spec_out), channels=4,
                            nonlinearity=nonlinearity)
    assert _kernel_error(kernel) <= 1e-5


@pytest.mark.parametrize("nonlinearity", ["gated", "norm"])
def test_broken_hom_weights_violate_the_constraint(nonlinearity, monkeypatch):
    G = group("o3")
    kernel = ImplicitKernel(G, G.field_type("1x0e+1x1o"), G.field_type("1x1o"), channels=4,
                            nonlinearity=nonlinearity)
    clean = kernel.weight_and_bias
    noise = 1e-2 * torch.randn_like(clean()[0])
    monkeypatch.setattr(kernel, "weight_and_bias", lambda a=None: (clean(a)[0] + noise, clean(a)[1]))
    assert _kernel_error(kernel) > 1e-3


@pytest.mark.parametrize("module", ["gated", "norm", "batchnorm"])
@pytest.mark.parametrize("param", [("o3", 3), ("octa", 3), ("o2", 2)], ids=group_id)
def test_field_ops_are_equivariant(param, module):
    G = group(*param)
    ft = G.field_type("2x0e+1x0o+2x1o+1x2e" if G.dim == 3 else "2x0e+1x0o+2x1+1x2", on="fiber")
    if module == "gated":
        op = GatedNonlinearity(ft)
        in_type = G.fiber.type(*ft.representations, *[G.fiber.trivial_repr] * op.num_gates)
    else:
        op = NormNonlinearity(ft) if module == "norm" else FieldBatchNorm(ft)
        in_type = ft
    x = 3 * torch.randn(64, in_type.size) + 0.5
    with torch.no_grad():
        out = op(x)
        for g in G.sample(4, seed=1):
            moved = op(x @ rep_matrix(in_type, g, x).T)
            assert relative_difference(moved, out @ rep_matrix(ft, g, out).T) <= 1e-5


@pytest.mark.parametrize("module", ["gated", "norm"])
def test_channels_first_hidden_layer_matches_forward(module):
    """φ's channels-first ``hidden_layer_t`` is ``(forward ∘ F.linear)ᵀ``, values and gradients."""
    G = group("o3", 3)
    ft = G.field_type("2x0e+1x0o+2x1o+1x0e+1x2e", on="fiber")  # runs interleave trivial and not
    op = GatedNonlinearity(ft) if module == "gated" else NormNonlinearity(ft)
    if module == "norm":
        op.bias.data.normal_()
    weight = torch.randn(ft.size + op.num_gates, 7, requires_grad=True)
    bias, x = torch.randn(weight.shape[0], requires_grad=True), torch.randn(30, 7)
    fast = hidden_layer_t(x.T, weight, bias, op.kind, op.layout.runs, op.norm_bias, False)[0].T
    fast_grads = torch.autograd.grad(fast.square().sum(), (weight, bias))
    slow = op(torch.nn.functional.linear(x, weight, bias))
    slow_grads = torch.autograd.grad(slow.square().sum(), (weight, bias))
    assert relative_difference(fast, slow) <= 1e-6
    for a, b in zip(fast_grads, slow_grads):
        assert relative_difference(a, b) <= 1e-6


def test_batch_norm_matches_its_definition():
    """Trivial channels: (x − mean)/std·γ + β per channel; other fields: x/√(E‖x_f‖²/dim f)·γ_f."""
    G = group("o3", 3)
    ft = G.field_type("2x0e+1x0o+1x1o+1x0e", on="fiber")
    norm = FieldBatchNorm(ft)
    norm.weight.data.uniform_(0.5, 2.0)
    norm.bias.data.normal_()
    x = 2 * torch.randn(500, ft.size) + 1.0
    out = norm(x)
    gamma, beta = norm.weight.detach(), norm.bias.detach()
    trivial = [0, 1, 6]
    expected = torch.empty_like(x)
    for field, c in zip([0, 1, 4], trivial):
        expected[:, c] = (x[:, c] - x[:, c].mean()) / torch.sqrt(x[:, c].var(unbiased=False) + 1e-5)
        expected[:, c] = expected[:, c] * gamma[field] + beta[c]
    for field, channels in ((2, [2]), (3, [3, 4, 5])):
        rms = torch.sqrt(x[:, channels].square().sum(1).mean() / len(channels) + 1e-5)
        expected[:, channels] = x[:, channels] / rms * gamma[field]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_folded_batch_norm_equals_applying_it():
    """φ folds each batch norm into the next linear layer; the kernel equals the layer-by-layer MLP."""
    G = group("o3")
    kernel = ImplicitKernel(G, G.field_type("2x0e+1x1o"), G.field_type("1x0e+1x1o+1x2e"), channels=4)
    rel = torch.randn(50, 3)
    folded = kernel.kernel(rel)
    feats, r = kernel.edge_features(rel)
    hidden = kernel.mlp(feats) * kernel.window(r)[:, None]  # Sequential: linear → gate → norm, applied
    w_tilde, bias = kernel.weight_and_bias()
    explicit = torch.einsum("ohi,eh->eoi", w_tilde, hidden) + kernel.window(r)[:, None, None] * bias
    assert relative_difference(folded, explicit) <= 1e-5


# --- reference vs node-wise -------------------------------------------------------------------------


def _graph(kind: str, n: int = 20, gen_seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(gen_seed)
    if kind == "variable":  # random degrees, nodes 15..19 receive no edges
        return torch.stack([torch.randint(0, n, (60,), generator=gen),
                            torch.randint(0, 15, (60,), generator=gen)])
    if kind == "variable_sorted":
        edge_index = _graph("variable", n, gen_seed)
        return edge_index[:, torch.argsort(edge_index[1], stable=True)]
    if kind == "fixed":  # kNN-like: 4 edges per target, grouped by target
        return torch.stack([torch.randint(0, n, (4 * n,), generator=gen),
                            torch.arange(n).repeat_interleave(4)])
    if kind == "hub":  # one target with 40 edges, the others 1 (padding would be > 4x the edges)
        dst = torch.cat([torch.zeros(40, dtype=torch.long), torch.arange(1, n)])
        return torch.stack([torch.randint(0, n, (dst.numel(),), generator=gen), dst])
    if kind == "empty":
        return torch.zeros(2, 0, dtype=torch.long)
    raise ValueError(kind)


LAYOUT = {"variable": "padded", "variable_sorted": "padded", "fixed": "fixed", "hub": "scatter",
          "empty": "scatter"}


def _forward_and_grads(conv, x, pos, edge_index, path):
    conv.path = path
    conv.zero_grad()
    x, pos = x.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    out = conv(x, pos, edge_index)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights).sum().backward()
    params = [(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in conv.parameters()]
    grads = torch.cat([x.grad.flatten(), pos.grad.flatten(), *params])
    return out.detach(), grads


# every layout and both aggregations in the fast suite; the rest of the product under `slow`
AGREE = slow_except([(kind, aggr) for kind in sorted(LAYOUT) for aggr in ("mean", "add")],
                    {("empty", "mean"), ("fixed", "add"), ("hub", "mean"), ("variable", "add"),
                     ("variable_sorted", "mean")}, unpack=True)
CHUNKED = slow_except([(kind, aggr, chunk) for kind in sorted(LAYOUT) for aggr in ("mean", "add")
                       for chunk in (1, 7, 1000)],
                      {("empty", "add", 7), ("fixed", "mean", 7), ("hub", "add", 1), ("variable", "mean", 1),
                       ("variable_sorted", "add", 1000)}, unpack=True)


@pytest.mark.parametrize("kind, aggr", AGREE)
def test_reference_and_nodewise_agree(kind, aggr):
    edge_index = _graph(kind)
    assert segment_layout(edge_index[1], 20).mode == LAYOUT[kind], "graph does not hit the intended layout"
    conv = ImplicitPointConv(group("o3"), "2x0e+1x1o+1x2e", "2x0e+1x1o", aggr=aggr, channels=4)
    x, pos = torch.randn(20, conv.in_type.size), torch.randn(20, 3)
    out_ref, grad_ref = _forward_and_grads(conv, x, pos, edge_index, "reference")
    out_node, grad_node = _forward_and_grads(conv, x, pos, edge_index, "nodewise")
    assert relative_difference(out_node, out_ref) <= 1e-5
    assert relative_difference(grad_node, grad_ref) <= 1e-5
    if kind == "variable":
        isolated = torch.arange(15, 20)
        bias = torch.zeros(conv.out_type.size)
        bias[conv.out_layout.trivial_channel] = conv.bias.detach()
        torch.testing.assert_close(out_node[isolated], bias.expand(5, -1))  # no messages: bias only


@pytest.mark.parametrize("kind, aggr, chunk_edges", CHUNKED)
def test_chunked_nodewise_agrees_with_reference(kind, aggr, chunk_edges):
    """φ recomputed chunk by chunk (batch-norm statistics over all edges) = the per-edge reference."""
    edge_index = _graph(kind)
    conv = ImplicitPointConv(group("o3"), "2x0e+1x1o+1x2e", "2x0e+1x1o", aggr=aggr, channels=4,
                             chunk_edges=chunk_edges)
    x, pos = torch.randn(20, conv.in_type.size), torch.randn(20, 3)
    out_ref, grad_ref = _forward_and_grads(conv, x, pos, edge_index, "reference")
    out_node, grad_node = _forward_and_grads(conv, x, pos, edge_index, "nodewise")
    assert relative_difference(out_node, out_ref) <= 1e-5
    assert relative_difference(grad_node, grad_ref) <= 1e-5


@pytest.mark.parametrize("options", [dict(batch_norm=False), dict(nonlinearity="norm", n_layers=4),
                                     dict(training=False)], ids=["no_bn", "norm_4_layers", "eval"])
def test_chunked_nodewise_options(options):
    options = dict(options)
    training = options.pop("training", True)
    conv = ImplicitPointConv(group("so3"), "2x0e+1x1o", "1x0e+2x1o", channels=4, chunk_edges=5, **options)
    conv.train(training)
    edge_index, x, pos = _graph("variable"), torch.randn(20, 5), torch.randn(20, 3)
    out_ref, grad_ref = _forward_and_grads(conv, x, pos, edge_index, "reference")
    out_node, grad_node = _forward_and_grads(conv, x, pos, edge_index, "nodewise")
    assert relative_difference(out_node, out_ref) <= 1e-5
    assert relative_difference(grad_node, grad_ref) <= 1e-5


def test_chunked_updates_batch_norm_statistics_once():
    conv = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", channels=4, chunk_edges=3)
    norms = [m for m in conv.modules() if isinstance(m, FieldBatchNorm)]
    twin = ImplicitPointConv(group("o3"), "1x0e+1x1o", "1x0e+1x1o", channels=4)
    twin.load_state_dict(conv.state_dict())
    edge_index, x, pos = _graph("variable"), torch.randn(20, 4), torch.randn(20, 3)
    conv(x, pos, edge_index).sum().backward()  # backward recomputes φ: must not touch the statistics
    twin(x, pos, edge_index)
    twin_norms = [m for m in twin.modules() if isinstance(m, FieldBatchNorm)]
    for a, b in zip(norms, twin_norms):
        torch.testing.assert_close(a.running_var, b.running_var)
        torch.testing.assert_close(a.running_mean, b.running_mean)
        assert not torch.equal(a.running_var, torch.ones_like(a.running_var))


def test_node_chunks_cover_every_node_and_edge():
    deg = torch.tensor([3, 0, 5, 1, 1, 0, 9, 2, 0])
    chunks = node_chunks(deg, 4)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(deg) and chunks[-1][3] == int(deg.sum())
    for (n0, n1, e0, e1), nxt in zip(chunks, chunks[1:] + [None]):
        assert int(deg[n0:n1].sum()) == e1 - e0
        assert e1 - e0 <= 4 + int(deg[n0:n1].max())
        if nxt is not None:
            assert (n1, e1) == (nxt[0], nxt[2])
    with pytest.raises(ValueError, match="chunk_edges"):
        node_chunks(deg, 0)


@pytest.mark.parametrize("chunk_edges", [None, 8])
def test_reference_and_nodewise_agree_bipartite_with_attributes(chunk_edges):
    """Unsorted bipartite edges with edge and node attributes (chunked: sorted and cut internally)."""
    G = group("cone")
    conv = ImplicitPointConv(G, "2x0e+1x1o", "1x0e+1x1o", edge_attr_type="3x0e", node_attr_type="1x1o",
                             channels=4, chunk_edges=chunk_edges)
    edge_index = torch.stack([torch.randint(0, 20, (50,)), torch.randint(0, 7, (50,))])
    args = (torch.randn(20, conv.in_type.size), (torch.randn(20, 3), torch.randn(7, 3)), edge_index)
    kwargs = dict(edge_attr=torch.randn(50, 3), node_attr=(torch.randn(20, 3), torch.randn(7, 3)))
    conv.path = "reference"
    reference = conv(*args, **kwargs)
    conv.path = "nodewise"
    assert relative_difference(conv(*args, **kwargs), reference) <= 1e-5


# --- dtype isolation and initial scale ----------------------------------------------------------------


def test_casting_one_layer_leaves_others_alone():
    """escnn caches bases; casting one layer must neither change another nor break new constructions."""
    from steerable.nn.analytic import AnalyticPointConv

    G = group("o3")
    for cls, kwargs in ((ImplicitPointConv, dict(channels=2)), (AnalyticPointConv, dict(n_rings=2))):
        first = cls(G, "1x0e+1x1o+1x2e", "1x0e+1x1o", **kwargs)
        second = cls(G, "1x0e+1x1o+1x2e", "1x0e+1x1o", **kwargs).double()
        third = cls(G, "1x0e+1x1o+1x2e", "1x0e+1x1o", **kwargs)
        x, pos, edge_index = torch.randn(10, 9), torch.randn(10, 3), _graph("fixed", 10)
        assert first(x, pos, edge_index).dtype == torch.float32
        assert third(x, pos, edge_index).dtype == torch.float32
        assert second(x.double(), pos.double(), edge_index).dtype == torch.float64


@pytest.mark.parametrize("name, between", slow_except(
    [(name, between) for name in ("o3", "so3", "octa") for between in ("plain", "batchnorm+norm")],
    {("o3", "batchnorm+norm"), ("octa", "plain")}, unpack=True))
def test_initial_scale_through_depth(name, between):
    """4 layers on unit-variance input keep the output std within a factor 3 of the input (train mode).

    One incoming edge per node, at a quarter of the window width (the Gaussian window, a deliberate
    localisation prior, is ≈ 0.94 there): this isolates the kernel's initialisation. (Averaging d
    independent messages scales by 1/√d, summing by √d: that is the aggregation, not the init; see the
    next test.)
    """
    G, spec = group(name), "4x0e+2x1o+1x2e"
    ft, n = G.field_type(spec), 256
    gen = torch.Generator().manual_seed(0)
    pos_src = torch.randn(n, 3, generator=gen)
    offsets = 0.5 * torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1)  # |x_j - x_i|
    pos = (pos_src, pos_src + offsets)  # target i receives one edge, from source i
    edge_index = torch.arange(n).repeat(2, 1)
    x = torch.randn(n, ft.size, generator=gen)
    h = x
    for layer in range(4):
        h = ImplicitPointConv(G, spec, spec, window_width=2.0)(h, pos, edge_index)
        if between != "plain" and layer < 3:
            h = NormNonlinearity(ft)(FieldBatchNorm(ft)(h))
    ratio = float(h.std() / x.std())
    assert 1 / 3 <= ratio <= 3, f"output/input std after 4 layers: {ratio:.3g}"


@pytest.mark.parametrize("aggr", slow_except(["mean", "add"], {"mean"}))
def test_scale_with_many_neighbours_and_batch_norm(aggr):
    """16 neighbours, conv → batch norm → nonlinearity blocks (as in the models): std ≈ d^∓½ of the input."""
    G, spec, n, degree = group("o3"), "4x0e+2x1o+1x2e", 256, 16
    ft = G.field_type(spec)
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(n, 3, generator=gen) * 0.5
    edge_index = torch.stack([torch.randint(0, n, (degree * n,), generator=gen),
                              torch.arange(n).repeat_interleave(degree)])
    x = torch.randn(n, ft.size, generator=gen)
    h = x
    for layer in range(4):
        h = ImplicitPointConv(G, spec, spec, aggr=aggr)(h, pos, edge_index)
        if layer < 3:
            h = NormNonlinearity(ft)(FieldBatchNorm(ft)(h))
    ratio = float(h.std() / x.std()) * (degree ** 0.5 if aggr == "mean" else degree ** -0.5)
    assert 1 / 3 <= ratio <= 3, f"degree-corrected output/input std: {ratio:.3g}"


# --- memory of building the basis --------------------------------------------------------------


def test_regular_fields_of_a_large_group_are_refused_before_the_build(monkeypatch):
    """ico regular → regular would ask escnn for ~18.7 GB while normalising the Hom basis: refused from
    characters alone, before the 3600-dim tensor product (about a minute) or its basis is built."""
    from steerable.kernels.basis_memory import MAX_BASIS_GB_ENV, BasisTooLarge

    monkeypatch.delenv(MAX_BASIS_GB_ENV, raising=False)
    spec = group("ico")
    regular = spec.field_type("regular")  # escnn's own regular representation, built before timing
    start = time.perf_counter()
    with pytest.raises(BasisTooLarge, match=r"regular \(size 60\) fields of group 'ico' needs about 18\.7 GB "
                                            r".*over the 8 GB limit; use smaller fields, e\.g\. irreps "
                                            r"'1x0e\+1x1o\+1x2e' instead of regular ones, or raise "
                                            r"STEERABLE_MAX_BASIS_GB"):
        ImplicitPointConv(spec, regular, regular)
    assert time.perf_counter() - start < 10


def test_basis_estimate_counts_escnns_basis_and_the_limit_is_configurable(monkeypatch):
    """The character count of basis elements equals the dimension of escnn's Hom basis; a lower limit
    refuses a layer that builds under the default one; a bad limit is named."""
    from steerable.kernels.basis_memory import MAX_BASIS_GB_ENV, BasisTooLarge, hom_block_sizes

    monkeypatch.delenv(MAX_BASIS_GB_ENV, raising=False)
    spec = group("dn", N=3)
    conv = ImplicitPointConv(spec, "regular", "regular", channels=2)
    kernel = conv.kernel
    sizes = hom_block_sizes(spec, kernel.hidden_type, conv.in_type, conv.out_type)
    multiplicity = {rep.name: kernel.hidden_type.representations.count(rep)
                    for rep in kernel.hidden_type.representations}
    distinct = list({rep.name: rep for rep in kernel.hidden_type.representations})
    expected = sum(multiplicity[name] * b for name, (b, o, _, _) in zip(distinct, sizes, strict=True))
    assert all(o == 36 for _, o, _, _ in sizes)
    assert kernel.hom.linear.basisexpansion.dimension() == expected
    octa = group("octa")
    monkeypatch.setenv(MAX_BASIS_GB_ENV, "0.1")  # octa regular → regular needs 72·576²·8 B = 0.19 GB
    with pytest.raises(BasisTooLarge, match=r"needs about 0\.2 GB .* over the 0\.1 GB limit"):
        ImplicitPointConv(octa, "regular", "regular")
    monkeypatch.setenv(MAX_BASIS_GB_ENV, "lots")
    with pytest.raises(ValueError, match="STEERABLE_MAX_BASIS_GB must be a positive number of GB, got 'lo"):
        ImplicitPointConv(octa, "regular", "regular")


def test_small_regular_fields_still_build():
    conv = ImplicitPointConv(group("cn", N=4), "regular", "2xregular", channels=2)
    x = torch.randn(5, conv.in_type.size)
    pos = torch.randn(5, 3)
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    assert conv(x, pos, edge_index).shape == (5, 8)
