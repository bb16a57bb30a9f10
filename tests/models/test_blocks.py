"""SteerableBlock: the identity residual only where the output lives on the input's points."""

from __future__ import annotations

import pytest
import torch

from steerable.models.blocks import SteerableBlock
from steerable.testing import group


def test_residual_block_refuses_a_bipartite_graph():
    G = group("o3")
    types = G.field_type("1x0e+1x1o"), G.field_type("1x0e+1x1o")
    block = SteerableBlock("implicit", G, *types, dict(channels=2, n_layers=2))
    x, pos_src, pos_dst = torch.randn(6, 4), torch.randn(6, 3), torch.randn(1, 3)
    edge_index = torch.stack([torch.arange(6), torch.zeros(6, dtype=torch.long)])
    with pytest.raises(ValueError, match="residual=False"):
        block(x, (pos_src, pos_dst), edge_index)
    plain = SteerableBlock("implicit", G, *types, dict(channels=2, n_layers=2), residual=False)
    assert plain(x, (pos_src, pos_dst), edge_index).shape == (1, 4)
    assert block(x, pos_src, torch.stack([torch.arange(6), torch.arange(6).roll(1)])).shape == (6, 4)
