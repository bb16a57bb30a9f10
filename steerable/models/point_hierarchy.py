"""The point hierarchy of the point-cloud classifier, built in the model or in the data-loader workers.

Each stage ``s = 1 … S`` keeps a subset of the previous level's points (farthest point sampling or
random) and connects every kept point to its ``k`` nearest points of the previous level. The result
depends only on pairwise distances and the point order, so it is invariant under rotations,
reflections and translations of the cloud: it can be built once per item, before the model sees it,
and stays valid for every rotated copy (data augmentation, test-time augmentation, equivariance
checks). Built in the data-loader workers (:class:`PointHierarchy` as a per-item transform), it runs
in parallel with the training step instead of inside it.

Stored per item (:class:`HierarchicalCloud`, a PyG ``Data`` that batches these fields correctly):

* ``hierarchy_keep_s (M_s,)``: indices of the kept points into level ``s − 1`` (level 0 = ``pos``);
* ``hierarchy_edge_index_s (2, M_s·k)``: row 0 indexes level ``s − 1``, row 1 level ``s``; sorted by
  target, then distance (:func:`steerable.geometry.knn_bipartite`);
* ``hierarchy_spec``: the hierarchy's description (a string; a list of them in a batch, which stays
  on the host), so a model can refuse a hierarchy built for other stages without reading the device.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from steerable.geometry import farthest_point_sampling, knn_bipartite, random_sampling

SAMPLINGS = ("fps", "random")
_KEEP, _EDGES, _SPEC = "hierarchy_keep_", "hierarchy_edge_index_", "hierarchy_spec"
_LEVEL_KEY = re.compile(rf"^(?:{_KEEP}|{_EDGES})(\d+)$")


class Level(NamedTuple):
    """One stage: ``keep (M,)`` indices into the previous level, ``edge_index (2, E)`` previous → kept."""

    keep: Tensor
    edge_index: Tensor


class PointHierarchy:
    """Subsample-and-connect stages; callable as a per-item transform (``Data → HierarchicalCloud``).

    Args:
        stages: ``[{ratio, k, ...}, ...]``: stage ``s`` keeps ``ceil(ratio·n)`` of the previous level's
            ``n`` points (``ratio = 1`` keeps all) and gives each kept point its ``k`` nearest points of
            the previous level (other keys, e.g. ``channels``, are ignored).
        sampling: ``fps`` (deterministic: starts at each cloud's first point) or ``random``.

    Raises:
        ValueError: unknown sampling, no stages, a ratio outside ``(0, 1]`` or ``k < 1``.
    """

    def __init__(self, stages: Sequence[dict], sampling: str = "fps"):
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
        if not stages:
            raise ValueError("a point hierarchy needs at least one stage")
        self.ratios = tuple(float(stage["ratio"]) for stage in stages)
        self.ks = tuple(int(stage["k"]) for stage in stages)
        for ratio, k in zip(self.ratios, self.ks):
            if not 0 < ratio <= 1:
                raise ValueError(f"stage ratio must be in (0, 1], got {ratio!r}")
            if k < 1:
                raise ValueError(f"stage k must be >= 1, got {k!r}")
        self.sampling = sampling
        self.spec = f"PointHierarchy(ratios={self.ratios}, ks={self.ks}, sampling={sampling!r})"

    def __repr__(self) -> str:
        stages = ", ".join(f"(ratio={r:g}, k={k})" for r, k in zip(self.ratios, self.ks))
        return f"PointHierarchy([{stages}], sampling={self.sampling!r})"

    def _subsample(self, pos: Tensor, index: Tensor, ratio: float) -> Tensor:
        if ratio >= 1.0:
            return torch.arange(pos.shape[0], device=pos.device)
        sample = farthest_point_sampling if self.sampling == "fps" else random_sampling
        return sample(pos, index, ratio=ratio)

    def build(self, pos: Tensor, index: Tensor) -> list[Level]:
        """The levels of the clouds ``pos (N, 3)`` with graph ids ``index (N,)`` (any number of clouds)."""
        levels = []
        for ratio, k in zip(self.ratios, self.ks):
            keep = self._subsample(pos, index, ratio)
            pos_dst, index_dst = pos[keep], index[keep]
            levels.append(Level(keep, knn_bipartite(pos, pos_dst, k, index, index_dst)))
            pos, index = pos_dst, index_dst
        return levels

    def __call__(self, data: Data) -> HierarchicalCloud:
        """Per-item transform: a :class:`HierarchicalCloud` with ``data``'s fields and the levels."""
        out = HierarchicalCloud(**{key: value for key, value in data})
        index = torch.zeros(data.pos.shape[0], dtype=torch.long, device=data.pos.device)
        for s, level in enumerate(self.build(data.pos, index), start=1):
            out[f"{_KEEP}{s}"], out[f"{_EDGES}{s}"] = level.keep, level.edge_index
        out[_SPEC] = self.spec
        return out

    def from_batch(self, batch) -> list[Level] | None:
        """The levels a batch carries (built by this hierarchy's transform), or ``None`` if it has none.

        Raises:
            ValueError: the batch carries a hierarchy built with other stages or sampling.
        """
        specs = getattr(batch, _SPEC, None)
        if specs is None:
            return None
        specs = [specs] if isinstance(specs, str) else list(specs)
        if any(spec != self.spec for spec in specs):
            other = next(spec for spec in specs if spec != self.spec)
            raise ValueError(f"the batch carries a point hierarchy built for other stages/sampling "
                             f"({other}); this model uses {self!r}")
        return [Level(batch[f"{_KEEP}{s}"], batch[f"{_EDGES}{s}"]) for s in range(1, len(self.ks) + 1)]


class HierarchicalCloud(Data):
    """A point cloud carrying its :class:`PointHierarchy` levels; batches them like PyG batches edges.

    When items are collated, ``hierarchy_keep_s`` is offset by the points of level ``s − 1`` of the
    preceding items and ``hierarchy_edge_index_s`` by ``[[level s − 1], [level s]]``.
    """

    def _level_size(self, level: int) -> int:
        return self.pos.shape[0] if level == 0 else self[f"{_KEEP}{level}"].numel()

    def __inc__(self, key: str, value, *args, **kwargs):
        match = _LEVEL_KEY.match(key)
        if match is None:
            return super().__inc__(key, value, *args, **kwargs)
        level = int(match.group(1))
        if key.startswith(_KEEP):
            return self._level_size(level - 1)
        return torch.tensor([[self._level_size(level - 1)], [self._level_size(level)]])

    def __cat_dim__(self, key: str, value, *args, **kwargs):
        if key.startswith(_EDGES):
            return -1
        if key.startswith(_KEEP):
            return 0
        return super().__cat_dim__(key, value, *args, **kwargs)
