"""QM9 data: parsing, bonds, targets, split, cache, readers — on the real qm9pack files (few hundred
molecules; the whole file runs in well under a minute)."""

from __future__ import annotations

import ast
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steerable.data import qm9, qm9_bonds, qm9_cache
from steerable.data.mol_graph import build_edges, num_bond_types
from steerable.data.molecules import molecules_to_batch, parse_xyz, read_molecules
from steerable.data.qm9 import SPLIT_SIZES, QM9DataModule, split_indices
from steerable.data.qm9_polarizability import exact_symmetry_axes, to_coordinate_frame
from steerable.data.qm9_raw import NUM_MOLECULES, qm9pack_data_dir, read_qm9pack
from steerable.data.qm9_targets import ATOM_REFERENCE_HARTREE, HARTREE_TO_MEV, polarizability_matrix

SUBSET = {"train": 160, "val": 40, "test": 40}
SINGLE, DOUBLE, TRIPLE, AROMATIC = range(4)
CO2_XYZ = "3\ncarbon dioxide\nC 0.0 0.0 0.0\nO 0.0 0.0 1.16\nO 0.0 0.0 -1.16\n"
WATER_XYZ = "3\nwater\nO 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"


@pytest.fixture(scope="module")
def raw():
    return read_qm9pack()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qm9data")


@pytest.fixture(scope="module")
def dm(data_dir, raw):
    rows = np.concatenate([v[: SUBSET[k]] for k, v in split_indices().items()])
    qm9_cache.load_or_build(data_dir, rows, NUM_MOLECULES, lambda: raw, progress=False)  # one CSV read
    module = QM9DataModule(
        data_dir=str(data_dir),
        targets=["homo", "U0", "Cv", "polarizability_tensor"],
        atomization=True,
        subset=SUBSET,
        progress=False,
    )
    module.setup()
    return module


def _row(raw, smiles: str) -> int:
    return int(np.flatnonzero(raw.smiles == smiles)[0])


def _molecule(raw, row: int):
    a, b = raw.atom_ptr[row], raw.atom_ptr[row + 1]
    return raw.z[a:b], raw.pos[a:b]


# --- raw parsing -------------------------------------------------------------------------------


def test_raw_matches_csv_literals(raw):
    assert len(raw) == NUM_MOLECULES and raw.atom_ptr[-1] == len(raw.z)
    assert (np.diff(raw.index) > 0).all() and raw.index[0] == 1 and raw.index[-1] == 133_885
    first = pd.read_csv(qm9pack_data_dir() / "qm9_part1.csv", nrows=1).iloc[0]
    z, pos = _molecule(raw, 0)
    assert z.tolist() == [{"C": 6, "H": 1}[e] for e in ast.literal_eval(first["Elements"])]
    np.testing.assert_array_equal(pos, np.array(ast.literal_eval(first["XYZ_Ang"])))
    assert raw.name[0] == "dsgdb9nsd_000001" and raw.smiles[0] == "C"


# --- bonds -------------------------------------------------------------------------------------


def _bond_types(bonds: np.ndarray, heavy: np.ndarray) -> list[int]:
    """Types of bonds between heavy atoms (z > 1)."""
    mask = heavy[bonds[:, 0]] & heavy[bonds[:, 1]]
    return sorted(bonds[mask, 2].tolist())


def test_benzene_has_six_aromatic_bonds(raw):
    z, pos = _molecule(raw, _row(raw, "C1=CC=CC=C1"))  # QM9 index 214
    bonds, method, match = qm9_bonds.perceive_bonds(z, pos, "C1=CC=CC=C1")
    assert _bond_types(bonds, z > 1) == [AROMATIC] * 6
    assert (bonds[:, 2] == SINGLE).sum() == 6 and method == 0 and match == 1


def test_acetylene_triple_and_co2_doubles(raw):
    z, pos = _molecule(raw, _row(raw, "C#C"))  # QM9 index 4
    assert _bond_types(qm9_bonds.perceive_bonds(z, pos, "C#C")[0], z > 1) == [TRIPLE]
    z, pos = parse_xyz(CO2_XYZ)  # CO2 is not in QM9
    assert _bond_types(qm9_bonds.perceive_bonds(z, pos)[0], z > 1) == [DOUBLE, DOUBLE]


