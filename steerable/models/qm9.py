"""The paper's QM9 network (Zhdanov et al. 2023, §5.2): residual implicit point-conv blocks on molecules.

atom one-hot → linear embedding (trivial fields) → first conv to ``feature type`` → ``num_blocks``
residual blocks of two steerable blocks each → invariant map → global mean pool → MLP head.
With ``output="polarizability_tensor"`` the pooled equivariant features are mapped to a 3×3 tensor
(type std⊗std, symmetrised) instead: an equivariant target.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch_geometric.utils import scatter

from steerable.chem import num_bond_types as bond_classes
from steerable.groups import build_group
from steerable.kernels.implicit import band_limited_spec
from steerable.kernels.linear import EquivariantLinear
from steerable.models.blocks import (
    InvariantMap,
    SteerableBlock,
    add_self_loops,
    check_batch,
    graph_index,
    mlp,
)


def natural_parity_spec(channels: int, band_limit: int, dim: int = 3) -> str:
    """``channels × (0e ⊕ 1o ⊕ 2e ⊕ …)`` up to ``band_limit`` (parity (−1)^l, like spherical harmonics)."""
    if dim == 2:
        return band_limited_spec(channels, band_limit, dim=2).replace(f"+{channels}x0o", "")
    return "+".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(band_limit + 1))


def reachable_symmetric_rank(readout: EquivariantLinear) -> int:
    """Dimension of the symmetric 3×3 tensors that ``readout`` (features → std⊗std, ``(9, in)``) can
    produce for some weights and inputs: 6 when every symmetric tensor is reachable; 1 for O(3) with
    only 0e/1o features (isotropic ``c·I``: no 2e field reaches the ℓ=2 part)."""
    linear = readout.linear
    n_in = readout.in_type.size
    with torch.no_grad():
        unit = torch.eye(linear.weights.numel(), dtype=linear.weights.dtype)
        columns = [linear.basisexpansion(w).reshape(9, n_in) for w in unit]  # each (9, in)
        if linear.bias is not None:
            columns.append(linear.bias_expansion.reshape(9, -1))
        images = torch.cat(columns, dim=1).T.reshape(-1, 3, 3)  # every reachable output direction
        symmetric = (images + images.transpose(1, 2)).reshape(-1, 9).double()
    return int(torch.linalg.matrix_rank(symmetric)) if len(symmetric) else 0


class QM9Model(nn.Module):
    """Implicit-kernel steerable network for molecular property prediction.

    Args:
        group: group config (``name``, optional ``N``, ``maximum_frequency``), see ``conf/group``; a
            subgroup of O(3) (``dim: 3``): molecules are 3-D.
        targets: target names (T of them; a bare string is one name); ``[polarizability_tensor]``
            switches to the tensor output, which needs 2e features (``band_limit >= 2``) for its ℓ=2 part.
        num_atom_types: size of the atom one-hot ``x``.
        num_bond_types: size of the bond one-hot ``edge_attr``; ``None``: derived from ``graph``
            (4 bond classes, plus "no bond" for radius/full graphs).
        graph: the dataset's graph kind (``bonds``, ``radius``, ``full``).
        kernel: ``implicit`` or ``analytic``.
        num_features, band_limit: feature type ``num_features × (0e ⊕ 1o ⊕ …)``; ``feature_spec`` overrides.
        num_blocks: residual blocks (two steerable blocks each).
        edge_attrs: feed bond types to the kernel MLP; node_attrs: feed source/target atom types.
        conv: options of the convolutions (kernel MLP channels/layers, radial window, path, aggr, ...).
        head_hidden: width of the invariant MLP head.
        self_loops: add i → i edges so every atom also sees its own features (self-interaction).

    Batch fields: ``x (N, num_atom_types)``, ``pos (N, 3)``, ``edge_index (2, E)``,
    ``edge_attr (E, num_bond_types)``, ``batch (N,)``. Output ``(B, T)`` invariant scalars, or
    ``(B, 9)`` (row-major symmetric 3×3, type std⊗std) for the polarizability tensor.
    """

    vector_inputs: tuple[str, ...] = ()

    def __init__(
        self,
        group: dict,
        targets: list[str] | tuple[str, ...] = ("homo",),
        num_atom_types: int = 5,
        num_bond_types: int | None = None,
        graph: str = "bonds",
        kernel: Literal["implicit", "analytic"] = "implicit",
        num_features: int = 8,
        band_limit: int = 1,
        feature_spec: str | None = None,
        num_blocks: int = 4,
        edge_attrs: bool = False,
        node_attrs: bool = False,
        conv: dict[str, Any] | None = None,
        head_hidden: int = 64,
        self_loops: bool = True,
    ):
        super().__init__()
        targets = [targets] if isinstance(targets, str) else list(targets)  # "lumo" is one target
        if int(group.get("dim", 3)) != 3:
            raise ValueError(f"QM9 positions are 3-D; group {group.get('name')!r} (dim={group['dim']}) "
                             "acts on 2-D points: pick a 3-D group (e.g. group=o3)")
        output = "polarizability_tensor" if "polarizability_tensor" in targets else "scalars"
        if output == "polarizability_tensor" and len(targets) > 1:
            raise ValueError(
                "polarizability_tensor is an equivariant target; train it alone "
                "(targets: [polarizability_tensor])"
            )
        num_targets = len(targets)
        if num_bond_types is None:
            num_bond_types = bond_classes(graph)
        self.group = build_group(**group)
        g, conv = self.group, dict(conv or {})
        self.edge_attrs, self.node_attrs, self.output, self.self_loops = (
            edge_attrs,
            node_attrs,
            output,
            self_loops,
        )
        edge_t = f"{num_bond_types}x0e" if edge_attrs else None
        node_t = f"{num_atom_types}x0e" if node_attrs else None
        self.embed = nn.Linear(num_atom_types, num_features)
        embed_type = g.field_type(f"{num_features}x0e")
        feat_spec = feature_spec or natural_parity_spec(num_features, band_limit, g.dim)
        feat_type = g.field_type(feat_spec)
        block_args = dict(
            kernel=kernel, group=g, conv_kwargs=conv, edge_attr_type=edge_t, node_attr_type=node_t
        )
        self.first = SteerableBlock(in_type=embed_type, out_type=feat_type, **block_args)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    SteerableBlock(in_type=feat_type, out_type=feat_type, residual=False, **block_args)
                    for _ in range(2)
                ]
            )
            for _ in range(num_blocks)
        )
        if output == "scalars":
            self.invariant = InvariantMap(feat_type)
            self.head = mlp([self.invariant.out_size, head_hidden, head_hidden, num_targets])
            self.output_type = g.gspace.type(*[g.gspace.trivial_repr] * num_targets)
        else:
            tensor_rep = g.tensor(g.std_rep, g.std_rep)
            self.readout = EquivariantLinear(g.field_type(feat_type, on="fiber"), g.fiber.type(tensor_rep))
            self.output_type = g.gspace.type(tensor_rep)
            if (rank := reachable_symmetric_rank(self.readout)) < 6:
                raise ValueError(
                    f"polarizability_tensor needs features that reach its anisotropic (ℓ=2, 2e) part; "
                    f"feature type {feat_spec!r} reaches {rank} of the 6 symmetric components: "
                    "set model.band_limit>=2 (or add 2e fields to model.feature_spec)"
                )

    def forward(self, batch) -> torch.Tensor:
        """``batch → (B, T)`` scalars or ``(B, 9)`` symmetric tensors (invariant / equivariant)."""
        check_batch(batch)
        pos, edge_index = batch.pos, batch.edge_index
        edge_attr = batch.edge_attr if self.edge_attrs else None
        if self.self_loops:
            edge_index, edge_attr = add_self_loops(edge_index, pos.shape[0], edge_attr)
        node_attr = batch.x if self.node_attrs else None
        h = self.embed(batch.x)
        h = self.first(h, pos, edge_index, edge_attr, node_attr)
        for pair in self.blocks:
            update = h
            for block in pair:
                update = block(update, pos, edge_index, edge_attr, node_attr)
            h = h + update
        index, num_graphs = graph_index(batch)
        if self.output == "scalars":
            return self.head(scatter(self.invariant(h), index, dim=0, dim_size=num_graphs, reduce="mean"))
        matrix = self.readout(scatter(h, index, dim=0, dim_size=num_graphs, reduce="mean")).view(-1, 3, 3)
        return (0.5 * (matrix + matrix.transpose(1, 2))).reshape(-1, 9)
