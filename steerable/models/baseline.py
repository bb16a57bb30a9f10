"""A non-equivariant DeepSets/PointNet baseline (smoke tests; the "no symmetry" row of tables)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch_geometric.utils import scatter

from steerable.models.blocks import graph_index


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class PointNetBaseline(nn.Module):
    """Per-point MLP on centred coordinates (+ node features), sum-pooled with the graph context.

    Translation-invariant (coordinates are centred per graph) but *not* rotation-equivariant.

    .. math::
        h_i = \\phi([x_i - \\bar x_{g(i)}, f_i]),\\quad
        y_g = \\rho\\big(\\textstyle\\sum_{i \\in g} h_i\\big),\\quad
        y_i = \\rho\\big([h_i, \\textstyle\\sum_{j \\in g(i)} h_j]\\big)

    Args:
        out_dim: output channels (targets, classes, or 3 for positions).
        readout: ``graph`` (one output per graph) or ``node`` (one per point).
        hidden: hidden width.
        num_layers: layers of the per-point MLP (≥ 1).
        in_features: width of ``batch.x`` (0: ignore node features).
        use_velocity: append ``batch.vel (N, 3)`` to the point inputs (trajectory data).
        predict_positions: with ``node`` readout and ``out_dim=3``, return ``pos + Δ``
            (a residual position update) instead of ``Δ``.

    Shapes:
        ``batch.pos: (N, 3)``, ``batch.batch: (N,)``, optional ``batch.x: (N, in_features)``;
        output ``(B, out_dim)`` for ``graph``, ``(N, out_dim)`` for ``node``.

    >>> model = PointNetBaseline(out_dim=2)
    """

    def __init__(self, out_dim: int, readout: Literal["graph", "node"] = "graph", hidden: int = 64,
                 num_layers: int = 3, in_features: int = 0, use_velocity: bool = False,
                 predict_positions: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if predict_positions and (readout != "node" or out_dim != 3):
            raise ValueError("predict_positions needs readout='node' and out_dim=3")
        self.readout, self.in_features, self.use_velocity = readout, in_features, use_velocity
        self.predict_positions = predict_positions
        point_dim = 3 + in_features + (3 if use_velocity else 0)
        self.phi = nn.Sequential(mlp([point_dim] + [hidden] * num_layers), nn.SiLU())
        self.rho = mlp([hidden * (2 if readout == "node" else 1), hidden, out_dim])

    def forward(self, batch) -> torch.Tensor:
        index, num_graphs = graph_index(batch)
        centred = batch.pos - scatter(batch.pos, index, dim=0, dim_size=num_graphs, reduce="mean")[index]
        inputs = [centred]
        if self.in_features:
            inputs.append(batch.x)
        if self.use_velocity:
            inputs.append(batch.vel)
        h = self.phi(torch.cat(inputs, dim=-1))
        pooled = scatter(h, index, dim=0, dim_size=num_graphs, reduce="sum")
        if self.readout == "graph":
            return self.rho(pooled)
        out = self.rho(torch.cat([h, pooled[index]], dim=-1))
        return batch.pos + out if self.predict_positions else out