def test_hueckel_fallback_on_strained_cage(raw):
    smiles = "CC12CC(C1)(O2)C=O"  # connect-the-dots over-bonds this cage
    z, pos = _molecule(raw, _row(raw, smiles))
    bonds, method, match = qm9_bonds.perceive_bonds(z, pos, smiles)
    assert qm9_bonds.METHODS[method] == "determine_bonds_hueckel" and match == 1


def test_zwitterion_takes_bond_orders_from_smiles(raw):
    smiles = "C[NH+]=C(N)C([O-])=O"  # charge-0 perception finds a neutral resonance form instead
    z, pos = _molecule(raw, _row(raw, smiles))
    bonds, method, match = qm9_bonds.perceive_bonds(z, pos, smiles)
    assert qm9_bonds.METHODS[method] == "smiles_template" and match == 1
    assert _bond_types(bonds, z > 1) == [SINGLE] * 4 + [DOUBLE] * 2  # C=[NH+], C=O


def test_last_fallback_is_covalent_single_bonds(raw, monkeypatch):
    def fail(*args, **kwargs):
        raise ValueError("forced failure")

    monkeypatch.setattr(qm9_bonds.rdDetermineBonds, "DetermineBonds", fail)
    z, pos = _molecule(raw, _row(raw, "C1=CC=CC=C1"))
    bonds, method, _ = qm9_bonds.perceive_bonds(z, pos, "C1=CC=CC=C1")
    assert qm9_bonds.METHODS[method] == "smiles_template"
    assert _bond_types(bonds, z > 1) == [AROMATIC] * 6
    bonds, method, match = qm9_bonds.perceive_bonds(z, pos, None)
    assert qm9_bonds.METHODS[method] == "covalent_radius" and match == -1
    assert len(bonds) == 12 and (bonds[:, 2] == SINGLE).all()


# --- split -------------------------------------------------------------------------------------


def test_split_full_index_list():
    splits = split_indices(NUM_MOLECULES, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    everything = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(everything), np.arange(NUM_MOLECULES))  # disjoint and complete
    again = split_indices(NUM_MOLECULES, seed=0)
    assert all(np.array_equal(splits[k], again[k]) for k in SPLIT_SIZES)
    assert not np.array_equal(splits["test"], split_indices(NUM_MOLECULES, seed=1)["test"])
    # pins numpy's PCG64 stream (rows in ascending QM9 index): if it changed, the split would too
    assert [splits[k][:3].tolist() for k in SPLIT_SIZES] == [
        [2275, 111633, 104936],
        [6401, 70801, 128909],
        [38546, 50654, 106821],
    ]
    with pytest.raises(ValueError, match="add up"):
        split_indices(10, sizes={"train": 5, "val": 3, "test": 3})


# --- targets -----------------------------------------------------------------------------------


def test_target_units_against_csv_row(dm):
    item = next(d for d in dm.datasets["train"] if d.idx <= 44_746)  # lies in qm9_part1.csv
    table = pd.read_csv(qm9pack_data_dir() / "qm9_part1.csv")
    row = table[table["Index"] == item.idx].iloc[0]
    assert item.name == row["XYZ_file"].removesuffix(".xyz")
    elements = ast.literal_eval(row["Elements"])
    atoms = sum(ATOM_REFERENCE_HARTREE["U0"]["HCNOF".index(e)] for e in elements)
    expected = [
        row["HOMO_au"] * 27_211.386,
        (row["InternalEnergy_0K_au"] - atoms) * HARTREE_TO_MEV,
        row["Heatcapacity_Cv_cal_mol_K"],
    ]
    np.testing.assert_allclose(item.y[0, :3].numpy(), expected, rtol=1e-6)
    assert dm.target_names[:3] == ["homo", "U0_atom", "Cv"]
    assert dm.target_units[:3] == ["meV", "meV", "cal_mol_K"]


