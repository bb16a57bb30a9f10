"""Building blocks shared by the experiment networks: conv factory, steerable blocks, invariant map.

Everything here works on plain ``(N, type.size)`` tensors whose FieldType is stated; positions enter
only through relative vectors inside the convolutions (translation invariance).
"""

from __future__ import annotations

from typing import Any

import torch
from escnn.nn import FieldType
from torch import nn

from steerable.fields import FieldBatchNorm, FieldLayout, build_nonlinearity
from steerable.groups import GroupSpec
from steerable.nn.analytic import AnalyticPointConv
from steerable.nn.point_conv import ImplicitPointConv

KERNELS = ("implicit", "analytic")


def build_point_conv(
    kernel: str,
    group: GroupSpec,
    in_type: FieldType,
    out_type: FieldType,
    conv_kwargs: dict[str, Any],
    edge_attr_type=None,
    node_attr_type=None,
) -> nn.Module:
    """An implicit or analytic point convolution with one signature.

    ``conv_kwargs`` holds the options of both (``implicit``: kernel-MLP options, path, aggr;
    ``analytic``: width, n_rings); each layer takes what it understands.

    Raises:
        ValueError: unknown ``kernel`` (lists the valid ones) or attributes with ``analytic``.
    """
    kwargs = dict(conv_kwargs)
    analytic_keys = {"width": kwargs.pop("width", 2.0), "n_rings": kwargs.pop("n_rings", 3)}
    if kernel == "implicit":
        return ImplicitPointConv(
            group, in_type, out_type, edge_attr_type=edge_attr_type, node_attr_type=node_attr_type, **kwargs
        )
    if kernel == "analytic":
        return AnalyticPointConv(
            group,
            in_type,
            out_type,
            edge_attr_type=edge_attr_type,
            node_attr_type=node_attr_type,
            bias=kwargs.get("bias", True),
            aggr=kwargs.get("aggr", "mean"),
            **analytic_keys,
        )
    raise ValueError(f"unknown model.kernel {kernel!r}; valid: {', '.join(KERNELS)}")


class SteerableBlock(nn.Module):
    """``conv → equivariant batch norm → gated nonlinearity`` (+ identity residual when types match;
    the residual needs the output on the input's points, so bipartite graphs need ``residual=False``).

    The conv outputs ``out_type ⊕ k×trivial`` (k gates, one per non-trivial field of out_type).

    Types: ``in_type → out_type``. Shapes: ``x: (N_src, in.size) → (N_dst, out.size)``; the other
    arguments are those of :class:`steerable.nn.ImplicitPointConv`.
    """

    def __init__(
        self,
        kernel: str,
        group: GroupSpec,
        in_type: FieldType,
        out_type: FieldType,
        conv_kwargs: dict[str, Any],
        edge_attr_type=None,
        node_attr_type=None,
        residual: bool = True,
        nonlinearity: str = "gated",
    ):
        super().__init__()
        self.nonlinearity = build_nonlinearity(nonlinearity, out_type)
        gspace = out_type.gspace
        conv_out = gspace.type(
            *out_type.representations, *[gspace.trivial_repr] * self.nonlinearity.num_gates
        )
        self.conv = build_point_conv(
            kernel, group, in_type, conv_out, conv_kwargs, edge_attr_type, node_attr_type
        )
        self.norm = FieldBatchNorm(conv_out)
        self.residual = residual and in_type == out_type

    def forward(self, x, pos, edge_index, edge_attr=None, node_attr=None) -> torch.Tensor:
        out = self.nonlinearity(
            self.norm(self.conv(x, pos, edge_index, edge_attr=edge_attr, node_attr=node_attr))
        )
        if not self.residual:
            return out
        if isinstance(pos, tuple):
            raise ValueError("the identity residual needs the output on the input's points; this block got "
                             "a bipartite (pos_src, pos_dst) pair: build it with residual=False")
        return out + x


