"""Pictures of a learned implicit kernel k(x) (DESIGN.md §1): slices over a grid, and its steerability.

For an :class:`~steerable.nn.ImplicitPointConv` the kernel is a function of the relative position,
``k: R^d → R^{C_out × C_in}``. :func:`draw_kernel_slices` shows selected entries ``k(x)[i, j]`` on
the three coordinate planes through the origin; :func:`draw_rotation_response` compares ``k(Rx)``
with ``ρ_out(g) k(x) ρ_in(g)ᵀ`` for a group element ``g`` with ``R = std(g)`` — the two panels
should look identical, and the difference panel shows the (float) error.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from steerable.nn.point_conv import ImplicitPointConv  # noqa: E402

PLANES = {"xy (z=0)": (0, 1), "xz (y=0)": (0, 2), "yz (x=0)": (1, 2)}


def implicit_convs(model: nn.Module) -> list[tuple[str, ImplicitPointConv]]:
    """``(name, layer)`` of every implicit point conv in ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ImplicitPointConv)]


class NoImplicitConv(ValueError):
    """The model has no implicit kernel to draw (``model.kernel=analytic``, or the baseline)."""


def pick_conv(model: nn.Module, layer: int | str = 0) -> tuple[str, ImplicitPointConv]:
    """The implicit conv chosen by index (``0``: first) or by module name.

    Raises:
        NoImplicitConv: if the model has no implicit conv.
        ValueError: if there is no such layer.
    """
    convs = implicit_convs(model)
    if not convs:
        raise NoImplicitConv(f"{type(model).__name__} has no ImplicitPointConv layer (analytic kernels?)")
    names = [name for name, _ in convs]
    if isinstance(layer, str) and not layer.lstrip("-").isdigit():
        if layer not in names:
            raise ValueError(f"no implicit conv named {layer!r}; valid: {', '.join(names)}")
        return convs[names.index(layer)]
    index = int(layer)
    if not -len(convs) <= index < len(convs):
        raise ValueError(f"layer={index} out of range: the model has {len(convs)} implicit convs ({names})")
    return convs[index]


@dataclass
class PlaneGrid:
    """Points of a square plane through the origin: ``points (n*n, d)``, axis values ``ticks (n,)``."""

    points: torch.Tensor
    ticks: np.ndarray
    extent: float


def plane_grid(dim: int, axes: tuple[int, int], extent: float, n: int = 41) -> PlaneGrid:
    """An ``n × n`` grid on the plane spanned by coordinate ``axes`` (other coordinates 0)."""
    ticks = np.linspace(-extent, extent, n)
    a, b = np.meshgrid(ticks, ticks, indexing="xy")
    points = np.zeros((n * n, dim))
    points[:, axes[0]], points[:, axes[1]] = a.ravel(), b.ravel()
    return PlaneGrid(torch.tensor(points, dtype=torch.float64), ticks, extent)


@torch.no_grad()
def evaluate_kernel(conv: ImplicitPointConv, points: torch.Tensor) -> torch.Tensor:
    """``k(x)`` for ``points (P, d)`` → ``(P, C_out, C_in)`` (float64; zero kernel attributes if any)."""
    kernel = conv.kernel
    param = next(kernel.parameters())
    rel = points.to(device=param.device, dtype=param.dtype)
    attr = rel.new_zeros(rel.shape[0], kernel.attr_size) if kernel.attr_size else None
    return kernel.kernel(rel, attr).double().cpu()


def kernel_extent(conv: ImplicitPointConv) -> float:
    """Half-width of the plotted region: twice the radial window's width (where w ≈ e⁻⁴)."""
    return 2.0 * float(conv.kernel.window.log_width.detach().exp())


