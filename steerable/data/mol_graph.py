"""Molecular graphs as PyG ``Data``: atom one-hots and bond / radius / full edge sets.

Edge attributes are one-hot bond classes ``single, double, triple, aromatic`` and, for
``graph="radius"`` and ``graph="full"``, a fifth class "no bond" for atom pairs that are not bonded.
Edges are listed in both directions (``edge_index[:, e] = (source, target)``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from steerable.chem import ATOMIC_NUMBERS, NUM_ATOM_TYPES, check_graph, num_bond_types

_Z_TO_TYPE = torch.full((max(ATOMIC_NUMBERS) + 1,), -1, dtype=torch.long)
_Z_TO_TYPE[list(ATOMIC_NUMBERS)] = torch.arange(NUM_ATOM_TYPES)


def atom_one_hot(z: Tensor) -> Tensor:
    """(N,) atomic numbers of H, C, N, O, F → (N, 5) float32 one-hot."""
    return torch.nn.functional.one_hot(_Z_TO_TYPE[z], NUM_ATOM_TYPES).float()


def build_edges(
    pos: Tensor, bonds: Tensor, graph: str = "bonds", radius: float = 5.0
) -> tuple[Tensor, Tensor]:
    """Edges of one molecule.

    Args:
        pos: (N, 3) coordinates in Å.
        bonds: (B, 3) int64 ``(i, j, type)`` with i < j.
        graph: ``"bonds"`` (chemical bonds), ``"radius"`` (pairs closer than ``radius`` Å),
            ``"full"`` (all ordered pairs i ≠ j).
        radius: cutoff in Å for ``graph="radius"`` (distance ≤ radius).

    Returns:
        edge_index: (2, E) int64, both directions. edge_attr: (E, num_bond_types(graph)) float32.
    """
    check_graph(graph)
    n = pos.shape[0]
    width = num_bond_types(graph)
    i, j, kind = bonds[:, 0], bonds[:, 1], bonds[:, 2]
    if graph == "bonds":
        edge_index = torch.cat([torch.stack([i, j]), torch.stack([j, i])], dim=1)
        edge_type = torch.cat([kind, kind])
    else:
        bond_class = torch.full((n, n), width - 1, dtype=torch.long)
        bond_class[i, j] = kind
        bond_class[j, i] = kind
        keep = ~torch.eye(n, dtype=torch.bool)
        if graph == "radius":
            keep &= torch.cdist(pos.double(), pos.double()) <= radius
        src, dst = keep.nonzero(as_tuple=True)
        edge_index = torch.stack([src, dst])
        edge_type = bond_class[src, dst]
    edge_attr = torch.nn.functional.one_hot(edge_type, width).float()
    return edge_index, edge_attr.reshape(-1, width)


def molecule_data(
    z: Tensor, pos: Tensor, bonds: Tensor, graph: str = "bonds", radius: float = 5.0, **extra
) -> Data:
    """PyG ``Data`` with ``pos (N,3)`` float32 Å, ``z (N,)``, ``x (N,5)``, ``edge_index (2,E)``,
    ``edge_attr (E, num_bond_types(graph))`` and any ``extra`` fields (``y``, ``idx``, ``name``)."""
    pos = pos.float()
    edge_index, edge_attr = build_edges(pos, bonds, graph, radius)
    return Data(
        pos=pos,
        z=z.long(),
        x=atom_one_hot(z.long()),
        edge_index=edge_index,
        edge_attr=edge_attr,
        **extra,
    )
