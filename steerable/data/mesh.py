"""Triangle meshes: a robust OFF reader and area-weighted surface sampling.

The reader accepts what real ModelNet files contain: CRLF line ends, the ``OFF<nv> <nf> <ne>``
header glitch (counts glued to the keyword on the first line), ``#`` comments and blank lines,
extra tokens after vertices/faces (e.g. colours), and polygons with more than three vertices,
which are fan-triangulated rather than dropped. Malformed files raise ``ValueError`` naming the
file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np


def _fail(path, lineno: int, msg: str) -> NoReturn:
    raise ValueError(f"{path}:{lineno}: {msg}")


def _content_lines(text: str) -> list[tuple[int, str]]:
    """Non-empty lines with comments stripped, as (1-based line number, text)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append((lineno, line))
    return out


def _ints(path, lineno: int, tokens: list[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        _fail(path, lineno, f"expected integer {what}, got {' '.join(tokens)!r}")


def _parse_header(path, lines: list[tuple[int, str]]) -> tuple[int, int, int]:
    """Return (num_vertices, num_faces, index of the first vertex line)."""
    if not lines:
        raise ValueError(f"{path}: empty OFF file")
    lineno, first = lines[0]
    if not first.startswith("OFF"):
        _fail(path, lineno, f"expected 'OFF' header, got {first[:40]!r}")
    rest = first[3:].split()
    start = 1
    if not rest:  # standard: counts on the next line
        if len(lines) < 2:
            _fail(path, lineno, "missing vertex/face counts after 'OFF'")
        lineno, counts = lines[1]
        rest, start = counts.split(), 2
    if len(rest) < 2:
        _fail(path, lineno, f"expected '<num_vertices> <num_faces> [<num_edges>]', got {' '.join(rest)!r}")
    nv, nf = _ints(path, lineno, rest[:2], "counts")
    if nv < 0 or nf < 0:
        _fail(path, lineno, f"negative counts {nv} {nf}")
    return nv, nf, start


def _parse_vertices(path, lines, nv: int) -> np.ndarray:
    """Vertices ``(nv, 3)`` from their ``nv`` lines ``x y z [extra columns, e.g. colours]``."""
    if len(lines) < nv:
        _fail(path, lines[-1][0] if lines else 0, f"expected {nv} vertices, file ends after {len(lines)}")
    try:  # fast path: every line has the same columns (ragged or non-numeric lines raise)
        fast = np.asarray([line.split() for _, line in lines], dtype=np.float64)
    except ValueError:
        fast = None
    if fast is not None and fast.ndim == 2 and fast.shape[1] >= 3:
        return _check_finite(path, lines, np.ascontiguousarray(fast[:, :3]))
    verts = np.empty((nv, 3), dtype=np.float64)
    for i, (lineno, line) in enumerate(lines):
        parts = line.split()
        if len(parts) < 3:
            _fail(path, lineno, f"vertex {i} needs 3 coordinates, got {line!r}")
        try:
            verts[i] = [float(p) for p in parts[:3]]
        except ValueError:
            _fail(path, lineno, f"vertex {i} has non-numeric coordinates {line!r}")
    return _check_finite(path, lines, verts)


def _check_finite(path, lines, verts: np.ndarray) -> np.ndarray:
    """``verts`` if every coordinate is finite, else fail naming the first bad vertex's line."""
    bad = ~np.isfinite(verts).all(axis=1)
    if bad.any():
        i = int(bad.argmax())
        _fail(path, lines[i][0], f"vertex {i} has non-finite coordinates {lines[i][1]!r}")
    return verts


def _parse_faces(path, lines, nf: int, nv: int) -> np.ndarray:
    """Triangles ``(F, 3)`` from ``nf`` lines ``count i_1 .. i_count [extra columns]`` (fan-triangulated)."""
    if len(lines) < nf:
        _fail(path, lines[-1][0] if lines else 0, f"expected {nf} faces, file ends after {len(lines)}")
    try:  # fast path: every line the same columns (ragged, non-integer or huge tokens raise)
        fast = np.asarray([line.split() for _, line in lines], dtype=np.int64)
    except (ValueError, OverflowError):
        fast = None
    if fast is not None and fast.ndim == 2 and fast.shape[1] >= 4 and (fast[:, 0] == 3).all():
        bad = np.flatnonzero(((fast[:, 1:4] < 0) | (fast[:, 1:4] >= nv)).any(axis=1))
        if bad.size:
            _fail(path, lines[bad[0]][0], f"vertex index out of range [0, {nv}) in {lines[bad[0]][1]!r}")
        return np.ascontiguousarray(fast[:, 1:4])
    tris: list[np.ndarray] = []
    for lineno, line in lines:
        parts = line.split()
        count = _ints(path, lineno, parts[:1], "vertex count")[0]
        if count < 3 or len(parts) < count + 1:
            _fail(path, lineno, f"face needs >= 3 vertex indices after its count, got {line!r}")
        idx = _ints(path, lineno, parts[1:count + 1], "vertex indices")
        if min(idx) < 0 or max(idx) >= nv:  # checked on Python ints: a huge index cannot overflow
            _fail(path, lineno, f"vertex index out of range [0, {nv}) in {line!r}")
        v = np.asarray(idx, dtype=np.int64)  # fan triangulation: (v0, v_i, v_{i+1})
        tris.append(np.stack([np.full(count - 2, v[0]), v[1:-1], v[2:]], axis=1))
    return np.concatenate(tris) if tris else np.empty((0, 3), dtype=np.int64)


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an OFF mesh.

    Args:
        path: the ``.off`` file.

    Returns:
        ``vertices (V, 3)`` float64 and triangle ``faces (F, 3)`` int64 (polygons fan-triangulated,
        so ``F >= num_faces`` in the header).

    Raises:
        ValueError: naming the file and line of the first malformed entry.
    """
    path = Path(path)
    lines = _content_lines(path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff"))
    nv, nf, start = _parse_header(path, lines)
    verts = _parse_vertices(path, lines[start:start + nv], nv)
    faces = _parse_faces(path, lines[start + nv:start + nv + nf], nf, nv)
    return verts, faces


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Areas ``(F,)`` of the triangles ``faces (F, 3)`` over ``vertices (V, 3)``."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``n`` points uniformly on the mesh surface (faces chosen with probability ∝ area).

    Args:
        vertices: ``(V, 3)``.
        faces: ``(F, 3)`` triangle vertex indices.
        n: number of points.
        rng: numpy random generator.

    Returns:
        ``points (n, 3)``, unit face ``normals (n, 3)`` (zero for degenerate faces) and the
        sampled ``face_index (n,)``.
    """
    if len(faces) == 0:
        raise ValueError("cannot sample a mesh without faces")
    areas = triangle_areas(vertices, faces)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"cannot sample a mesh with total surface area {total}")
    face = rng.choice(len(faces), size=n, p=areas / total)
    a, b, c = (vertices[faces[face, i]] for i in range(3))
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1  # reflect into the triangle: uniform barycentric coordinates
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    normal = np.cross(b - a, c - a)
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    return points, normal, face
