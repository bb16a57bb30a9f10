"""Read the QM9 tables shipped in the ``qm9pack`` wheel into flat numpy arrays.

``qm9pack`` stores 130,831 molecules in three CSVs (``qm9_part{1,2,3}.csv``) plus
``qm9_polarizability.csv`` keyed by ``XYZ_file``. ``Elements`` and ``XYZ_Ang`` are Python-literal
strings; they are parsed here in one vectorised pass (joined and split), never row by row.

All values stay in the units of the source (Hartree, D, bohr³, bohr², cal/mol/K); unit conversion
lives in :mod:`steerable.data.qm9_targets`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from steerable.chem import ATOMIC_NUMBERS, ELEMENTS

#: Raw CSV columns of the 12 standard targets, in the standard QM9 order.
PROPERTY_COLUMNS: tuple[str, ...] = (
    "Dipole_debye",  # mu
    "Polarizability_bohr3",  # alpha
    "HOMO_au",  # homo
    "LUMO_au",  # lumo
    "HOMO_LUMO_gap_au",  # gap
    "R2_bohr2",  # r2
    "ZPVE_au",  # zpve
    "InternalEnergy_0K_au",  # U0
    "InternalEnergy_298K_au",  # U
    "Enthalphy_298K_au",  # H  (sic, the column is misspelt in qm9pack)
    "GibbsFreeEnergy_298K_au",  # G
    "Heatcapacity_Cv_cal_mol_K",  # Cv
)
#: Polarizability CSV columns (lower triangle, Gaussian's order), bohr³.
POLARIZABILITY_COLUMNS: tuple[str, ...] = ("A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")

NUM_MOLECULES = 130_831


@dataclass(frozen=True)
class QM9Raw:
    """All of QM9 as flat arrays, rows in ascending original QM9 index.

    Shapes (M molecules, A atoms in total):
        index: (M,) int64, original QM9 numbering (1…133,885, gaps where QM9 failed).
        name: (M,) str, ``dsgdb9nsd_XXXXXX``.
        smiles: (M,) str, SMILES as shipped.
        atom_ptr: (M+1,) int64, atoms of molecule m are ``atom_ptr[m]:atom_ptr[m+1]``.
        z: (A,) int64 atomic numbers.
        pos: (A, 3) float64 coordinates in Å.
        props: (M, 12) float64, :data:`PROPERTY_COLUMNS` in source units.
        polarizability: (M, 6) float64, :data:`POLARIZABILITY_COLUMNS` in bohr³.
    """

    index: np.ndarray
    name: np.ndarray
    smiles: np.ndarray
    atom_ptr: np.ndarray
    z: np.ndarray
    pos: np.ndarray
    props: np.ndarray
    polarizability: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def qm9pack_data_dir() -> Path:
    """Directory of the CSVs inside the installed ``qm9pack`` (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("qm9pack is not installed: `pip install qm9pack` ships the QM9 CSVs")
    folder = Path(spec.origin).parent / "data"
    if not (folder / "qm9_part1.csv").is_file():
        raise FileNotFoundError(f"qm9pack is installed but {folder}/qm9_part1.csv is missing")
    return folder


def qm9pack_version() -> str:
    """Installed ``qm9pack`` version (part of the cache key)."""
    return importlib.metadata.version("qm9pack")


def _parse_nested_floats(cells: list[str], expected: int, what: str) -> np.ndarray:
    """Parse ``"[[x,y,z],…]"`` strings of all rows in one pass into a flat float64 array."""
    text = ",".join(cells).replace("[", "").replace("]", "")
    values = np.array(text.split(","), dtype=np.float64)
    if values.size != expected:
        raise ValueError(f"qm9pack {what}: parsed {values.size} numbers, expected {expected}")
    return values


def _parse_elements(cells: list[str], expected: int) -> np.ndarray:
    """Parse ``"['C','H',…]"`` strings of all rows into atomic numbers (A,)."""
    text = ",".join(cells).replace("[", "").replace("]", "").replace("'", "").replace(" ", "")
    symbols = np.array(text.split(","))
    if symbols.size != expected:
        raise ValueError(f"qm9pack Elements: parsed {symbols.size} symbols, expected {expected}")
    z = np.zeros(symbols.size, dtype=np.int64)
    for symbol, number in zip(ELEMENTS, ATOMIC_NUMBERS, strict=True):
        z[symbols == symbol] = number
    if (z == 0).any():
        raise ValueError(f"qm9pack Elements: unknown symbols {sorted(set(symbols[z == 0]))}")
    return z


def read_qm9pack(folder: Path | None = None) -> QM9Raw:
    """Read and parse the qm9pack CSVs (about 5 s on one core).

    Args:
        folder: directory holding ``qm9_part{1,2,3}.csv`` and ``qm9_polarizability.csv``
            (default: the installed package's ``data`` folder).
    """
    folder = Path(folder) if folder is not None else qm9pack_data_dir()
    columns = ["XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", *PROPERTY_COLUMNS]
    parts = [pd.read_csv(folder / f"qm9_part{i}.csv", usecols=columns) for i in (1, 2, 3)]
    table = pd.concat(parts, ignore_index=True).sort_values("Index", kind="stable")
    table = table.reset_index(drop=True)
    pol = pd.read_csv(folder / "qm9_polarizability.csv")
    pol = table[["XYZ_file"]].merge(pol, on="XYZ_file", how="left", validate="one_to_one")
    if pol[list(POLARIZABILITY_COLUMNS)].isna().any().any():
        raise ValueError("qm9_polarizability.csv lacks rows for some molecules")

    n_atoms = table["N_atoms"].to_numpy(np.int64)
    atom_ptr = np.zeros(len(n_atoms) + 1, dtype=np.int64)
    np.cumsum(n_atoms, out=atom_ptr[1:])
    total = int(atom_ptr[-1])
    pos = _parse_nested_floats(table["XYZ_Ang"].tolist(), 3 * total, "XYZ_Ang").reshape(total, 3)
    return QM9Raw(
        index=table["Index"].to_numpy(np.int64),
        name=table["XYZ_file"].str.removesuffix(".xyz").to_numpy(str),
        smiles=table["SMILES"].to_numpy(str),
        atom_ptr=atom_ptr,
        z=_parse_elements(table["Elements"].tolist(), total),
        pos=pos,
        props=table[list(PROPERTY_COLUMNS)].to_numpy(np.float64),
        polarizability=pol[list(POLARIZABILITY_COLUMNS)].to_numpy(np.float64),
    )
