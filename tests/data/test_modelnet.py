"""ModelNet-40 readers (HDF5, OFF, normal-resampled text) on real files, and the DataModule."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from steerable.data import modelnet_io
from steerable.data.mesh import read_off, sample_surface
from steerable.data.modelnet import ModelNet40, ModelNet40DataModule, stratified_split
from steerable.data.modelnet_io import CLASS_NAMES, find_layout, load_split

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "modelnet40"
HDF5_DIR, OFF_DIR = SHARED / "hdf5_1024", SHARED / "off" / "ModelNet40"
needs_shared = pytest.mark.skipif(not HDF5_DIR.is_dir(), reason=f"shared ModelNet-40 data not at {SHARED}")


@pytest.fixture(scope="module")
def hdf5_test():
    if not HDF5_DIR.is_dir():
        pytest.skip(f"shared ModelNet-40 data not at {SHARED}")
    return load_split(SHARED, "test")


def _fit_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """R with b ≈ a @ R^T (least squares)."""
    return torch.linalg.lstsq(a.double(), b.double()).solution.T


# ---------------------------------------------------------------- HDF5


@needs_shared
def test_hdf5_split_sizes_and_class_numbering(hdf5_test):
    train = load_split(SHARED, "train")
    assert (len(train), len(hdf5_test)) == (9843, 2468)
    assert train.points.shape == (9843, 1024, 3) and train.points.dtype == torch.float32
    assert train.class_names == CLASS_NAMES and len(CLASS_NAMES) == 40
    for clouds in (train, hdf5_test):  # label agrees with the class in the shape id
        named = [sid.rsplit("_", 1)[0] for sid in clouds.shape_ids]
        assert [CLASS_NAMES[i] for i in clouds.labels.tolist()] == named
    assert torch.bincount(hdf5_test.labels, minlength=40)[CLASS_NAMES.index("airplane")] == 100


@needs_shared
def test_hdf5_foreign_prefix_normals_and_any_point_count(tmp_path):
    (tmp_path / "ply_data_train0.h5").symlink_to(HDF5_DIR / "ply_data_train0.h5")
    (tmp_path / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "ply_data_test0.h5", "w") as h5:
        h5["data"] = rng.normal(size=(5, 77, 3)).astype(np.float32)
        h5["normal"] = rng.normal(size=(5, 77, 3)).astype(np.float32)
        h5["label"] = np.array([[0], [3], [39], [1], [2]], dtype=np.uint8)
    (tmp_path / "test_files.txt").write_text("/elsewhere/ply_data_test0.h5\r\n")
    assert find_layout(tmp_path) == ("hdf5", tmp_path)
    assert len(load_split(tmp_path, "train")) == 9843
    test = load_split(tmp_path, "test", use_normals=True)
    assert test.points.shape == test.normals.shape == (5, 77, 3)
    assert test.labels.tolist() == [0, 3, 39, 1, 2]
    with pytest.raises(ValueError, match="no 'normal' dataset"):
        load_split(tmp_path, "train", use_normals=True)


def test_hdf5_rejects_nonfinite_normals_and_bad_labels(tmp_path):
    def write(label: np.ndarray, normal: np.ndarray | None = None) -> None:
        with h5py.File(tmp_path / "ply_data_train0.h5", "w") as h5:
            h5["data"] = np.zeros((len(label), 4, 3), dtype=np.float32)
            h5["label"] = label
            h5["normal"] = np.zeros((len(label), 4, 3), dtype=np.float32) if normal is None else normal

    normal = np.zeros((3, 4, 3), dtype=np.float32)
    normal[1, 2, 0] = np.inf
    write(np.array([[0], [1], [2]], dtype=np.uint8), normal)
    assert len(load_split(tmp_path, "train")) == 3  # normals not read: not checked
    with pytest.raises(ValueError, match=r"ply_data_train0\.h5: dataset 'normal' has NaN/inf coordinates "
                                         r"in rows \[1\]"):
        load_split(tmp_path, "train", use_normals=True)
    for label, value, row in ([0, 45], 45, 1), ([-1, 0], -1, 0), ([0.0, 2.5], 2.5, 1):
        write(np.array(label)[:, None])
        with pytest.raises(ValueError, match=rf"ply_data_train0\.h5: dataset 'label' has values \[{value}\] "
                                             rf"in rows \[{row}\], not class indices in \[0, 40\)"):
            load_split(tmp_path, "train")
    (tmp_path / "shape_names.txt").write_text("a\nb\nc\n")  # 3 classes: label 3 is out of range
    write(np.array([[0], [3]]))
    with pytest.raises(ValueError, match=r"values \[3\] in rows \[1\], not class indices in \[0, 3\)"):
        load_split(tmp_path, "train")
    with h5py.File(tmp_path / "ply_data_train0.h5", "w") as h5:  # one label short
        h5["data"], h5["label"] = np.zeros((3, 4, 3), dtype=np.float32), np.zeros((2, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"ply_data_train0\.h5: 2 labels for 3 shapes"):
        load_split(tmp_path, "train")


@needs_shared
def test_datamodule_hdf5_splits_and_determinism():
    dm = ModelNet40DataModule(str(SHARED), num_points=512, test_rotation="so3", batch_size=8)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes["train"] + sizes["val"] == 9843 and sizes["test"] == 2468
    assert abs(sizes["val"] - 984) <= 20  # 10 % per class, rounded
    assert dm.format == "hdf5" and dm.num_classes == 40
    train_rows, val_rows = dm.datasets["train"].indices, dm.datasets["val"].indices
    assert not set(train_rows.tolist()) & set(val_rows.tolist())
    again = ModelNet40DataModule(str(SHARED), limit=50)
    again.setup()
    assert set(again.datasets["val"].indices.tolist()) <= set(val_rows.tolist())
    assert len(again.datasets["train"]) == len(again.datasets["test"]) == 50
    a, b = dm.datasets["test"][7], dm.datasets["test"][7]
    assert torch.equal(a.pos, b.pos) and a.pos.shape == (512, 3)  # evaluation: fixed
    assert torch.allclose(a.pos.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.isclose(a.pos.norm(dim=1).max(), torch.tensor(1.0))
    t1, t2 = dm.datasets["train"][0], dm.datasets["train"][0]
    assert not torch.equal(t1.pos, t2.pos)  # training: fresh subset each access
    batch = next(iter(dm.train_dataloader()))
    assert batch.pos.shape == (8 * 512, 3) and batch.y.shape == (8,) and batch.y.dtype == torch.long


# ---------------------------------------------------------------- rotation protocols


@needs_shared
@pytest.mark.parametrize("kind", ["z", "so3", "o3"])
def test_rotation_protocols(hdf5_test, kind):
    plain = ModelNet40(hdf5_test, num_points=1024)
    dets = []
    for i in range(24):
        ref = plain[i].pos
        pos = ModelNet40(hdf5_test, num_points=1024, rotation=kind, train=True)[i].pos
        rot = _fit_rotation(ref, pos)
        assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=rot.dtype), atol=1e-4)
        dets.append(round(float(torch.det(rot))))
        if kind == "z":
            assert torch.allclose(pos[:, 2], ref[:, 2], atol=1e-6)
    assert set(dets) == ({-1, 1} if kind == "o3" else {1})


# ---------------------------------------------------------------- OFF


@needs_shared
def test_all_shared_off_meshes_parse():
    files = sorted(OFF_DIR.glob("*/*/*.off"))
    assert len(files) == 15
    for f in files:
        header = [ln for ln in f.read_text().splitlines() if ln.strip()][1].split()
        verts, faces = read_off(f)
        assert verts.shape == (int(header[0]), 3) and faces.shape == (int(header[1]), 3)
        assert np.isfinite(verts).all() and 0 <= faces.min() and faces.max() < len(verts)


def test_off_parser_robustness(tmp_path):
    glitch = tmp_path / "glitch.off"  # OFF<nv> <nf> <ne>, CRLF, comments, blank lines, polygons
    glitch.write_bytes(b"OFF6 3 0\r\n# a comment\r\n\r\n0 0 0\r\n1 0 0\r\n1 1 0\r\n0 1 0\r\n"
                       b"2 2 0 # trailing comment\r\n2 0 1\r\n3 0 1 2\r\n4 0 1 2 3\r\n"
                       b"5 0 1 4 5 3 255 0 0\r\n")
    verts, faces = read_off(glitch)
    assert verts.shape == (6, 3)
    assert faces.tolist() == [[0, 1, 2], [0, 1, 2], [0, 2, 3], [0, 1, 4], [0, 4, 5], [0, 5, 3]]
    cases = {
        "HEADER\n1 0 0\n": (1, "expected 'OFF'"),
        "OFF\n2 0 0\n0 0 0\n1 2\n": (4, "vertex 1 needs 3 coordinates"),
        "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n": (6, "out of range"),
        "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 x 2\n": (6, "integer"),
        "OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n": (6, "expected 2 faces"),
        "OFF\nthree 1 0\n": (2, "integer counts"),
        # right total token count, wrong columns per line: must not be reshaped into other vertices/faces
        "OFF\n2 0 0\n0 0 0 1\n1 0\n": (4, "vertex 1 needs 3 coordinates"),
        "OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2 3\n1 2 3\n": (8, "face needs >= 3 vertex indices"),
        "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 99999999999999999999\n": (6, "out of range"),
        "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 -1\n": (6, "out of range"),
    }
    for text, (line, message) in cases.items():
        bad = tmp_path / "bad.off"
        bad.write_text(text)
        with pytest.raises(ValueError, match=rf"bad\.off:{line}: .*{message}"):
            read_off(bad)


def test_off_extra_columns_are_ignored(tmp_path):
    """Colour columns after vertices/faces, on every line (fast path) or on some (careful path)."""
    square = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    for colours in (["255 0 0"] * 4, ["1", "", "1", ""]):
        mesh = tmp_path / "colour.off"
        rows = "".join(f"{x} {y} {z} {c}\n" for (x, y, z), c in zip(square, colours, strict=True))
        mesh.write_text(f"OFF\n4 2 0\n{rows}3 0 1 2 {colours[0]}\n3 0 2 3 {colours[1]}\n")
        verts, faces = read_off(mesh)
        assert verts.tolist() == square and faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_area_weighted_sampling():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 1, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 1.5: expected counts 1:3
    points, normals, face = sample_surface(verts, faces, 40000, np.random.default_rng(0))
    counts = np.bincount(face, minlength=2)
    assert abs(counts[1] / counts[0] - 3.0) < 0.15
    first = points[face == 0]
    assert (first[:, :2] >= -1e-12).all() and (first[:, :2].sum(1) <= 1 + 1e-12).all()
    assert np.allclose(np.abs(normals[:, 2]), 1.0)
    with pytest.raises(ValueError, match="surface area"):
        sample_surface(verts, np.array([[0, 0, 1]]), 10, np.random.default_rng(0))


@needs_shared
def test_off_layout_labels_match_hdf5_and_cache_is_atomic(tmp_path, hdf5_test, monkeypatch):
    cache = tmp_path / "cache"
    train = load_split(OFF_DIR.parent, "train", format="off", use_normals=True,
                       points_per_shape=1024, cache_dir=cache)
    assert len(train) == 14 and train.normals.shape == (14, 1024, 3)
    names = [CLASS_NAMES[i] for i in train.labels.tolist()]
    assert names == [sid.rsplit("_", 1)[0] for sid in train.shape_ids]
    assert set(train.labels.tolist()) == {0, 1, 2, 15, 32}  # standard numbering, 5 classes
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("off_train_1024_uniform") and files[0].endswith(".pt")
    # the cache is reused: no sampling on the second load
    monkeypatch.setattr(modelnet_io, "sample_off", lambda *a, **k: pytest.fail("cache not used"))
    again = load_split(OFF_DIR.parent, "train", format="off", points_per_shape=1024, cache_dir=cache)
    assert torch.equal(again.points, train.points)
    monkeypatch.undo()
    parallel = load_split(OFF_DIR.parent, "train", format="off", points_per_shape=1024, processes=2)
    assert torch.equal(parallel.points, train.points)  # deterministic per shape, not per order
    # a failed write leaves neither a partial cache file nor a temp file
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(modelnet_io.torch, "save", disk_full)
    with pytest.raises(OSError, match="disk full"):
        load_split(OFF_DIR.parent, "test", format="off", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == files
    monkeypatch.undo()
    # the sampled test mesh agrees with the HDF5 cloud of the same shape id (same class index)
    test = load_split(SHARED, "test", format="off", points_per_shape=2048, off_sampling="fps",
                      cache_dir=cache)
    assert test.shape_ids == ["chair_0890"] and test.labels.tolist() == [CLASS_NAMES.index("chair")]
    row = hdf5_test.shape_ids.index("chair_0890")
    assert hdf5_test.labels[row] == test.labels[0]
    ref = ModelNet40(hdf5_test, [row])[0].pos
    ours = ModelNet40(test)[0].pos
    assert torch.cdist(ref, ours).min(dim=1).values.mean() < 0.03


# ---------------------------------------------------------------- normal-resampled text


@pytest.fixture
def text_root(tmp_path, hdf5_test):
    root = tmp_path / "modelnet40_normal_resampled"
    rows = {"train": [0, 150, 900, 2000], "test": [300, 2400]}
    for split, picks in rows.items():
        ids = [hdf5_test.shape_ids[r] for r in picks]
        (root / f"modelnet40_{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
        for r, sid in zip(picks, ids, strict=True):
            pos = hdf5_test.points[r].numpy() * 3.0 + 1.0  # un-normalised on purpose
            normal = pos / np.linalg.norm(pos, axis=1, keepdims=True)
            path = root / sid.rsplit("_", 1)[0] / f"{sid}.txt"
            path.parent.mkdir(exist_ok=True)
            np.savetxt(path, np.hstack([pos, normal]), fmt="%.6f", delimiter=",")
    (root / "modelnet40_shape_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return tmp_path, rows


@needs_shared
def test_normal_resampled_reader(text_root, hdf5_test):
    base, rows = text_root
    assert find_layout(base)[0] == "normal_resampled"
    train = load_split(base, "train", use_normals=True, points_per_shape=512, cache_dir=base / "c")
    assert train.points.shape == train.normals.shape == (4, 512, 3)
    assert train.labels.tolist() == hdf5_test.labels[rows["train"]].tolist()
    expect = hdf5_test.points[rows["train"], :512] * 3.0 + 1.0
    assert torch.allclose(train.points, expect, atol=1e-5)
    dm = ModelNet40DataModule(str(base), num_points=256, use_normals=True, train_rotation="o3",
                              val_fraction=0.0, points_per_shape=512, cache_dir=str(base / "c"))
    dm.setup()
    assert dm.format == "normal_resampled" and len(dm.datasets["val"]) == 2
    plain = ModelNet40(train, num_points=256, use_normals=True, seed=3)[1]
    item = ModelNet40(train, num_points=256, use_normals=True, rotation="o3", train=False, seed=3)[1]
    rot = _fit_rotation(plain.pos, item.pos)  # same subset in eval mode; normals rotate along
    assert torch.allclose(item.normal.double(), plain.normal.double() @ rot.T, atol=1e-4)
    sid = hdf5_test.shape_ids[0]
    (base / "modelnet40_normal_resampled" / "airplane" / f"{sid}.txt").write_text("1,2,3,0,0,1\n1,2,3\n")
    with pytest.raises(ValueError, match=rf"{sid}\.txt:2: expected 'x,y,z,nx,ny,nz'"):
        load_split(base, "train")


def _write_text_root(base: Path, clouds: dict[str, str]) -> Path:
    """A normal_resampled root under ``base`` whose train split holds ``clouds`` (shape id -> file text)."""
    root = base / "modelnet40_normal_resampled"
    root.mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (root / "modelnet40_train.txt").write_text("\n".join(clouds) + "\n")
    for sid, text in clouds.items():
        path = root / sid.rsplit("_", 1)[0] / f"{sid}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return root


def test_normal_resampled_bad_files_are_named(tmp_path):
    """A short/empty/non-finite/misaligned file fails naming it (and the line), caching nothing."""
    good, short = ("".join(f"{i},0,0,0,0,1\n" for i in range(n)) for n in (8, 3))
    cases = {
        short: r"bed_0001\.txt: 3 points, fewer than points_per_shape=8",
        "": r"bed_0001\.txt: 0 points, fewer than points_per_shape=8",
        "\n" + good.replace("2,0,0", "nan,0,0"): r"bed_0001\.txt:4: NaN/inf values in 'nan,0,0,0,0,1'",
        good.replace("0,0,0,0,1\n1,0,0,0,0,1", "0,0,0,0,1,1\n0,0,0,0,1"): r"bed_0001\.txt:1: expected 'x,y,z",
        good.replace("3,0,0", "3,x,0"): r"bed_0001\.txt:4: non-numeric values in '3,x,0,0,0,1'",
    }
    for n, (text, message) in enumerate(cases.items()):
        base = tmp_path / str(n)
        _write_text_root(base, {"airplane_0001": good, "bed_0001": text, "chair_0001": good})
        with pytest.raises(ValueError, match=message):
            load_split(base, "train", points_per_shape=8, cache_dir=base / "cache")
        assert not (base / "cache").exists()
    assert load_split(base, "train", points_per_shape=3).points.shape == (3, 3, 3)  # bad line 4 not read
    _write_text_root(tmp_path / "all", {"airplane_0001": good, "bed_0001": good[12:], "chair_0001": good})
    with pytest.raises(ValueError, match=r"bed_0001\.txt: 7 points, but .*airplane_0001\.txt has 8; "
                                         r"set points_per_shape <= 7"):
        modelnet_io.read_normal_resampled(tmp_path / "all" / "modelnet40_normal_resampled", "train", None)


def test_missing_listed_files_name_the_list_file(tmp_path):
    """A listing that names files which are not there fails naming the listing (which to fix)."""
    with h5py.File(tmp_path / "ply_data_train0.h5", "w") as h5:
        h5["data"], h5["label"] = np.zeros((2, 4, 3), dtype=np.float32), np.zeros((2, 1), dtype=np.uint8)
    (tmp_path / "train_files.txt").write_text("data/ply_data_train0.h5\ndata/ply_data_train1.h5\n")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/train_files\.txt lists 2 HDF5 files of split "
                                                r"'train'; 1 are missing, e\.g\. \[.*ply_data_train1\.h5'\]"):
        load_split(tmp_path, "train")
    (tmp_path / "train_files.txt").write_text("\n")
    with pytest.raises(FileNotFoundError, match=r"train_files\.txt lists no HDF5 files of split 'train'"):
        load_split(tmp_path, "train")
    good = "".join(f"{i},0,0,0,0,1\n" for i in range(8))
    root = _write_text_root(tmp_path / "text", {"airplane_0001": good})
    (root / "modelnet40_train.txt").write_text("airplane_0001\nbed_0007\n")
    with pytest.raises(FileNotFoundError,
                       match=r"modelnet40_train\.txt: 1 of its 2 listed files are missing, e.g. .*bed_0007"):
        load_split(root, "train", points_per_shape=8)


def test_tiny_set_still_gets_a_validation_split(tmp_path):
    """Two shapes per class: no class's 10 % rounds to a shape, so the held-out shapes are drawn across
    classes (Lightning would otherwise skip validation with a warning and monitor nothing)."""
    good = "".join(f"{i},{i % 3},{i % 5},0,0,1\n" for i in range(8))
    shapes = {f"{c}_000{k}": good for c in ("airplane", "bed", "chair", "desk", "lamp") for k in (1, 2)}
    root = _write_text_root(tmp_path, shapes)
    (root / "modelnet40_test.txt").write_text("airplane_0001\nbed_0001\n")
    datamodule = ModelNet40DataModule(str(tmp_path), num_points=8, points_per_shape=8, val_fraction=0.1)
    datamodule.setup()
    assert {k: len(v) for k, v in datamodule.datasets.items()} == {"train": 9, "val": 1, "test": 2}
    assert len(next(iter(datamodule.val_dataloader())).y) == 1
    train_rows, val_rows = (datamodule.datasets[k].indices.tolist() for k in ("train", "val"))
    assert sorted(train_rows + val_rows) == list(range(10))
    with pytest.raises(ValueError, match=r"val_fraction=0\.1 holds out training shapes for validation, but "
                                         r"there is 1; set val_fraction=0"):
        stratified_split(torch.tensor([3]), 0.1, seed=0)


# ---------------------------------------------------------------- errors and config


def test_missing_or_unrecognised_root_lists_layouts(tmp_path):
    for root in (tmp_path / "nope", tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            find_layout(root)
        text = str(err.value)
        assert str(root) in text and "ply_data_" in text
        assert "modelnet40_shape_names.txt" in text and "<class>/{train,test}/<class>_XXXX.off" in text
    with pytest.raises(ValueError, match="unknown ModelNet format"):
        find_layout(tmp_path, "ply")
    with pytest.raises(ValueError, match="unknown train_rotation"):
        ModelNet40DataModule(str(tmp_path), train_rotation="so2")


@needs_shared
def test_format_choice_and_bad_num_points(hdf5_test):
    assert find_layout(SHARED) == ("hdf5", HDF5_DIR)
    assert find_layout(SHARED, "off") == ("off", OFF_DIR)
    with pytest.raises(FileNotFoundError, match="format 'normal_resampled'"):
        find_layout(SHARED, "normal_resampled")
    with pytest.raises(ValueError, match="num_points=2048 but the data has 1024"):
        ModelNet40(hdf5_test, num_points=2048)
    with pytest.raises(ValueError, match="no normals"):
        ModelNet40(hdf5_test, use_normals=True)


def test_dataset_configs_instantiate():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf" / "dataset"
    for name in ("modelnet40", "modelnet40_tiny"):
        cfg = OmegaConf.load(conf / f"{name}.yaml")
        cfg = OmegaConf.merge(cfg, {"root": str(SHARED), "cache_dir": None})
        cfg.pop("defaults", None)
        dm = instantiate(cfg)
        assert isinstance(dm, ModelNet40DataModule) and dm.num_classes == 40


def test_cache_key_mismatch_rebuilds(tmp_path):
    path = tmp_path / "c.pt"
    calls = []
    build = lambda: calls.append(1) or {"x": len(calls)}  # noqa: E731
    assert modelnet_io._cached(path, {"v": 1}, build)["x"] == 1
    assert modelnet_io._cached(path, {"v": 1}, build)["x"] == 1 and len(calls) == 1
    assert modelnet_io._cached(path, {"v": 2}, build)["x"] == 2
    assert os.listdir(tmp_path) == ["c.pt"]


def test_cache_file_gets_the_usual_permissions(tmp_path):
    """mkstemp makes 0600 files; a cache in a shared data dir must be readable as umask allows."""
    old = os.umask(0o022)
    try:
        modelnet_io._cached(tmp_path / "c.pt", {"v": 1}, lambda: {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644


def test_file_fingerprint_sees_same_size_edits(tmp_path):
    mesh = tmp_path / "a.off"
    mesh.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    before = modelnet_io._fingerprint([mesh], tmp_path)
    mesh.write_text("OFF\n3 1 0\n0 0 0\n0 1 0\n1 0 0\n3 0 1 2\n")  # same bytes count, other mesh
    os.utime(mesh, ns=(mesh.stat().st_atime_ns, mesh.stat().st_mtime_ns + 1_000_000))
    assert modelnet_io._fingerprint([mesh], tmp_path) != before


def test_evaluation_transforms_are_fixed_per_item():
    """``model.sampling=random``: an evaluation item's point hierarchy is the same at every access
    (seeded by the item, whatever the global RNG holds, which it leaves as it was); training items
    draw a fresh one."""
    from steerable.data.modelnet_layout import CloudSet
    from steerable.models.point_hierarchy import PointHierarchy

    gen = torch.Generator().manual_seed(0)
    clouds = CloudSet(torch.randn(3, 64, 3, generator=gen), torch.tensor([0, 1, 2]), None,
                      ["airplane_0001", "bathtub_0001", "bed_0001"])
    hierarchy = PointHierarchy([{"ratio": 0.25, "k": 4}, {"ratio": 0.5, "k": 4}], sampling="random")

    def keeps(train: bool) -> list[torch.Tensor]:
        item = ModelNet40(clouds, num_points=64, train=train, transform=hierarchy)[1]
        return [item.hierarchy_keep_1, item.hierarchy_keep_2]

    first = keeps(train=False)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    again = keeps(train=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    draws = [keeps(train=True)[0] for _ in range(4)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])
