"""Point-cloud classifier for rotated ModelNet-40 (Zhdanov et al. 2023, §5.1).

Points start with a trivial feature (or their normals, a vector field). Each stage subsamples the
current level (farthest point sampling or random), connects every kept point to its ``k`` nearest
points of the denser level, and applies a steerable block from the dense level to the kept points.
An invariant map, global mean+max pooling and an MLP head give the class logits (invariant).

The subsample-and-connect hierarchy (:mod:`steerable.models.point_hierarchy`) is invariant under
isometries, so it is built in the data-loader workers when the batch carries it
(``model.loader_transform``) and by the model otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch_geometric.utils import scatter

from steerable.groups import build_group
from steerable.models.blocks import InvariantMap, SteerableBlock, check_batch, graph_index, mlp
from steerable.models.point_hierarchy import PointHierarchy
from steerable.models.qm9 import natural_parity_spec

DEFAULT_STAGES = (
    {"channels": 8, "ratio": 1.0, "k": 16},
    {"channels": 16, "ratio": 0.25, "k": 16},
    {"channels": 32, "ratio": 0.25, "k": 16},
)


class ModelNetModel(nn.Module):
    """Hierarchical steerable point-cloud classifier.

    Args:
        group: group config (``name``, ...); the paper compares eight subgroups of O(3).
        num_classes: number of classes (40).
        kernel: ``implicit`` or ``analytic``.
        stages: list of ``{channels, ratio, k}``; stage i keeps ``ratio`` of the previous level's
            points and uses ``channels × (0e ⊕ 1o ⊕ …)`` features.
        band_limit: highest frequency of the features.
        sampling: ``fps`` (deterministic, start at each cloud's first point) or ``random``.
        use_normals: feed normals (``batch.normal``) as a vector field.
        conv: convolution options (see :class:`steerable.nn.ImplicitPointConv`).
        head_hidden: width of the MLP head.
        hierarchy_in_loader: offer the hierarchy as a per-item transform (``loader_transform``)
            for the data-loader workers; batches without it get their hierarchy built here.

    Batch fields: ``pos (N, 3)``, ``batch (N,)``, optional ``normal (N, 3)``. Output ``(B, num_classes)``.
    """

    def __init__(
        self,
        group: dict,
        num_classes: int = 40,
        kernel: Literal["implicit", "analytic"] = "implicit",
        stages: list[dict] | tuple = DEFAULT_STAGES,
        band_limit: int = 1,
        sampling: Literal["fps", "random"] = "fps",
        use_normals: bool = False,
        conv: dict[str, Any] | None = None,
        head_hidden: int = 128,
        hierarchy_in_loader: bool = True,
    ):
        super().__init__()
        self.hierarchy = PointHierarchy(stages, sampling)  # validates stages and sampling
        self.group = build_group(**group)
        g, conv = self.group, dict(conv or {})
        self.use_normals = use_normals
        self.loader_transform = self.hierarchy if hierarchy_in_loader else None
        self.vector_inputs = ("normal",) if use_normals else ()
        in_type = g.gspace.type(g.std_rep, g.gspace.trivial_repr) if use_normals else g.field_type("1x0e")
        self.blocks = nn.ModuleList()
        for stage in stages:
            out_type = g.field_type(natural_parity_spec(int(stage["channels"]), band_limit, g.dim))
            self.blocks.append(SteerableBlock(kernel, g, in_type, out_type, conv, residual=False))
            in_type = out_type
        self.invariant = InvariantMap(in_type)
        self.head = mlp([2 * self.invariant.out_size, head_hidden, num_classes])
        self.output_type = g.gspace.type(*[g.gspace.trivial_repr] * num_classes)

    def forward(self, batch) -> torch.Tensor:
        """``batch → (B, num_classes)`` logits, invariant under the group.

        Uses the hierarchy the batch carries (built by ``loader_transform``) if any, else builds it.
        """
        check_batch(batch)
        pos = batch.pos
        index, num_graphs = graph_index(batch)
        ones = pos.new_ones(pos.shape[0], 1)
        h = torch.cat([batch.normal, ones], dim=-1) if self.use_normals else ones
        levels = self.hierarchy.from_batch(batch) or self.hierarchy.build(pos, index)
        for level, block in zip(levels, self.blocks):
            pos_dst, index_dst = pos[level.keep], index[level.keep]
            h = block(h, (pos, pos_dst), level.edge_index)
            pos, index = pos_dst, index_dst
        invariants = self.invariant(h)
        pooled = torch.cat(
            [
                scatter(invariants, index, dim=0, dim_size=num_graphs, reduce="mean"),
                scatter(invariants, index, dim=0, dim_size=num_graphs, reduce="max"),
            ],
            dim=-1,
        )
        return self.head(pooled)
