"""E(n)-equivariant graph neural network (EGNN, Satorras et al. 2021), the peer baseline of the tables.

One E(n)-equivariant convolution layer (EGCL, paper eqs. 3–6) on node features ``h`` (invariant) and
coordinates ``x`` (positions, type: standard rep of O(3)):

.. math::

    m_{ij} &= \\phi_e\\big(h_i, h_j, \\lVert x_i - x_j \\rVert^2, a_{ij}\\big) \\\\
    v_i' &= \\phi_v(h_i)\\, v_i^{(0)} + C \\sum_{j \\ne i} (x_i - x_j)\\, \\phi_x(m_{ij})
        \\qquad x_i' = x_i + v_i' \\quad \\text{(N-body, §3.2 velocity variant)} \\\\
    m_i &= \\sum_{j \\ne i} m_{ij} \\qquad h_i' = h_i + \\phi_h(h_i, m_i[, b_i])

where ``C = 1 / deg(i)`` (mean over neighbours), ``a_ij`` are edge attributes (charge products
``c_i c_j`` for N-body, bond one-hots for QM9), ``b_i`` optional node attributes (charges, atom
types). Every φ is a SiLU MLP; φ_x ends in a bias-free scalar (small init). Orthogonal maps
``x ↦ Rx + t`` (R ∈ O(3), reflections included) act on ``x, v`` only through ``x_i − x_j`` and
``v``, which φ sees only through invariants, so ``h`` is invariant and ``x`` equivariant.

Two readouts, chosen by ``targets``:

- ``targets=None`` (trajectory task): output ``(N, 3)`` positions ``x^{(L)}`` after ``num_layers``
  layers; inputs ``h^{(0)}_i = \\lVert v_i \\rVert`` as in the paper.
- ``targets=[…]`` (graph regression, QM9): coordinates stay fixed (the paper's invariant QM9
  setting), ``h^{(0)}`` = linear embedding of the atom one-hot, then node MLP → sum/mean pool →
  MLP, output ``(B, T)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch_geometric.utils import scatter

from steerable.chem import num_bond_types as bond_classes
from steerable.groups import build_group


def silu_mlp(sizes: list[int], last_activation: bool = False) -> nn.Sequential:
    """``sizes[0] → … → sizes[-1]`` linear layers with SiLU between (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGCL(nn.Module):
    """One E(n)-equivariant convolution layer (see the module docstring for the equations).

    Args:
        hidden: width of ``h`` and of the messages ``m_ij``.
        edge_dim: width of ``a_ij`` (0: none).
        node_dim: width of ``b_i`` fed to φ_h (0: none).
        update_coords: update ``x`` (φ_x; and φ_v when ``velocity``); ``False``: ``x`` passes through.
        velocity: the N-body variant with the ``φ_v(h_i) v_i`` term.
        attention: gate each message by ``sigmoid(φ_inf(m_ij))`` before the sum (EGNN's QM9 setting).

    Shapes:
        ``h: (N, hidden)``, ``x: (N, 3)``, ``edge_index: (2, E)`` (source row 0, target row 1),
        ``edge_attr: (E, edge_dim)``, ``node_attr: (N, node_dim)``, ``vel: (N, 3)``
        → ``(h', x')`` of the same shapes.
    """

    def __init__(self, hidden: int, edge_dim: int = 0, node_dim: int = 0, update_coords: bool = True,
                 velocity: bool = False, attention: bool = False) -> None:
        super().__init__()
        self.update_coords, self.velocity = update_coords, velocity
        self.phi_e = silu_mlp([2 * hidden + 1 + edge_dim, hidden, hidden], last_activation=True)
        self.phi_h = silu_mlp([2 * hidden + node_dim, hidden, hidden])
        self.phi_inf = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()) if attention else None
        if update_coords:
            last = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)  # start close to x' = x (+ v)
            self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
            self.phi_v = silu_mlp([hidden, hidden, 1]) if velocity else None

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor | None = None, node_attr: torch.Tensor | None = None,
                vel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        src, dst = edge_index
        diff = x[dst] - x[src]  # x_i − x_j for the edge j → i
        inputs = [h[dst], h[src], diff.square().sum(dim=-1, keepdim=True)]
        if edge_attr is not None:
            inputs.append(edge_attr)
        m = self.phi_e(torch.cat(inputs, dim=-1))
        if self.phi_inf is not None:
            m = m * self.phi_inf(m)
        if self.update_coords:
            shift = scatter(diff * self.phi_x(m), dst, dim=0, dim_size=x.shape[0], reduce="mean")
            if self.velocity:
                if vel is None:
                    raise ValueError("the velocity variant of EGCL needs vel (N, 3)")
                x = x + self.phi_v(h) * vel + shift
            else:
                x = x + shift
        agg = [h, scatter(m, dst, dim=0, dim_size=h.shape[0], reduce="sum")]
        if node_attr is not None:
            agg.append(node_attr)
        return h + self.phi_h(torch.cat(agg, dim=-1)), x