def strongest_entries(conv: ImplicitPointConv, count: int = 4, n: int = 21) -> list[tuple[int, int]]:
    """The ``count`` entries ``(i, j)`` with the largest mean ``|k(x)[i, j]|`` over a 3-plane grid."""
    dim = conv.group.dim
    planes = list(PLANES.values()) if dim == 3 else [(0, 1)]
    points = torch.cat([plane_grid(dim, axes, kernel_extent(conv), n).points for axes in planes])
    magnitude = evaluate_kernel(conv, points).abs().mean(dim=0)
    order = torch.argsort(magnitude.flatten(), descending=True)[:count].tolist()
    c_in = magnitude.shape[1]
    return [(k // c_in, k % c_in) for k in order]


def _image(ax, values: np.ndarray, grid: PlaneGrid, title: str, vmax: float, cmap: str = "RdBu_r"):
    n = len(grid.ticks)
    im = ax.imshow(values.reshape(n, n), origin="lower", cmap=cmap, vmin=-vmax if cmap == "RdBu_r" else 0,
                   vmax=vmax, extent=(-grid.extent, grid.extent, -grid.extent, grid.extent))
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return im


def draw_kernel_slices(conv: ImplicitPointConv, entries: list[tuple[int, int]], title: str, n: int = 41):
    """Figure: one row per entry ``(i, j)``, one column per coordinate plane, ``k(x)[i, j]``."""
    dim = conv.group.dim
    planes = PLANES if dim == 3 else {"xy": (0, 1)}
    extent = kernel_extent(conv)
    grids = {name: plane_grid(dim, axes, extent, n) for name, axes in planes.items()}
    values = {name: evaluate_kernel(conv, g.points) for name, g in grids.items()}
    fig, axes = plt.subplots(len(entries), len(planes), figsize=(3.2 * len(planes), 2.8 * len(entries)),
                             squeeze=False, constrained_layout=True)
    for row, (i, j) in enumerate(entries):
        vmax = max(float(v[:, i, j].abs().max()) for v in values.values()) or 1.0
        for col, name in enumerate(planes):
            image = values[name][:, i, j].numpy()
            im = _image(axes[row, col], image, grids[name], f"k[{i},{j}]  {name}", vmax)
        fig.colorbar(im, ax=axes[row, -1], shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return fig


def rotation_response(conv: ImplicitPointConv, points: torch.Tensor, seed: int = 0):
    """``(k(Rx), ρ_out(g) k(x) ρ_in(g)ᵀ, g)`` for a random group element ``g`` (``R`` = std(g))."""
    group = conv.group
    g = group.sample(1, seed=seed)[0]
    rot = torch.tensor(group.std_matrix(g))
    rho_out = torch.tensor(np.asarray(conv.out_type.representation(g)), dtype=torch.float64)
    rho_in = torch.tensor(np.asarray(conv.in_type.representation(g)), dtype=torch.float64)
    rotated = evaluate_kernel(conv, points @ rot.T)
    steered = rho_out @ evaluate_kernel(conv, points) @ rho_in.T
    return rotated, steered, g


def draw_rotation_response(conv: ImplicitPointConv, entries: list[tuple[int, int]], title: str,
                           n: int = 41, seed: int = 0):
    """Figure: per entry, ``k(Rx)[i,j]``, ``(ρ_out k(x) ρ_inᵀ)[i,j]`` and their difference (xy plane)."""
    grid = plane_grid(conv.group.dim, (0, 1), kernel_extent(conv), n)
    rotated, steered, g = rotation_response(conv, grid.points, seed)
    scale = float(steered.abs().max()) or 1.0
    error = float((rotated - steered).abs().max()) / scale
    fig, axes = plt.subplots(len(entries), 3, figsize=(9.6, 2.8 * len(entries)), squeeze=False,
                             constrained_layout=True)
    for row, (i, j) in enumerate(entries):
        vmax = float(steered[:, i, j].abs().max()) or 1.0
        _image(axes[row, 0], rotated[:, i, j].numpy(), grid, f"k(Rx)[{i},{j}]", vmax)
        im = _image(axes[row, 1], steered[:, i, j].numpy(), grid, f"ρ_out k(x) ρ_inᵀ [{i},{j}]", vmax)
        fig.colorbar(im, ax=axes[row, 1], shrink=0.8)
        diff = (rotated[:, i, j] - steered[:, i, j]).abs().numpy()
        im = _image(axes[row, 2], diff, grid, "|difference|", max(float(diff.max()), 1e-12), cmap="viridis")
        fig.colorbar(im, ax=axes[row, 2], shrink=0.8)
    matrix = np.array2string(conv.group.std_matrix(g), precision=2, suppress_small=True).replace("\n", "")
    fig.suptitle(f"{title}\nR = {matrix};  max|k(Rx) − ρ_out k(x) ρ_inᵀ| / max|k| = {error:.1e}", fontsize=9)
    return fig, error
