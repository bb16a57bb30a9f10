"""SteerableBlock: the identity residual only where the output lives on the input's points."""

from __future__ import annotations

import pytest
import torch

from steerable.models.blocks import SteerableBlock, add_self_loops, sort_by_target
from steerable.nn.contraction import segment_layout
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


def test_complete_graphs_with_self_loops_sorted_by_target_aggregate_without_copies():
    """N-body systems: 5 particles, every pair both ways plus self loops. Sorted by target, every node
    has 5 consecutive edges, so the node-wise convolutions aggregate by reshaping (``fixed`` layout)."""
    pairs = torch.tensor([[i, j] for i in range(5) for j in range(5) if i != j]).T
    edge_index = torch.cat([pairs, pairs + 5], dim=1)  # two systems, source-major as the dataset stores them
    edge_attr = torch.arange(edge_index.shape[1], dtype=torch.float32)[:, None]
    looped, looped_attr = add_self_loops(edge_index, 10, edge_attr)
    assert segment_layout(looped[1], 10).mode == "padded"
    ordered, ordered_attr = sort_by_target(looped, looped_attr)
    assert segment_layout(ordered[1], 10).mode == "fixed"
    # the same edges with their attributes, each target's in stable order
    assert sorted(map(tuple, ordered.T.tolist())) == sorted(map(tuple, looped.T.tolist()))
    lookup = {tuple(e): a for e, a in zip(looped.T.tolist(), looped_attr[:, 0].tolist())}
    assert [lookup[tuple(e)] for e in ordered.T.tolist()] == ordered_attr[:, 0].tolist()
