"""Bond perception from 3-D geometry with RDKit, with counted fallbacks.

Order of attempts for one molecule (the method code is stored per molecule):

0. ``rdDetermineBonds.DetermineBonds(mol, charge=0)`` on an xyz block (fixed decimals: RDKit's xyz
   reader rejects scientific notation such as ``-7.7e-05``).
1. The same with ``useHueckel=True`` (extended-Hückel connectivity). Connect-the-dots fails on
   strained cages (e.g. ``CC12CC(O1)C2=O``, ~4 % of QM9) at any ``covFactor``; Hückel recovers the
   SMILES for them, at ~5 ms instead of ~0.1 ms per molecule.
2. ``DetermineConnectivity`` + ``AssignBondOrdersFromTemplate(AddHs(MolFromSmiles(smiles)), mol)``,
   when a SMILES is known — also when 0/1 succeeded but disagree with the SMILES and the template
   reproduces it (QM9's ~440 zwitterions: charge-0 perception returns a neutral resonance form).
3. Covalent-radius connectivity (``d ≤ 1.3 (r_i + r_j)``, Cordero radii), every bond "single".

Bond types are integers: 0 single, 1 double, 2 triple, 3 aromatic (see :data:`steerable.chem.BOND_TYPES`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem, rdDetermineBonds

METHODS: tuple[str, ...] = (
    "determine_bonds",
    "determine_bonds_hueckel",
    "smiles_template",
    "covalent_radius",
)

_RDKIT_BOND = {
    Chem.BondType.SINGLE: 0,
    Chem.BondType.DOUBLE: 1,
    Chem.BondType.TRIPLE: 2,
    Chem.BondType.AROMATIC: 3,
}
_SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}
#: Single-bond covalent radii in Å (Cordero et al., Dalton Trans. 2008, 2832).
_COVALENT_RADIUS = {1: 0.31, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57}
COVALENT_FACTOR = 1.3

RDLogger.DisableLog("rdApp.*")


@contextlib.contextmanager
def _silenced_fds() -> Iterator[None]:
    """Send fds 1 and 2 to /dev/null: YAeHMOP (the Hückel fallback) prints warnings from C."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def xyz_block(z: np.ndarray, pos: np.ndarray) -> str:
    """XYZ text of a molecule, coordinates with 8 fixed decimals. z: (N,), pos: (N, 3) Å."""
    lines = [f"{_SYMBOL[int(a)]} {x:.8f} {y:.8f} {w:.8f}" for a, (x, y, w) in zip(z, pos, strict=True)]
    return f"{len(lines)}\n\n" + "\n".join(lines) + "\n"


def bonds_of_mol(mol: Chem.Mol) -> np.ndarray:
    """(B, 3) int64 rows ``(i, j, type)`` with i < j; unusual RDKit types count as single."""
    rows = []
    for bond in mol.GetBonds():
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        rows.append((i, j, _RDKIT_BOND.get(bond.GetBondType(), 0)))
    return np.array(sorted(rows), dtype=np.int64).reshape(-1, 3)


def covalent_bonds(z: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Distance-based connectivity, all bonds single: (B, 3) int64 ``(i, j, 0)``, i < j."""
    radius = np.array([_COVALENT_RADIUS[int(a)] for a in z])
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    close = dist <= COVALENT_FACTOR * (radius[:, None] + radius[None, :])
    i, j = np.nonzero(np.triu(close, k=1))
    return np.stack([i, j, np.zeros_like(i)], axis=1).astype(np.int64).reshape(-1, 3)


def _canonical(mol: Chem.Mol) -> str:
    """Canonical SMILES without hydrogens or stereo (RemoveHs would keep imine N–H)."""
    mol = Chem.RemoveAllHs(mol, sanitize=False)
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def _from_template(block: str, smiles: str) -> Chem.Mol:
    mol = Chem.MolFromXYZBlock(block)
    rdDetermineBonds.DetermineConnectivity(mol)
    template = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return AllChem.AssignBondOrdersFromTemplate(template, mol)


def perceive_bonds(z: np.ndarray, pos: np.ndarray, smiles: str | None = None) -> tuple[np.ndarray, int, int]:
    """Bonds of one neutral molecule from its geometry.

    Args:
        z: (N,) atomic numbers (H, C, N, O, F).
        pos: (N, 3) coordinates in Å.
        smiles: the molecule's SMILES, if known (enables fallback 1 and the check below).

    Returns:
        bonds: (B, 3) int64 ``(i, j, type)`` with i < j, type indexing :data:`steerable.chem.BOND_TYPES`.
        method: index into :data:`METHODS`.
        smiles_match: 1 if the perceived graph's canonical SMILES (stereo ignored) equals the given
            SMILES, 0 if not, -1 if no SMILES was given or it could not be parsed.
    """
    z = np.asarray(z)
    pos = np.asarray(pos, dtype=np.float64)
    block = xyz_block(z, pos)
    reference = Chem.MolFromSmiles(smiles) if smiles else None

    def matches(candidate: Chem.Mol) -> bool:
        try:
            return _canonical(candidate) == _canonical(reference)
        except Exception:
            return False

    mol, method = None, len(METHODS) - 1
    for method_id, hueckel in ((0, False), (1, True)):
        try:
            candidate = Chem.MolFromXYZBlock(block)
            with _silenced_fds() if hueckel else contextlib.nullcontext():
                rdDetermineBonds.DetermineBonds(candidate, charge=0, useHueckel=hueckel)
            mol, method = candidate, method_id
            break
        except Exception:  # RDKit raises several exception types (ValueError, RuntimeError, …)
            continue
    if reference is not None and (mol is None or not matches(mol)):
        # perception failed, or gave another Lewis structure (zwitterions: charge-0 perception
        # yields a neutral resonance form); the SMILES' bond orders win if its graph fits
        try:
            candidate = _from_template(block, smiles)
            if mol is None or matches(candidate):
                mol, method = candidate, 2
        except Exception:
            pass
    if mol is None:
        return covalent_bonds(z, pos), 3, -1
    match = int(matches(mol)) if reference is not None else -1
    return bonds_of_mol(mol), method, match
