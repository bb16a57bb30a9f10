"""``compile_mlp=True``: the per-edge work of φ through ``torch.compile`` (steerable.kernels.edge_mlp).

The compiled path must compute the same function as the eager one (float64: to rounding), stay
equivariant in float32, and share its graphs between layers of equal types (a model with many
convolutions must not compile once per layer). Compiling takes seconds per graph on CPU, so the
tests reuse a few small shapes.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from steerable.kernels import edge_mlp
from steerable.kernels.edge_mlp import cpu_compiler
from steerable.nn.point_conv import ImplicitPointConv
from steerable.testing import (
    assert_equivariant_point_module,
    group,
    random_graph,
    random_point_inputs,
    relative_difference,
)

TYPES = ("2x0e+1x1o+1x2e", "2x0e+1x1o")
pytestmark = pytest.mark.skipif(not cpu_compiler(), reason="torch.compile on CPU needs a C++ compiler (g++)")


def _conv(compiled: bool, dtype=torch.float32, **kwargs) -> ImplicitPointConv:
    torch.manual_seed(0)
    conv = ImplicitPointConv(group("o3"), *TYPES, channels=4, compile_mlp=compiled, **kwargs)
    return conv.to(dtype)


def _output_and_grads(conv, x, pos, edge_index):
    x, pos = x.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    out = conv(x, pos, edge_index)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), torch.cat([x.grad.flatten(), pos.grad.flatten(),
                                    *[p.grad.flatten() for p in conv.parameters() if p.grad is not None]])


# the default (gated) in the fast suite; the norm nonlinearity with chunking, and eval mode, under slow
OPTIONS = [dict(), pytest.param(dict(nonlinearity="norm", chunk_edges=16), marks=pytest.mark.slow),
           pytest.param(dict(training=False), marks=pytest.mark.slow)]


@pytest.mark.parametrize("options", OPTIONS, ids=["gated", "norm_chunked", "eval"])
def test_compiled_equals_eager(options):
    """Same outputs and gradients (inputs, positions, every parameter) as eager, in float64."""
    options = dict(options)
    training = options.pop("training", True)
    pos, edge_index = random_graph(num_nodes=30, num_edges=120, dtype=torch.float64)
    x = torch.randn(30, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for compiled in (False, True):
        conv = _conv(compiled, torch.float64, **options).train(training)
        results.append(_output_and_grads(conv, x, pos, edge_index))
    (out_eager, grad_eager), (out_compiled, grad_compiled) = results
    assert relative_difference(out_compiled, out_eager) <= 1e-10
    assert relative_difference(grad_compiled, grad_eager) <= 1e-10


def test_compiled_conv_is_equivariant_in_float32():
    """Random O(3) elements including a reflection, float32, 1e-5 (as every other layer)."""
    conv = _conv(True)
    x, pos, edge_index = random_point_inputs(conv.in_type, seed=1)
    assert_equivariant_point_module(conv, x, pos, edge_index, n_elements=4)


def test_layers_of_equal_types_share_compiled_graphs():
    """A second layer (other weights, other edge count) reuses the graphs: no new compilation."""
    pos, edge_index = random_graph(num_nodes=20, num_edges=60, seed=2)
    first = _conv(True)
    first(torch.randn(20, first.in_type.size), pos, edge_index).sum().backward()
    graphs = counters["stats"]["unique_graphs"]
    second = _conv(True)
    pos, edge_index = random_graph(num_nodes=25, num_edges=90, seed=3)
    second(torch.randn(25, second.in_type.size), pos, edge_index).sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs


def test_missing_cpu_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(edge_mlp, "cpu_compiler", lambda: None)
    conv = _conv(True)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        conv(x, pos, edge_index)