def test_polarizability_tensor_target(dm, raw):
    y = dm.datasets["val"].y[:, 3:].reshape(-1, 3, 3)
    assert y.shape[1:] == (3, 3) and torch.equal(y, y.transpose(1, 2))
    rows = dm.datasets["val"].cache["row"].numpy()
    alpha = torch.from_numpy(raw.props[rows, 1]).double()
    torch.testing.assert_close(y.diagonal(dim1=1, dim2=2).mean(1), alpha, atol=0.01, rtol=0)
    assert dm.target_units[3:] == ["bohr3"] * 9 and len(dm.target_names) == dm.num_targets == 12
    assert (dm.target_mean[3:] == 0).all() and (dm.target_std[3:] == dm.target_std[3]).all()


def _traceless(a: np.ndarray) -> np.ndarray:
    return a - np.trace(a, axis1=-2, axis2=-1)[..., None, None] / 3 * np.eye(3)


@pytest.fixture(scope="module")
def rotated(raw):
    """First 3,000 molecules' polarizability tensors rotated into the frame of ``pos``."""
    m = 3000
    ptr = raw.atom_ptr[: m + 1]
    raw_tensors = polarizability_matrix(raw.polarizability[:m])
    tensors, _ = to_coordinate_frame(raw_tensors, raw.z[: ptr[-1]], raw.pos[: ptr[-1]], ptr)
    return raw_tensors, tensors


def test_polarizability_frame_planar_molecules(raw, rotated):
    raw_tensors, tensors = rotated
    np.testing.assert_allclose(np.linalg.eigvalsh(tensors), np.linalg.eigvalsh(raw_tensors), atol=1e-9)
    checked = 0
    for m in range(len(tensors)):
        z, pos = _molecule(raw, m)
        centred = pos - pos.mean(0)
        _, sv, vt = np.linalg.svd(centred)
        if len(z) < 4 or sv[2] > 1e-3 * sv[0] or sv[1] < 1e-3 * sv[0]:
            continue  # not planar, or linear (no unique plane)
        normal = vt[2]  # the plane's normal must be a principal axis of the tensor
        np.testing.assert_allclose(tensors[m] @ normal, (normal @ tensors[m] @ normal) * normal, atol=2e-2)
        checked += 1
    assert checked > 100
    z, pos = _molecule(raw, _row(raw, "C#C"))
    axis = (pos[1] - pos[0]) / np.linalg.norm(pos[1] - pos[0])
    np.testing.assert_allclose(tensors[_row(raw, "C#C")] @ axis, 27.863 * axis, atol=2e-3)


def test_polarizability_frame_is_rotation_equivariant(raw):
    """Rotating the coordinates rotates the recovered tensor: A(R·pos) = R A(pos) Rᵀ."""
    m = 500
    ptr = raw.atom_ptr[: m + 1]
    tensors = polarizability_matrix(raw.polarizability[:m])
    generator = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))[0].numpy()
    rotation *= np.linalg.det(rotation)  # proper, orthogonal to float64 precision (water stays exactly C2v)
    pos = raw.pos[: ptr[-1]]
    before, _ = to_coordinate_frame(tensors, raw.z[: ptr[-1]], pos, ptr)
    after, _ = to_coordinate_frame(tensors, raw.z[: ptr[-1]], pos @ rotation.T, ptr)
    np.testing.assert_allclose(after, rotation @ before @ rotation.T, atol=5e-3)


def test_polarizability_frame_matches_bond_directions(raw, rotated):
    """Anisotropy follows bond directions (cosine ~0.36 on average) only in the rotated frame."""
    raw_tensors, tensors = rotated
    cosines = []
    for m in range(len(tensors)):
        z, pos = _molecule(raw, m)
        bonds = qm9_bonds.covalent_bonds(z, pos)
        u = pos[bonds[:, 1]] - pos[bonds[:, 0]]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        model = _traceless(u.T @ u)
        for k, a in enumerate((raw_tensors[m], tensors[m])):
            a = _traceless(a)
            denominator = np.linalg.norm(a) * np.linalg.norm(model)
            if denominator > 1e-6:
                cosines.append((k, (a * model).sum() / denominator))
    cosines = np.array(cosines)
    assert cosines[cosines[:, 0] == 1, 1].mean() > 0.3 > 0.1 > abs(cosines[cosines[:, 0] == 0, 1].mean())


