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

from steerable.groups import build_group
from steerable.kernels.implicit import share_trunk
from steerable.models.blocks import SteerableBlock, add_self_loops, build_point_conv, check_batch
from steerable.models.qm9 import natural_parity_spec


class NBodyModel(nn.Module):
    """Stack of steerable blocks on the fully connected particle graph.

    Args:
        group: group config (``name``, ...); ``o3`` in the paper.
        kernel: ``implicit`` or ``analytic``.
        num_features, band_limit: hidden feature type ``num_features × (0e ⊕ 1o ⊕ …)``.
        num_layers: steerable blocks before the output convolution.
        edge_attrs: charge products into the kernel MLP; node_attrs: charges into the kernel MLP.
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
    ):
        super().__init__()
        if shared_phi and kernel != "implicit":
            raise ValueError(f"shared_phi needs implicit kernels (an MLP φ to share), got kernel={kernel!r}")
        self.group = build_group(**group)
        g, conv = self.group, dict(conv or {})
        self.edge_attrs, self.node_attrs = edge_attrs, node_attrs
        vector = g.gspace.type(g.std_rep)
        in_type = g.gspace.type(g.std_rep, g.gspace.trivial_repr)
        feat_type = g.field_type(natural_parity_spec(num_features, band_limit, g.dim))
        args = dict(
            kernel=kernel,
            group=g,
            conv_kwargs=conv,
            edge_attr_type="1x0e" if edge_attrs else None,
            node_attr_type="1x0e" if node_attrs else None,
        )
        types = [in_type] + [feat_type] * num_layers
        self.blocks = nn.ModuleList(
            SteerableBlock(in_type=a, out_type=b, **args) for a, b in zip(types, types[1:])
        )
        self.readout = build_point_conv(
            kernel, g, feat_type, vector, conv, args["edge_attr_type"], args["node_attr_type"]
        )
        self.output_type = vector
        convs = [block.conv for block in self.blocks] + [self.readout]
        self.trunk = share_trunk([c.kernel for c in convs]) if shared_phi else None
        self.tau = None if velocity_skip is None else nn.Parameter(torch.tensor(float(velocity_skip)))

    def forward(self, batch) -> torch.Tensor:
        """``batch → (N, 3)`` predicted positions."""
        check_batch(batch)
        pos = batch.pos
        edge_attr = batch.edge_attr if self.edge_attrs else None
        edge_index, edge_attr = add_self_loops(batch.edge_index, pos.shape[0], edge_attr)
        node_attr = batch.charge if self.node_attrs else None
        h = torch.cat([batch.vel, batch.charge], dim=-1)
        with self.trunk.scope() if self.trunk is not None else nullcontext():
            for block in self.blocks:
                h = block(h, pos, edge_index, edge_attr, node_attr)
            delta = self.readout(h, pos, edge_index, edge_attr=edge_attr, node_attr=node_attr)
        return pos + delta if self.tau is None else pos + self.tau * batch.vel + delta
