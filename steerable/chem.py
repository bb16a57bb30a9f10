"""Molecular vocabulary shared by the QM9 data pipeline and the molecular models.

The data side (:mod:`steerable.data.mol_graph`) writes atom one-hots and bond-class one-hots in
these orders; the models (:mod:`steerable.models.qm9`, :mod:`steerable.models.egnn`) size their
inputs from them, without importing the data pipeline (RDKit, qm9pack).
"""

from __future__ import annotations

#: Element symbols QM9 contains, in one-hot order (H, C, N, O, F).
ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F")
#: Atomic numbers of :data:`ELEMENTS`.
ATOMIC_NUMBERS: tuple[int, ...] = (1, 6, 7, 8, 9)
#: Width of the atom one-hot ``x``.
NUM_ATOM_TYPES = len(ATOMIC_NUMBERS)

#: Bond classes in one-hot order; graphs with non-bonded edges add a last "none" class.
BOND_TYPES: tuple[str, ...] = ("single", "double", "triple", "aromatic")
#: Edge sets of a molecular graph: chemical bonds, atom pairs within a radius, all atom pairs.
GRAPHS: tuple[str, ...] = ("bonds", "radius", "full")


def check_graph(graph: str) -> None:
    """Raise ``ValueError`` unless ``graph`` is one of :data:`GRAPHS`."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose from {list(GRAPHS)}")


def num_bond_types(graph: str) -> int:
    """Width of ``edge_attr``: 4 bond classes, plus "no bond" unless ``graph == "bonds"``.

    >>> num_bond_types("bonds"), num_bond_types("radius")
    (4, 5)
    """
    check_graph(graph)
    return len(BOND_TYPES) + (graph != "bonds")