def test_water_polarizability_follows_its_symmetry(raw):
    """Water's frame built from its atoms: the largest component lies along H–H, the smallest along
    the plane normal, the middle one along the two-fold axis (finite-field B3LYP agrees)."""
    row = _row(raw, "O")
    z, pos = _molecule(raw, row)
    oxygen, h1, h2 = pos[z == 8][0], *pos[z == 1]
    hh = (h1 - h2) / np.linalg.norm(h1 - h2)
    c2 = oxygen - (h1 + h2) / 2
    c2 /= np.linalg.norm(c2)
    normal = np.cross(hh, c2)
    tensor, counts = to_coordinate_frame(polarizability_matrix(raw.polarizability[row:row + 1]), z, pos,
                                         np.array([0, len(z)]))
    for axis, value in ((hh, 8.049), (c2, 6.398), (normal, 4.492)):
        np.testing.assert_allclose(tensor[0] @ axis, value * axis, atol=2e-3)
    assert counts["symmetric_frames"] == 1 and counts["symmetric_in_plane_guessed"] == 0


def test_exactly_symmetric_molecules_and_float32_positions(raw):
    """Only QM9's exactly symmetric geometries (water and 7 with one mirror plane) take their symmetry's
    frame; nearly symmetric ones (formaldehyde: 1e-5 Å off) keep the general rule. float32 positions
    (the cache's) mostly cannot tell them apart, so the axis is found once on QM9's own positions."""
    axes = exact_symmetry_axes(raw.z, raw.pos, raw.atom_ptr)
    symmetric = np.flatnonzero(axes >= 0)
    assert sorted(raw.smiles[symmetric]) == sorted([
        "O", "C1OC2=CC=CC=C2O1", "C1OCC2=CC=CC=C12", "O=C1OC2=C(CCC2)O1", "O=C1CC2C3CC2C3C1",
        "O=C1CC2C3OC2C3C1", "CC(C)N=COCC#C", "C1OCC2=CN=NC=C12"])
    assert axes[_row(raw, "C=O")] == -1
    rows = np.concatenate([symmetric, [_row(raw, "C=O")]])
    starts, ends = raw.atom_ptr[rows], raw.atom_ptr[rows + 1]
    atoms = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
    ptr = np.concatenate([[0], np.cumsum(ends - starts)])
    z, pos, tensors = raw.z[atoms], raw.pos[atoms], polarizability_matrix(raw.polarizability[rows])
    exact, counts = to_coordinate_frame(tensors, z, pos, ptr)
    assert counts["symmetric_frames"] == 8 and counts["symmetric_in_plane_guessed"] == 7
    rounded = pos.astype(np.float32).astype(np.float64)
    assert (exact_symmetry_axes(z, rounded, ptr) != axes[rows]).sum() >= 5  # most are lost in float32
    cached, _ = to_coordinate_frame(tensors, z, rounded, ptr, axes[rows])
    np.testing.assert_allclose(cached, exact, atol=1e-4)


# --- datamodule and graphs ---------------------------------------------------------------------


def test_datamodule_batches(dm):
    assert {k: len(v) for k, v in dm.datasets.items()} == SUBSET
    assert dm.num_atom_types == 5 and dm.num_bond_types == 4
    batch = next(iter(dm.val_dataloader()))
    n, e = batch.num_nodes, batch.edge_index.shape[1]
    assert batch.pos.shape == (n, 3) and batch.pos.dtype == torch.float32
    assert batch.x.shape == (n, 5) and torch.equal(batch.x.sum(1), torch.ones(n))
    assert batch.edge_attr.shape == (e, 4) and batch.y.shape == (batch.num_graphs, 12)
    assert e % 2 == 0 and set(map(tuple, batch.edge_index.T.tolist())) == set(
        map(tuple, batch.edge_index.flip(0).T.tolist())
    )
    summary = dm.summary()
    for method in qm9_bonds.METHODS:
        assert f"bonds_by_{method}" in summary
    assert "polarizability_mirror_sign_guessed" in summary and "polarizability_symmetric_frames" in summary
    mean = dm.datasets["train"].y.mean(0)
    assert dm.datasets["train"].y.dtype == torch.float64  # total energies (~1e7 meV) need it
    torch.testing.assert_close(dm.target_mean[:3], mean[:3])


