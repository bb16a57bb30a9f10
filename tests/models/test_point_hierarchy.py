"""The ModelNet point hierarchy built per item in the data loader equals the one the model builds.

Covers: the per-item transform + PyG collation reproduce the batched construction exactly (FPS), so
the logits are identical; random sampling gives well-formed levels; the model stays invariant with
a loader-built hierarchy (reflections included); a hierarchy built for other stages is refused; the
real ModelNet-40 data module and Hydra wiring (``connect_loader_transform``) deliver it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from steerable.checkpoint import build, build_model_and_task, connect_loader_transform
from steerable.equivariance import model_error
from steerable.models import point_hierarchy
from steerable.models.modelnet import ModelNetModel
from steerable.models.point_hierarchy import HierarchicalCloud, PointHierarchy
from steerable.tasks.classification import ClassificationTask
from tests.helpers.runs import compose_run

STAGES = [{"channels": 4, "ratio": 1.0, "k": 8}, {"channels": 4, "ratio": 0.25, "k": 8},
          {"channels": 4, "ratio": 0.5, "k": 4}]
SIZES = (40, 33, 57)  # unequal clouds: offsets differ per level
SMALL_CONV = {"channels": 4, "n_layers": 2}
SHARED_MODELNET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "modelnet40"


def _clouds(dtype=torch.float32) -> list[Data]:
    gen = torch.Generator().manual_seed(3)
    return [Data(pos=torch.randn(n, 3, generator=gen, dtype=dtype), y=torch.tensor([i]))
            for i, n in enumerate(SIZES)]


def _strip(batch: Batch) -> Batch:
    """The same clouds without the hierarchy fields (the model then builds it itself)."""
    return Batch.from_data_list([Data(pos=d.pos, y=d.y) for d in batch.to_data_list()])


def test_collated_items_equal_the_batched_construction_and_give_identical_logits():
    torch.manual_seed(0)
    model = ModelNetModel(group={"name": "o3"}, stages=STAGES, conv=SMALL_CONV).eval()
    items = _clouds()
    loaded = Batch.from_data_list([model.loader_transform(d) for d in items])
    plain = Batch.from_data_list(items)
    assert isinstance(model.loader_transform(items[0]), HierarchicalCloud)
    built = model.hierarchy.build(plain.pos, plain.batch)
    carried = model.hierarchy.from_batch(loaded)
    assert model.hierarchy.from_batch(plain) is None
    for level, (a, b) in enumerate(zip(built, carried)):
        assert torch.equal(a.keep, b.keep), level
        assert torch.equal(a.edge_index, b.edge_index), level
    with torch.no_grad():
        assert torch.equal(model(loaded), model(plain))
    # the items survive a round trip through the batch (to_data_list undoes the offsets)
    again = loaded.to_data_list()[1]
    assert torch.equal(again.hierarchy_edge_index_2, model.loader_transform(items[1]).hierarchy_edge_index_2)


def test_test_time_augmentation_reuses_the_carried_hierarchy(monkeypatch):
    """With the hierarchy in the batch, no rotated TTA copy builds graphs; without it, every copy does."""
    calls, real_knn = [], point_hierarchy.knn_bipartite

    def counting_knn(*args, **kwargs):
        calls.append(1)
        return real_knn(*args, **kwargs)

    monkeypatch.setattr(point_hierarchy, "knn_bipartite", counting_knn)
    torch.manual_seed(0)
    model = ModelNetModel(group={"name": "so3"}, stages=STAGES, conv=SMALL_CONV).eval()
    task = ClassificationTask(model, optimizer=torch.optim.SGD, tta_samples=3, tta_rotation="so3")
    items = _clouds()
    loaded = Batch.from_data_list([model.loader_transform(d) for d in items])
    calls.clear()
    with torch.no_grad():
        probs = task._probabilities(loaded)
    assert calls == [] and probs.shape == (len(SIZES), 40)
    with torch.no_grad():
        task._probabilities(Batch.from_data_list(items))
    assert len(calls) == 3 * len(STAGES)


def test_random_sampling_levels_are_well_formed():
    hierarchy = PointHierarchy(STAGES, sampling="random")
    batch = Batch.from_data_list([hierarchy(d) for d in _clouds()])
    pos, index = batch.pos, batch.batch
    for ratio, k, level in zip(hierarchy.ratios, hierarchy.ks, hierarchy.from_batch(batch)):
        counts = torch.bincount(index)
        expected = torch.ceil(counts.double() * ratio).long()
        kept_index = index[level.keep]
        assert torch.equal(torch.bincount(kept_index, minlength=len(counts)), expected)
        assert level.keep.unique().numel() == level.keep.numel()  # without replacement
        src, dst = level.edge_index
        assert torch.equal(torch.bincount(dst, minlength=level.keep.numel()),
                           torch.full((level.keep.numel(),), k))
        assert torch.equal(index[src], kept_index[dst])  # neighbours from the same cloud
        pos, index = pos[level.keep], kept_index


@pytest.mark.parametrize("group", ["o3", "so2_inv"])
def test_model_with_loader_hierarchy_is_invariant(group):
    torch.manual_seed(0)
    model = ModelNetModel(group={"name": group}, stages=STAGES, conv=SMALL_CONV).eval().double()
    batch = Batch.from_data_list([model.loader_transform(d) for d in _clouds(torch.float64)])
    assert model_error(model, batch, n_elements=4) < 1e-5


def test_hierarchy_for_other_stages_is_refused():
    model = ModelNetModel(group={"name": "so3"}, stages=STAGES, conv=SMALL_CONV)
    other = PointHierarchy([{**s, "k": 5} for s in STAGES])
    batch = Batch.from_data_list([other(d) for d in _clouds()])
    with pytest.raises(ValueError, match="other stages/sampling"):
        model(batch)
    fewer = PointHierarchy(STAGES[:2])
    with pytest.raises(ValueError, match="other stages/sampling"):
        model(Batch.from_data_list([fewer(d) for d in _clouds()]))


@pytest.mark.parametrize("stages,sampling,match", [
    (STAGES, "grid", "unknown sampling"),
    ([], "fps", "at least one stage"),
    ([{"ratio": 0.0, "k": 4}], "fps", "ratio"),
    ([{"ratio": 0.5, "k": 0}], "fps", "k must be"),
])
def test_bad_hierarchy_arguments(stages, sampling, match):
    with pytest.raises(ValueError, match=match):
        PointHierarchy(stages, sampling)


def test_model_without_loader_hierarchy_offers_no_transform():
    model = ModelNetModel(group={"name": "so3"}, stages=STAGES, conv=SMALL_CONV, hierarchy_in_loader=False)
    assert model.loader_transform is None


@pytest.mark.skipif(not SHARED_MODELNET.is_dir(), reason=f"no ModelNet-40 files at {SHARED_MODELNET}")
def test_hydra_run_hands_the_hierarchy_to_the_real_data_module(tmp_path):
    """Composed like ``steerable.train experiment=modelnet40_so3 dataset=modelnet40_tiny``."""
    cfg = compose_run(["experiment=modelnet40_so3", "dataset=modelnet40_tiny", "logger=none",
                       f"paths.modelnet40={SHARED_MODELNET}", "dataset.limit=4", "dataset.batch_size=2",
                       "model.stages=[{channels: 2, ratio: 1.0, k: 4}, {channels: 2, ratio: 0.5, k: 4}]",
                       "model.conv.channels=2", "model.conv.n_layers=2"], tmp_path)
    datamodule = build(cfg.dataset, "dataset")
    task = build_model_and_task(cfg)
    connect_loader_transform(datamodule, task)
    datamodule.setup()
    assert "PointHierarchy" in datamodule.summary()
    batch = next(iter(datamodule.test_dataloader()))
    assert task.model.hierarchy.from_batch(batch) is not None
    task.model.eval()
    with torch.no_grad():
        assert torch.equal(task.model(batch), task.model(_strip(batch)))
