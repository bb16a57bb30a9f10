"""Benchmark shapes and deterministic synthetic inputs (molecules, point clouds, kNN/radius graphs).

Every shape is a plain dict (JSON-serialisable, so it can be handed to a worker subprocess) and
:func:`build_inputs` turns it into ``x, pos, edge_index`` from its seed alone, so each variant of a
shape sees exactly the same graph.

Molecules are random "grown" molecules: each new atom attaches to a random earlier atom at a bond
length of 1.0–1.5 Å in a random direction, rejecting atoms closer than 1.45 Å to any other atom
(QM9-like geometry: ~18 atoms, a few Å across). Point clouds are uniform samples of the unit ball
(ModelNet clouds are normalised to the unit sphere).
"""

from __future__ import annotations

import torch

from steerable.geometry import knn_graph, radius_graph

QM9_TYPES = "8x0e+8x1o"  # 8 × (ℓ ≤ 1) = 32 channels
C32, C64 = "8x0e+8x1o", "16x0e+16x1o"


def shape(name: str, family: str, graphs: int, points: int, graph: str, param: float,
          in_type: str, out_type: str | None = None, seed: int = 0) -> dict:
    """One benchmark shape (``graph`` is ``knn`` with ``param = k`` or ``radius`` with ``param = r``)."""
    return dict(name=name, family=family, graphs=graphs, points=points, graph=graph, param=param,
                in_type=in_type, out_type=out_type or in_type, seed=seed)


def default_shapes(quick: bool = False, clouds: int = 2, sweep_points: int = 512) -> list[dict]:
    """The benchmark shapes: QM9-like, ModelNet-like and a scaling sweep over E at fixed N.

    Args:
        quick: tiny shapes for the smoke test (seconds in total).
        clouds: ModelNet-like batch size (clouds of 1,024 points).
        sweep_points: N of the scaling sweep (one cloud; k = 4 … 128, up to 65,536 edges, so the
            memory slope of the chunked path, flat apart from O(E) inputs, is fitted over 16× in E).
    """
    if quick:
        return [shape("qm9_bond", "qm9", 2, 18, "radius", 1.6, QM9_TYPES),
                shape("modelnet_k8_c32", "modelnet", 1, 64, "knn", 8, C32),
                *[shape(f"sweep_k{k}", "sweep", 1, 64, "knn", k, "4x0e+4x1o") for k in (2, 4, 8)]]
    shapes = [shape("qm9_bond", "qm9", 32, 18, "radius", 1.6, QM9_TYPES),
              shape("qm9_radius5", "qm9", 32, 18, "radius", 5.0, QM9_TYPES)]
    for types, c in ((C32, 32), (C64, 64)):
        shapes += [shape(f"modelnet_k{k}_c{c}", "modelnet", clouds, 1024, "knn", k, types)
                   for k in (16, 32, 64)]
    shapes += [shape(f"sweep_k{k}", "sweep", 1, sweep_points, "knn", k, C64)
               for k in (4, 8, 16, 32, 64, 128)]
    return shapes


def grow_molecules(graphs: int, atoms: int, generator: torch.Generator) -> torch.Tensor:
    """``(graphs·atoms, 3)`` positions (Å) of random branched molecules, centred per molecule."""
    out = []
    for _ in range(graphs):
        pos = [torch.zeros(3)]
        while len(pos) < atoms:
            anchor = pos[int(torch.randint(len(pos), (1,), generator=generator))]
            direction = torch.randn(3, generator=generator)
            bond = 1.0 + 0.5 * torch.rand(1, generator=generator)
            new = anchor + bond * direction / direction.norm()
            if min(float((new - p).norm()) for p in pos if p is not anchor) >= 1.45 if len(pos) > 1 else True:
                pos.append(new)
        mol = torch.stack(pos)
        out.append(mol - mol.mean(0))
    return torch.cat(out)


def build_inputs(spec: dict, channels: int) -> dict[str, torch.Tensor]:
    """``x (N, channels)``, ``pos (N, 3)``, ``edge_index (2, E)`` (sorted by target), ``batch (N,)``."""
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    graphs, points = spec["graphs"], spec["points"]
    batch = torch.arange(graphs).repeat_interleave(points)
    if spec["family"] == "qm9":
        pos = grow_molecules(graphs, points, gen)
    else:
        direction = torch.randn(graphs * points, 3, generator=gen)
        radius = torch.rand(graphs * points, 1, generator=gen) ** (1 / 3)
        pos = direction / direction.norm(dim=1, keepdim=True) * radius
    if spec["graph"] == "knn":
        edge_index = knn_graph(pos, int(spec["param"]), batch=batch)
    else:
        edge_index = radius_graph(pos, float(spec["param"]), batch=batch)
    x = torch.randn(pos.shape[0], channels, generator=gen)
    return dict(x=x, pos=pos, edge_index=edge_index, batch=batch)