@pytest.mark.parametrize("graph", ["radius", "full"])
def test_radius_and_full_graphs(graph):
    pos = torch.tensor([[0.0, 0, 0], [1.2, 0, 0], [3.0, 0, 0], [9.0, 0, 0]])
    bonds = torch.tensor([[0, 1, DOUBLE]])
    edge_index, edge_attr = build_edges(pos, bonds, graph, radius=2.0)
    pairs = {tuple(p): a.argmax().item() for p, a in zip(edge_index.T.tolist(), edge_attr, strict=True)}
    assert edge_attr.shape[1] == num_bond_types(graph) == 5
    assert pairs[(0, 1)] == pairs[(1, 0)] == DOUBLE and pairs[(1, 2)] == 4  # "no bond"
    expected = 12 if graph == "full" else 4  # radius 2 Å: 0–1 and 1–2, both directions
    assert len(pairs) == expected and all(i != j for i, j in pairs)


def test_limit_and_bad_arguments(data_dir):
    module = QM9DataModule(data_dir=str(data_dir), limit=8, subset={"train": 4}, progress=False)
    assert module._split_rows()["train"].size == 4 and module._split_rows()["test"].size == 8
    with pytest.raises(ValueError, match="unknown QM9 target"):
        QM9DataModule(targets=["homo", "lumoo"])
    with pytest.raises(ValueError, match="unknown graph"):
        QM9DataModule(graph="knn")
    with pytest.raises(ValueError, match=r"per split must be >= 1, got \{'subset.val': 0\}"):
        QM9DataModule(subset={"train": 4, "val": 0})
    for radius in (0.0, -1.0, float("nan")):  # a radius graph without edges
        with pytest.raises(ValueError, match="radius must be > 0 Å"):
            QM9DataModule(graph="radius", radius=radius)


# --- cache -------------------------------------------------------------------------------------


def test_cache_written_atomically_and_reused(dm, data_dir, monkeypatch):
    files = sorted((data_dir / "qm9").iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".")  # no temp file left behind
    rows = np.concatenate(list(dm._split_rows().values()))
    key = qm9_cache.rows_key(rows, NUM_MOLECULES)
    assert files[0] == qm9_cache.cache_path(data_dir, key)
    assert qm9_cache.load_checked(files[0], key) is not None

    def must_not_build():
        raise AssertionError("cache was rebuilt")

    again = qm9_cache.load_or_build(data_dir, rows, NUM_MOLECULES, must_not_build, progress=False)
    assert again["name"] == sum((dm.datasets[k].cache["name"] for k in SPLIT_SIZES), [])
    # a code change (version bump) invalidates it: new file name, and the old file's metadata is stale
    monkeypatch.setattr(qm9_cache, "CACHE_VERSION", qm9_cache.CACHE_VERSION + 1)
    assert qm9_cache.cache_path(data_dir, key) != files[0]
    assert qm9_cache.load_checked(files[0], key) is None