class InvariantMap(nn.Module):
    """Exactly invariant features: trivial channels as they are, plus the norm of every other field.

    Types: ``field_type → (n_trivial_channels + n_nontrivial_fields) × trivial``.
    Shapes: ``(N, field_type.size) → (N, out_size)``.
    """

    def __init__(self, field_type: FieldType):
        super().__init__()
        self.layout = FieldLayout(field_type)
        self.register_buffer(
            "trivial_index", self.layout.trivial_channel.nonzero().squeeze(1), persistent=False
        )
        self.register_buffer(
            "nontrivial_fields", (~self.layout.trivial_field).nonzero().squeeze(1), persistent=False
        )
        self.out_size = len(self.trivial_index) + len(self.nontrivial_fields)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = torch.sqrt(self.layout.field_sq_norms(x)[:, self.nontrivial_fields] + 1e-12)
        return torch.cat([x[:, self.trivial_index], norms], dim=-1)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Plain MLP ``sizes[0] → … → sizes[-1]`` (for invariant heads only)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def add_self_loops(edge_index: torch.Tensor, num_nodes: int, edge_attr: torch.Tensor | None = None):
    """Append i → i edges (zero relative position: the kernel there is an equivariant self-interaction).

    Shapes: ``edge_index (2, E) → (2, E + N)``; ``edge_attr (E, A) → (E + N, A)`` padded with zeros.
    """
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)
    edge_index = torch.cat([edge_index, loops], dim=1)
    if edge_attr is not None:
        edge_attr = torch.cat([edge_attr, edge_attr.new_zeros(num_nodes, edge_attr.shape[1])], dim=0)
    return edge_index, edge_attr


def sort_by_target(edge_index: torch.Tensor, edge_attr: torch.Tensor | None = None):
    """The edges reordered (stably) so that each target's edges are consecutive, targets ascending.

    On graphs of equal in-degree (complete graphs with self loops, kNN) the node-wise convolutions then
    aggregate by reshaping (:func:`steerable.nn.contraction.segment_layout`'s ``fixed`` mode), with no
    copies into a padded grid in any layer. Shapes as :func:`add_self_loops`.
    """
    order = torch.argsort(edge_index[1], stable=True)
    return edge_index[:, order], None if edge_attr is None else edge_attr[order]


def graph_index(batch) -> tuple[torch.Tensor, int]:
    """The graph id of every point ``(N,)`` and the number of graphs B, for pooling with ``scatter``.

    Pass B as ``dim_size``: PyG batches know it on the host, whereas ``scatter`` without it reads
    ``index.max()`` from the device (a host sync every step). A ``batch`` without ``batch`` ids is one graph.
    """
    pos = batch.pos
    index = getattr(batch, "batch", None)
    if index is None:
        return torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device), 1
    num_graphs = getattr(batch, "num_graphs", None)
    return index, int(num_graphs) if num_graphs is not None else int(index.max()) + 1


def check_batch(batch) -> None:
    """Reject inputs no model can use, with a message naming the graphs: no points, a graph without
    points, NaN/inf coordinates (they would otherwise turn every output into NaN, silently).

    Checks host (CPU) batches only, where it costs one reduction: on an accelerator reading the
    verdict would stall every step until the device catches up. Batches a task trains or evaluates on
    are checked on the host before they are moved (``BaseTask.on_before_batch_transfer``), so the models
    call this on whatever they get. ``batch.pos: (N, d)``, optional ``batch.batch: (N,)``.
    """
    pos = batch.pos
    if pos.shape[0] == 0:
        raise ValueError("empty batch: no points (every molecule/point cloud needs at least one point)")
    if pos.device.type != "cpu":
        return
    index = getattr(batch, "batch", None)
    if index is None:
        index = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    num_graphs = int(getattr(batch, "num_graphs", None) or 1)
    finite = torch.isfinite(pos).all(dim=-1)
    counts = torch.bincount(index, minlength=num_graphs)
    if bool((~finite).any() | (counts == 0).any()):
        bad = index[~finite].unique().tolist()
        if bad:
            raise ValueError(
                f"NaN/inf coordinates in graph(s) {bad[:10]} of the batch "
                f"({int((~finite).sum())} of {pos.shape[0]} points)"
            )
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"graph(s) {empty[:10]} of the batch have no points")
