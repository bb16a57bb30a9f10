"""Read user molecules (for ``steerable.predict``) into the same graphs the QM9 dataset yields.

Accepted inputs, by :func:`read_molecules`:

- an ``.xyz`` file: line 1 the atom count, line 2 a comment, then ``El x y z`` per atom (Å).
  Extra columns (QM9's Mulliken charge) are ignored, as are lines after the atom block (QM9 files
  append frequencies, SMILES and InChI there), and QM9's ``*^`` exponent (``1.2*^-6``) is read.
- a directory: every ``*.xyz`` file inside (any case of the suffix; sub-directories are skipped),
  sorted by name.
- any other file: one SMILES per line (optionally followed by a name); blank lines and ``#``
  comments (at the start of a line or after whitespace: ``C#N`` is a triple bond) are skipped. Each
  is embedded in 3-D (ETKDGv3, fixed seed) and MMFF-optimised.
- a string that is none of these but parses as a SMILES: that one molecule.

Malformed input raises ``ValueError`` that names the file and line (``path:line: message``), as do
an unreadable or non-text file, an empty input and two atoms closer than :data:`MIN_DISTANCE` Å.
Only H, C, N, O, F are accepted (the elements QM9 contains).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem
from torch_geometric.data import Batch, Data

from steerable.chem import ATOMIC_NUMBERS, ELEMENTS, check_graph
from steerable.data.mol_graph import molecule_data
from steerable.data.qm9_bonds import bonds_of_mol, perceive_bonds

EMBED_SEED = 0xF00D
#: atoms closer than this (Å) are a duplicated line, not a molecule (QM9's shortest bond is ~0.96 Å)
MIN_DISTANCE = 0.1
COMMENT = re.compile(r"(?:^|\s)#")  # a comment starts a line or follows whitespace
_Z_OF = dict(zip(ELEMENTS, ATOMIC_NUMBERS, strict=True))

RDLogger.DisableLog("rdApp.*")


def _element(token: str, where: str) -> int:
    symbol = token.capitalize()
    if symbol not in _Z_OF:
        raise ValueError(f"{where}: unknown element {token!r}; supported: {', '.join(ELEMENTS)}")
    return _Z_OF[symbol]


def _coordinate(token: str, where: str) -> float:
    try:
        value = float(token.replace("*^", "e"))
    except ValueError:
        raise ValueError(f"{where}: coordinate {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: coordinate {token!r} is not finite")
    return value


def parse_xyz(text: str, source: str = "<xyz>") -> tuple[np.ndarray, np.ndarray]:
    """Atoms of the first frame of an XYZ text: z (N,) int64 and pos (N, 3) float64 Å.

    ``source`` names the file in error messages (``source:line: …``, lines counted from 1).
    """
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{source}:1: expected the atom count, found an empty line")
    try:
        count = int(lines[0].split()[0])
    except ValueError:
        raise ValueError(f"{source}:1: expected the atom count, got {lines[0].strip()!r}") from None
    if count < 1:
        raise ValueError(f"{source}:1: atom count must be at least 1, got {count}")
    if len(lines) < count + 2:
        raise ValueError(
            f"{source}:{len(lines) + 1}: file ends after {max(len(lines) - 2, 0)} of {count} atom lines"
        )
    z, pos = [], []
    for number in range(3, count + 3):
        where = f"{source}:{number}"
        fields = lines[number - 1].split()
        if len(fields) < 4:
            raise ValueError(f"{where}: expected 'element x y z', got {lines[number - 1].strip()!r}")
        z.append(_element(fields[0], where))
        pos.append([_coordinate(t, where) for t in fields[1:4]])
    pos = np.array(pos, dtype=np.float64)
    _check_distances(pos, source)
    return np.array(z, dtype=np.int64), pos


def _check_distances(pos: np.ndarray, source: str) -> None:
    """Refuse two atoms of ``pos (N, 3)`` closer than :data:`MIN_DISTANCE` (atom i is on line i + 2)."""
    distance = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    close = np.argwhere(np.triu(distance < MIN_DISTANCE, k=1))
    if len(close):
        i, j = close[0]
        raise ValueError(f"{source}:{j + 3}: atoms {i + 1} and {j + 1} are {distance[i, j]:.3g} Å apart "
                         f"(< {MIN_DISTANCE} Å: a duplicated atom?)")


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; ``ValueError`` naming the file if it cannot be read or is binary."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None


def _xyz_molecule(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, pos = parse_xyz(_read_text(path), str(path))
    bonds, _, _ = perceive_bonds(z, pos)
    return z, pos, bonds


def embed_smiles(smiles: str, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3-D structure of a SMILES (with hydrogens): z (N,), pos (N, 3) Å, bonds (B, 3)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"{where}: cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    for atom in mol.GetAtoms():
        _element(atom.GetSymbol(), where)
    params = AllChem.ETKDGv3()
    params.randomSeed = EMBED_SEED
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"{where}: RDKit could not embed SMILES {smiles!r} in 3-D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    pos = mol.GetConformer().GetPositions().astype(np.float64)
    return z, pos, bonds_of_mol(mol)


def _smiles_lines(path: Path) -> list[tuple[str, tuple]]:
    out = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        content = COMMENT.split(line, maxsplit=1)[0].strip()  # "#" inside a SMILES is a triple bond
        if not content:
            continue
        fields = content.split()
        name = fields[1] if len(fields) > 1 else fields[0]
        out.append((name, embed_smiles(fields[0], f"{path}:{number}")))
    if not out:
        raise ValueError(f"{path}:1: no SMILES found")
    return out


def _read_raw(source: str) -> list[tuple[str, tuple]]:
    if not source.strip():  # Path("") is the current directory
        raise ValueError("input is empty: give an .xyz file, a directory of them, a SMILES file or a SMILES")
    path = Path(source)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() == ".xyz")
        if not files:
            raise ValueError(f"{path}: directory holds no .xyz files")
        return [(f.stem, _xyz_molecule(f)) for f in files]
    if path.is_file():
        if path.suffix.lower() == ".xyz":
            return [(path.stem, _xyz_molecule(path))]
        return _smiles_lines(path)
    if Chem.MolFromSmiles(source) is None:
        raise ValueError(f"{source!r} is not a file, a directory or a valid SMILES")
    return [(source, embed_smiles(source, "<smiles>"))]


def read_molecules(path_or_smiles: str, graph: str = "bonds", radius: float = 5.0) -> list[tuple[str, Data]]:
    """Molecules as ``(name, Data)`` with ``pos, z, x, edge_index, edge_attr, name`` as in QM9.

    Args:
        path_or_smiles: .xyz file, directory of .xyz files, SMILES file, or one SMILES string.
        graph: ``"bonds"`` | ``"radius"`` | ``"full"`` (must match the model's training data).
        radius: cutoff in Å for ``graph="radius"``.
    """
    check_graph(graph)
    molecules = []
    for name, (z, pos, bonds) in _read_raw(str(path_or_smiles)):
        data = molecule_data(
            torch.from_numpy(z),
            torch.from_numpy(pos),
            torch.from_numpy(bonds),
            graph,
            radius,
            name=name,
        )
        molecules.append((name, data))
    return molecules


def molecules_to_batch(
    path_or_smiles: str, graph: str | Mapping[str, Any] = "bonds", radius: float = 5.0
) -> tuple[list[str], Batch]:
    """:func:`read_molecules` collated into one PyG ``Batch`` (names in batch order).

    ``graph`` may also be the training run's dataset config (a mapping): its ``graph`` and
    ``radius`` are used, so predictions see the graphs the model was trained on.
    """
    if isinstance(graph, Mapping):
        radius = float(graph.get("radius", radius))
        graph = str(graph.get("graph", "bonds"))
    molecules = read_molecules(path_or_smiles, graph, radius)
    return [name for name, _ in molecules], Batch.from_data_list([d for _, d in molecules])