def test_interrupted_or_corrupt_cache_is_not_trusted(raw, tmp_path, monkeypatch):
    rows = np.arange(5)
    key = qm9_cache.rows_key(rows, NUM_MOLECULES)
    path = qm9_cache.cache_path(tmp_path, key)
    real_save = torch.save

    def dying_save(obj, handle):
        real_save(obj, handle)
        handle.truncate(100)
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(qm9_cache.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        qm9_cache.load_or_build(tmp_path, rows, NUM_MOLECULES, lambda: raw, progress=False)
    assert not path.exists() and list(path.parent.iterdir()) == []
    monkeypatch.setattr(qm9_cache.torch, "save", real_save)
    stale = path.with_name(f".{path.name}.tmp-otherhost-999999999-x1y2")  # left by a SIGKILLed writer
    stale.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    path.write_bytes(b"PK\x03\x04 truncated")  # a corrupt file under the final name is rebuilt
    built = qm9_cache.load_or_build(tmp_path, rows, NUM_MOLECULES, lambda: raw, progress=False)
    assert built["name"] == raw.name[:5].tolist() and qm9_cache.load_checked(path, key) is not None
    assert sorted(path.parent.iterdir()) == [path]


def test_live_writers_on_other_hosts_keep_their_temp_files(tmp_path):
    """On a shared file system a pid from another host says nothing: only old temp files are removed,
    and every writer's temp name is unique (host, pid, random part)."""
    path = tmp_path / "qm9" / "cache.pt"
    path.parent.mkdir()
    writing = path.with_name(f".{path.name}.tmp-otherhost-999999999")  # pid not alive here, writer is
    writing.write_bytes(b"being written")
    qm9_cache.save_atomic({"x": torch.arange(3)}, path)
    assert writing.read_bytes() == b"being written"
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by the other users of the cache

    names = []
    real_replace = os.replace

    def record(src, dst):
        names.append(Path(src).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qm9_cache.os, "replace", record)
        qm9_cache.save_atomic({"x": 1}, path)
        qm9_cache.save_atomic({"x": 2}, path)
    prefix = f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"
    assert len(set(names)) == 2 and all(n.startswith(prefix) and len(n) > len(prefix) for n in names)
    assert qm9_cache.remove_stale_temp_files(path) == [] and writing.exists()
    old = time.time() - 2 * 86400
    os.utime(writing, (old, old))
    assert qm9_cache.remove_stale_temp_files(path) == [writing] and not writing.exists()


# --- molecule readers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("three\n\nC 0 0 0\n", 1, "atom count"),
        ("0\n\n", 1, "at least 1"),
        ("2\n\nC 0 0 0\n", 4, "file ends after 1 of 2"),
        ("2\n\nC 0 0 0\nO 0 x 0\n", 4, "'x' is not a number"),
        ("2\n\nC 0 0 0\nCl 0 0 1.7\n", 4, "unknown element 'Cl'"),
        ("2\n\nC 0 0 0\nO 0 nan 1.2\n", 4, "not finite"),
        ("2\n\nC 0 0 0\nO 0 0 inf\n", 4, "not finite"),
        ("2\n\nC 0 0\nO 0 0 1.2\n", 3, "expected 'element x y z'"),
    ],
)
def test_malformed_xyz_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"bad.xyz:{line}: .*{message}"):
        read_molecules(str(path))


def test_read_xyz_directory_and_smiles(tmp_path):
    folder = tmp_path / "mols"
    folder.mkdir()
    (folder / "co2.xyz").write_text(CO2_XYZ)
    qm9_style = WATER_XYZ.replace("-0.4692\n", "-0.4692 0.3\n").replace("0.1173", "1.173*^-1")
    (folder / "water.xyz").write_text(qm9_style + "1595.2 3657.1\nO\n")  # extra columns and lines
    names, batch = molecules_to_batch(str(folder))
    assert names == ["co2", "water"] and batch.num_graphs == 2 and batch.num_nodes == 6
    assert batch.x.shape == (6, 5) and batch.edge_attr.shape == (8, 4)
    dataset_cfg = {"graph": "full", "radius": 2.0, "targets": ["homo"]}  # predict passes the run's config
    _, full = qm9.molecules_to_batch(str(folder), dataset_cfg)
    assert full.edge_attr.shape == (12, 5)
    assert math.isclose(batch.pos[3, 2].item(), 0.1173, rel_tol=1e-6)

    smiles = tmp_path / "list.smi"
    smiles.write_text("# name column optional\nc1ccccc1 benzene\n\nO=C=O\n"
                      "C#N hcn  # a triple bond, then a comment\n")
    molecules = read_molecules(str(smiles), graph="radius", radius=3.0)
    assert [name for name, _ in molecules] == ["benzene", "O=C=O", "hcn"]
    assert sorted(molecules[2][1].z.tolist()) == [1, 6, 7]  # "#" is not a comment inside a SMILES
    benzene = molecules[0][1]
    assert benzene.num_nodes == 12 and benzene.edge_attr.shape[1] == 5
    heavy = (benzene.z > 1)[benzene.edge_index].all(0)
    assert (benzene.edge_attr[heavy].argmax(1) == AROMATIC).sum() == 12  # 6 bonds, both directions
    first = read_molecules("c1ccccc1")[0][1].pos
    torch.testing.assert_close(first, read_molecules("c1ccccc1")[0][1].pos)  # fixed embedding seed

    smiles.write_text("CCO\nC1CC\n")
    with pytest.raises(ValueError, match="list.smi:2: cannot parse SMILES"):
        read_molecules(str(smiles))
    with pytest.raises(ValueError, match="not a file, a directory or a valid SMILES"):
        read_molecules(str(tmp_path / "missing.xyz"))


