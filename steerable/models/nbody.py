"""Equivariant trajectory model for the charged N-body system (Zhdanov et al. 2023, §5.3).

Input at frame t: positions, velocities (a Cartesian vector field, parity odd) and charges
(invariants). Charges also enter the kernel MLP: the product c_i c_j as an edge attribute and each
particle's charge as a node attribute. Output: the position at frame t + Δ, predicted as
``pos + Δx`` with Δx a vector field from the last convolution (O(3)-equivariant, translation-equivariant).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from torch import nn
from torch_geometric.utils import scatter

from steerable.groups import build_group
from steerable.kernels.implicit import share_trunk
from steerable.kernels.linear import EquivariantLinear
from steerable.models.blocks import (
    InvariantMap,
    SteerableBlock,
    add_self_loops,
    build_point_conv,
    check_batch,
    graph_index,
    sort_by_target,
)
from steerable.models.qm9 import natural_parity_spec


class NBodyModel(nn.Module):
    """Stack of steerable blocks on the fully connected particle graph.

    Args:
        group: group config (``name``, ...); ``o3`` in the paper.
        kernel: ``implicit`` or ``analytic``.
        num_features, band_limit: hidden feature type ``num_features × (0e ⊕ 1o ⊕ …)``.
        num_layers: steerable blocks before the output convolution.
        edge_attrs: charge products into the kernel MLP; node_attrs: charges into the kernel MLP.
        velocity_attrs: velocities into the kernel MLP as node attributes (vector fields, next to
            the charges): φ sees v_i and v_j, so each kernel depends on how the pair moves, not only
            on where it sits (messages stay linear in the features). Implicit kernels only.
        feature_attrs: each convolution's φ also sees the invariants of that convolution's input
            features at source and target (trivial channels and the norms of the other fields,
            :class:`~steerable.models.blocks.InvariantMap`, squashed by ``asinh`` so that growing
            feature norms do not swamp φ's other inputs): the kernels, hence the messages, become
            nonlinear functions of the features, as in EGNN's and SEGNN's message MLPs. Implicit only.
        position_updates: after every block, each particle moves by an equivariant linear map of its
            features (``pos ← pos + W_l h``, W_l ∈ Hom(features, vector), zero at initialisation), and
            the later convolutions see the moved positions: the stack integrates in steps, as EGNN's
            coordinate updates do, instead of predicting 1,000 steps from the initial geometry alone.
            The output is the last moved position plus the readout. Not with ``shared_phi`` (which
            evaluates φ once, on the initial geometry).
        centered_input: the position relative to the system's mean position, ``pos − mean(pos)``,
            as a further input vector field (translation-invariant, rotates with the system).
        shared_phi: one set of φ hidden layers (and radial window) for every convolution, evaluated
            once per forward (all convolutions see the same graph); each keeps its own Hom layer.
            Implicit kernels only.
        velocity_skip: ``None`` (off) or the initial value of a learnable scalar τ: the output becomes
            ``pos + τ·vel + Δx`` (equivariant: vel is a vector), so the network starts from constant
            velocity motion instead of learning to copy vel through every layer (EGNN has the like
            ``φ_v(h)·v``). The horizon (1.0 for frames 30 → 40) is the natural initial value.
        conv: convolution options (see :class:`steerable.nn.ImplicitPointConv`).

    Batch fields: ``pos (N, 3)``, ``vel (N, 3)``, ``charge (N, 1)``, ``edge_index (2, E)``,
    ``edge_attr (E, 1)``. Output ``(N, 3)`` predicted positions (type: std rep).
    """

    vector_inputs: tuple[str, ...] = ("vel",)

    def __init__(
        self,
        group: dict,
        kernel: Literal["implicit", "analytic"] = "implicit",
        num_features: int = 16,
        band_limit: int = 1,
        num_layers: int = 4,
        edge_attrs: bool = True,
        node_attrs: bool = True,
        conv: dict[str, Any] | None = None,
        shared_phi: bool = False,
        velocity_skip: float | None = None,
        velocity_attrs: bool = False,
        centered_input: bool = False,
        feature_attrs: bool = False,
        position_updates: bool = False,
    ):
        super().__init__()
        implicit_only = (
            ("shared_phi", shared_phi),
            ("velocity_attrs", velocity_attrs),
            ("feature_attrs", feature_attrs),
        )
        for option, value in implicit_only:
            if value and kernel != "implicit":
                raise ValueError(f"{option} needs implicit kernels (an MLP φ), got kernel={kernel!r}")
        if position_updates and shared_phi:
            raise ValueError("position_updates moves the particles between convolutions, shared_phi "
                             "evaluates φ once on the initial positions: choose one")
        self.group = build_group(**group)
        g, conv = self.group, dict(conv or {})
        self.edge_attrs, self.node_attrs = edge_attrs, node_attrs
        self.velocity_attrs, self.centered_input = velocity_attrs, centered_input
        vector, trivial = g.gspace.type(g.std_rep), g.gspace.trivial_repr
        in_type = g.gspace.type(*[g.std_rep] * (1 + centered_input), trivial)
        node_attr_reps = [trivial] * node_attrs + [g.std_rep] * velocity_attrs
        feat_type = g.field_type(natural_parity_spec(num_features, band_limit, g.dim))
        types = [in_type] + [feat_type] * num_layers
        # one invariant map per convolution (its input type), or none
        self.invariants = nn.ModuleList(InvariantMap(t) for t in types) if feature_attrs else None

        def attr_type(layer: int):
            reps = node_attr_reps + [trivial] * (self.invariants[layer].out_size if feature_attrs else 0)
            return g.gspace.type(*reps) if reps else None

        edge_attr_type = "1x0e" if edge_attrs else None
        self.blocks = nn.ModuleList(
            SteerableBlock(kernel, g, a, b, conv, edge_attr_type, attr_type(layer))
            for layer, (a, b) in enumerate(zip(types, types[1:]))
        )
        self.readout = build_point_conv(
            kernel, g, feat_type, vector, conv, edge_attr_type, attr_type(num_layers)
        )
        self.output_type = vector
        convs = [block.conv for block in self.blocks] + [self.readout]
        self.trunk = share_trunk([c.kernel for c in convs]) if shared_phi else None
        moved_by = (g.fiber.type(*feat_type.representations), g.fiber.type(g.std_rep))
        self.moves = nn.ModuleList(_zero_move(*moved_by) for _ in self.blocks) if position_updates else None
        self.tau = None if velocity_skip is None else nn.Parameter(torch.tensor(float(velocity_skip)))

    def forward(self, batch) -> torch.Tensor:
        """``batch → (N, 3)`` predicted positions."""
        check_batch(batch)
        pos = batch.pos
        edge_attr = batch.edge_attr if self.edge_attrs else None
        edge_index, edge_attr = sort_by_target(*add_self_loops(batch.edge_index, pos.shape[0], edge_attr))
        vectors = [batch.vel, pos - _system_mean(pos, batch)] if self.centered_input else [batch.vel]
        h = torch.cat([*vectors, batch.charge], dim=-1)
        with self.trunk.scope() if self.trunk is not None else nullcontext():
            for layer, block in enumerate(self.blocks):
                h = block(h, pos, edge_index, edge_attr, self._node_attr(batch, h, layer))
                if self.moves is not None:
                    pos = pos + self.moves[layer](h)
            node_attr = self._node_attr(batch, h, len(self.blocks))
            delta = self.readout(h, pos, edge_index, edge_attr=edge_attr, node_attr=node_attr)
        return pos + delta if self.tau is None else pos + self.tau * batch.vel + delta

    def _node_attr(self, batch, h: torch.Tensor, layer: int) -> torch.Tensor | None:
        """``(N, B)`` node attributes of convolution ``layer``'s φ, in the order of its attribute type:
        charges, velocities, the invariants of its input features ``h``."""
        parts = [batch.charge] * self.node_attrs + [batch.vel] * self.velocity_attrs
        if self.invariants is not None:
            parts.append(torch.asinh(self.invariants[layer](h)))
        return torch.cat(parts, dim=-1) if parts else None


def _zero_move(feat_type, vector) -> EquivariantLinear:
    """``Hom_G(feat_type, vector)`` with all weights zero: a position update that starts as none.

    Raises:
        ValueError: when no equivariant map from the features to a vector exists (e.g. band limit 0).
    """
    move = EquivariantLinear(feat_type, vector, bias=False)
    if move.linear.weights.numel() == 0:
        raise ValueError(f"position_updates needs features with a field that maps onto a vector; "
                         f"{feat_type} has none")
    with torch.no_grad():
        move.linear.weights.zero_()
    return move


def _system_mean(pos: torch.Tensor, batch) -> torch.Tensor:
    """``(N, d)``: the mean position of each node's system."""
    index, num_systems = graph_index(batch)
    return scatter(pos, index, dim=0, dim_size=num_systems, reduce="mean")[index]
