"""Analytic baseline adapter: same results as escnn's own layer, same signature as the implicit conv.

Equivariance of the analytic conv for every registry group is in ``test_point_conv.py``.
"""

from __future__ import annotations

import pytest
import torch
from escnn.nn import GeometricTensor

from steerable.nn.analytic import AnalyticPointConv
from steerable.testing import assert_equivariant_point_module, group, group_id, random_point_inputs


@pytest.mark.parametrize("param", [("o3", 3), ("octa", 3), ("o2", 2)], ids=group_id)
def test_matches_escnn_forward(param):
    """The adapter computes exactly escnn's R3PointConv/R2PointConv (edge_delta = pos_src − pos_dst)."""
    name, dim = param
    spec = "1x0e+1x1o" if dim == 3 else "1x0e+1x1"
    conv = AnalyticPointConv(group(name, dim), spec, spec, n_rings=2)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    ours = conv(x, pos, edge_index)
    theirs = conv.conv(GeometricTensor(x, conv.in_type, coords=pos), edge_index).tensor
    torch.testing.assert_close(ours, theirs)


def test_geometric_tensor_io_and_eval_mode():
    conv = AnalyticPointConv(group("o3"), "2x0e+1x1o", "1x0e+1x1o", n_rings=2)
    x, pos, edge_index = random_point_inputs(conv.in_type)
    train_keys = set(conv.state_dict())
    out = conv(GeometricTensor(x, conv.in_type, coords=pos), pos, edge_index)
    assert isinstance(out, GeometricTensor) and out.type == conv.out_type
    conv.eval()
    assert set(conv.state_dict()) == train_keys, "train/eval must not change the checkpoint keys"
    torch.testing.assert_close(conv(x, pos, edge_index), out.tensor)
    assert_equivariant_point_module(conv, x, pos, edge_index)


def test_refuses_attributes():
    with pytest.raises(ValueError, match="attributes"):
        AnalyticPointConv(group("o3"), "1x0e", "1x0e", edge_attr_type="3x0e")
    with pytest.raises(ValueError, match="attributes"):
        AnalyticPointConv(group("o3"), "1x0e", "1x0e", node_attr_type="1x0e")


def test_model_options_reach_the_analytic_conv_or_are_refused():
    """``model.conv.bias`` and ``model.conv.aggr`` are not silently dropped by ``model.kernel=analytic``."""
    from steerable.models.blocks import build_point_conv

    G = group("o3")
    in_type, out_type = G.field_type("1x0e+1x1o"), G.field_type("1x0e+1x1o")
    with_bias = build_point_conv("analytic", G, in_type, out_type, {"n_rings": 2})
    without = build_point_conv("analytic", G, in_type, out_type, {"n_rings": 2, "bias": False})
    assert len(list(without.parameters())) == len(list(with_bias.parameters())) - 1
    with pytest.raises(ValueError, match="aggr='add'"):
        build_point_conv("analytic", G, in_type, out_type, {"aggr": "add"})