def test_xyz_directory_skips_subdirectories_and_matches_any_suffix_case(tmp_path):
    folder = tmp_path / "mols"
    (folder / "nested.xyz").mkdir(parents=True)  # a directory, not a molecule
    (folder / "CO2.XYZ").write_text(CO2_XYZ)
    (folder / "water.xyz").write_text(WATER_XYZ)
    (folder / "notes.txt").write_text("not a molecule")
    names, batch = molecules_to_batch(str(folder))
    assert names == ["CO2", "water"] and batch.num_graphs == 2


@pytest.mark.parametrize("where", ["file", "directory", "smiles"])
def test_binary_input_names_the_file(tmp_path, where):
    binary = bytes(range(128, 256)) * 4
    path = tmp_path / {"file": "mol.xyz", "directory": "mol.xyz", "smiles": "list.smi"}[where]
    path.write_bytes(binary)
    source = tmp_path if where == "directory" else path
    with pytest.raises(ValueError, match=f"^{path}: not a text file"):
        read_molecules(str(source))


def test_empty_input_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "water.xyz").write_text(WATER_XYZ)  # would be read as the current directory
    for source in ("", "  "):
        with pytest.raises(ValueError, match="input is empty"):
            read_molecules(source)


def test_coincident_atoms_are_refused(tmp_path):
    path = tmp_path / "dup.xyz"
    path.write_text("4\nduplicated line\nO 0 0 0.1173\nH 0 0.7572 -0.4692\nH 0 -0.7572 -0.4692\n"
                    "H 0 0.7572 -0.4199\n")
    with pytest.raises(ValueError, match=r"dup.xyz:6: atoms 2 and 4 are 0.0493 Å apart \(< 0.1 Å"):
        read_molecules(str(path))


# --- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["qm9", "qm9_tiny"])
def test_dataset_configs_instantiate(name, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name=f"dataset/{name}", overrides=[f"+paths.data_dir={tmp_path}"])
    module = instantiate(cfg.dataset)
    assert isinstance(module, QM9DataModule) and module.data_dir == str(tmp_path)
    assert module.target_names == ["homo"] and module.num_bond_types == 4
    sizes = {k: len(v) for k, v in module._split_rows().items()}
    assert sizes == ({"train": 64, "val": 32, "test": 32} if name == "qm9_tiny" else SPLIT_SIZES)


def test_full_cache_serves_any_row_order_and_subsets(raw, tmp_path):
    """A run over every molecule (rows in split order) writes the canonical "all" cache, which
    later subset runs reuse without rebuilding (here "every molecule" is the first 6)."""
    total, order = 6, np.array([4, 0, 5, 2, 1, 3])
    built = qm9_cache.load_or_build(tmp_path, order, total, lambda: raw, progress=False)
    assert qm9_cache.rows_key(order, total) == "all"
    assert [p.name for p in (tmp_path / "qm9").iterdir()] == [qm9_cache.cache_path(tmp_path, "all").name]
    assert built["name"] == raw.name[order].tolist()

    def must_not_build():
        raise AssertionError("cache was rebuilt")

    subset = qm9_cache.load_or_build(tmp_path, np.array([3, 1]), total, must_not_build, progress=False)
    assert subset["name"] == raw.name[[3, 1]].tolist()
    ptr = raw.atom_ptr
    assert subset["z"].tolist() == [*raw.z[ptr[3] : ptr[4]], *raw.z[ptr[1] : ptr[2]]]