class EGNN(nn.Module):
    """EGNN for N-body trajectories (``targets=None``) or molecular properties (``targets=[...]``).

    E(3)-equivariant by construction, whatever the run's ``group``: :attr:`group` is O(3), which the
    equivariance checks sample (reflections included).

    Args:
        targets: ``None`` → predict positions ``(N, 3)`` (trajectory task, batch ``pos, vel, charge,
            edge_index, edge_attr (E, 1)``); a list of T names → ``(B, T)`` invariant predictions
            (regression task, batch ``x (N, num_atom_types), pos, edge_index, edge_attr, batch``).
        hidden: width of ``h`` and of the messages (default: 64, the paper's N-body width).
        num_layers: EGCL layers (default: 4; the paper uses 4 for N-body, 7 × 128 for QM9).
        edge_attrs: feed ``a_ij`` (charge products / bond one-hots) to φ_e (default: True).
        node_attrs: feed ``b_i`` (charges / atom one-hots) to every φ_h (default: False).
        attention: gate messages with ``sigmoid(φ_inf(m_ij))`` (default: False; the paper's QM9 uses it).
        num_atom_types: width of the QM9 atom one-hot ``x`` (default: 5).
        num_bond_types: width of the QM9 ``edge_attr``; ``None``: from ``graph`` like the QM9 model.
        graph: the QM9 dataset's graph kind (``bonds``, ``radius``, ``full``), for ``num_bond_types``.
        pool: graph readout of the regression head, ``sum`` (the paper) or ``mean``.

    Shapes: see ``targets``. Output type: std rep of O(3) (positions) or T × trivial.

    >>> model = EGNN(targets=None, hidden=16, num_layers=2)
    """

    def __init__(self, targets: list[str] | tuple[str, ...] | str | None = None, hidden: int = 64,
                 num_layers: int = 4, edge_attrs: bool = True, node_attrs: bool = False,
                 attention: bool = False, num_atom_types: int = 5, num_bond_types: int | None = None,
                 graph: str | None = "bonds", pool: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        if num_layers < 1 or hidden < 1:
            raise ValueError(f"EGNN needs num_layers >= 1 and hidden >= 1, got {num_layers}, {hidden}")
        if pool not in ("sum", "mean"):
            raise ValueError(f"unknown pool {pool!r}; valid: sum, mean")
        self.group = build_group(name="o3")
        gspace = self.group.gspace
        self.dynamics = targets is None
        self.edge_attrs, self.node_attrs, self.pool = edge_attrs, node_attrs, pool
        if self.dynamics:
            self.vector_inputs: tuple[str, ...] = ("vel",)
            edge_dim, node_dim, in_dim = 1, 1, 1
            self.output_type = gspace.type(self.group.std_rep)
        else:
            targets = [targets] if isinstance(targets, str) else list(targets)
            if "polarizability_tensor" in targets:
                raise ValueError("EGNN predicts invariant targets only, not polarizability_tensor")
            self.vector_inputs = ()
            if num_bond_types is None:
                num_bond_types = bond_classes(graph or "bonds")
            edge_dim, node_dim, in_dim = num_bond_types, num_atom_types, num_atom_types
            self.output_type = gspace.type(*[gspace.trivial_repr] * len(targets))
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            EGCL(hidden, edge_dim if edge_attrs else 0, node_dim if node_attrs else 0,
                 update_coords=self.dynamics, velocity=self.dynamics, attention=attention)
            for _ in range(num_layers)
        )
        if not self.dynamics:
            self.node_head = silu_mlp([hidden, hidden, hidden])
            self.graph_head = silu_mlp([hidden, hidden, len(targets)])

    def forward(self, batch) -> torch.Tensor:
        """``batch → (N, 3)`` positions or ``(B, T)`` predictions (see the class docstring)."""
        x, edge_index = batch.pos, batch.edge_index
        edge_attr = batch.edge_attr if self.edge_attrs else None
        if self.dynamics:
            vel = batch.vel
            node_attr = batch.charge if self.node_attrs else None
            h = self.embed(vel.norm(dim=-1, keepdim=True))
        else:
            vel = None
            node_attr = batch.x if self.node_attrs else None
            h = self.embed(batch.x)
        for layer in self.layers:
            h, x = layer(h, x, edge_index, edge_attr, node_attr, vel)
        if self.dynamics:
            return x
        index = getattr(batch, "batch", None)
        if index is None:
            index = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        num_graphs = int(getattr(batch, "num_graphs", None) or 1)
        pooled = scatter(self.node_head(h), index, dim=0, dim_size=num_graphs, reduce=self.pool)
        return self.graph_head(pooled)
