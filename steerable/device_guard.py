"""Catch device, dtype and host-sync mistakes while running on the CPU.

On the CPU a tensor created without ``device=`` lands on the right device and ``.item()`` costs
nothing, so such mistakes only show up on an accelerator: as a device-mismatch error, or as a
training step that stalls while the host waits for the device. :class:`DeviceGuard` (a
:class:`torch.overrides.TorchFunctionMode`) sees every torch call made while it is active and
records three kinds of violation, each at the call site in the checked code (by default the
``steerable`` package, this module excepted):

``device``
    A tensor factory (:data:`FACTORIES`: ``torch.zeros``, ``arange``, ``tensor``, ``rand``, …) called
    without ``device=`` (or with ``device=None``): the tensor is created on the default device, not
    the input's. ``torch.tensor``/``as_tensor`` of a tensor keep its device and are not flagged;
    ``*_like`` and ``Tensor.new_*`` factories inherit the device and are never flagged.
``dtype``
    A factory that creates a floating-point tensor without ``dtype=``: it is float32 whatever the
    model's dtype, and mixes into (or silently promotes against) a float64 model.
``sync``
    A call that needs the tensor's value on the host (:data:`SYNCS`: ``.item()``, ``.tolist()``,
    ``.cpu()``, ``.numpy()``, ``.to("cpu")``, ``bool()``/``int()``/``float()`` of a tensor, a tensor
    used as an index, ``torch.equal``/``allclose``). On an accelerator each one blocks the host until
    the device has finished all queued work. Recorded at the innermost checked frame also when a
    library makes the call on the checked code's behalf (e.g. ``scatter`` without ``dim_size``).

Factory violations count only when the checked code calls the factory itself (a library's own
tensors are its business). ``torch.from_numpy`` and legacy constructors (``torch.LongTensor``) are
not seen by torch-function modes.

Some syncs are the point of the code: a data-dependent shape (the padded layout of a graph needs
its maximal degree), or host-side work that only ever runs on CPU tensors. :data:`ALLOWED` lists
those sites with the reason; an entry marked ``host_only`` is allowed only for CPU tensors, so the
guard still flags the site when it runs on an accelerator. Further syncs (``nonzero``, boolean-mask
indexing, ``unique``, ``bincount``, ``repeat_interleave``) are implicit in the operation; they are
recorded only with ``implicit_syncs=True``.

Use it around a forward/training step. Like every torch-function mode it is thread-local: on the CPU
the backward pass runs in the calling thread and is checked too; on CUDA autograd runs it in its own
threads, unchecked (the CPU check covers the same code)::

    with DeviceGuard() as guard:
        loss = model(batch).sum()
        loss.backward()
    guard.assert_clean()

or add :class:`DeviceGuardCallback` to a Lightning ``Trainer``: it guards every training,
validation, test and predict step (not the data loading and the batch transfer, which run on the
host by design). On a real accelerator the guard is exact for ``host_only`` sites as well.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode

PACKAGE_ROOT = Path(__file__).resolve().parent
_THIS_FILE = str(Path(__file__).resolve())
_TORCH_ROOT = str(Path(torch.__file__).resolve().parent) + "/"

FACTORIES: frozenset[Callable] = frozenset({
    torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.eye, torch.linspace,
    torch.logspace, torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.rand, torch.randn,
    torch.randint, torch.randperm, torch.empty_strided, torch.tril_indices, torch.triu_indices,
})
_COPIES_ITS_INPUT = frozenset({torch.tensor, torch.as_tensor})  # keep device (and dtype) of a tensor input

SYNCS: frozenset[Callable] = frozenset({
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
    torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__complex__,
    torch.Tensor.__index__, torch.Tensor.is_nonzero, torch.is_nonzero, torch.equal, torch.Tensor.equal,
    torch.allclose, torch.Tensor.allclose,
})
IMPLICIT_SYNCS: frozenset[Callable] = frozenset({
    torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.masked_select,
    torch.Tensor.masked_select, torch.unique, torch.Tensor.unique, torch.unique_consecutive,
    torch.Tensor.unique_consecutive, torch.bincount, torch.Tensor.bincount, torch.repeat_interleave,
    torch.Tensor.repeat_interleave,
})


@dataclass(frozen=True)
class Allowance:
    """Why syncs at a site are legitimate.

    Attributes:
        reason: the justification, shown to whoever reads the list.
        host_only: allowed only while the synced tensor is on the CPU (host-side code paths).
        via: allowed only when the sync happens inside this library (a path fragment, e.g.
            ``"escnn/"``), not in the site's own code.
    """

    reason: str
    host_only: bool = False
    via: str | None = None


# site ("path relative to the root:qualified function"; a file alone covers all of it) -> allowance
ALLOWED: dict[str, Allowance] = {
    "models/blocks.py:check_batch": Allowance(
        "input validation with a clear error; runs on host batches only (the tasks check every batch "
        "on the host before it is moved, BaseTask.on_before_batch_transfer)", host_only=True),
    "kernels/linear.py:_same_values": Allowance(
        "validity check of the eval-time expansion cache, which is kept for CPU parameters only",
        host_only=True),
    "nn/contraction.py:segment_layout": Allowance(
        "data-dependent shape: the padded/fixed-degree layout needs the graph's maximal degree; once "
        "per graph and step (cached_segment_layout shares it between the layers)"),
    "nn/contraction.py:_grouped_fixed_degree": Allowance("part of segment_layout's analysis"),
    "nn/chunked.py:chunked_messages": Allowance(
        "data-dependent chunk bounds (opt-in conv.chunk_edges, a memory/time trade)"),
    "nn/chunked.py:node_chunks": Allowance(
        "data-dependent chunk bounds (opt-in conv.chunk_edges, a memory/time trade)"),
    "nn/analytic.py:AnalyticPointConv.forward": Allowance(
        "escnn's kernel-basis sampling checks its inputs with asserts (python -O removes them); the "
        "analytic baseline is escnn's own layer, not a fork", via="escnn/"),
    "train.py": Allowance(
        "the Trainer's own loop below the entry point (e.g. torch.optim's step counters, which Adam "
        "keeps on the host); host tensors only, so a device sync inside Lightning is still reported",
        host_only=True),
    "evaluate.py": Allowance(
        "the Trainer's own loop below the entry point; host tensors only", host_only=True),
    "geometry.py": Allowance(
        "graph construction (kNN, FPS, radius) has data-dependent sizes; in training it runs in the "
        "data-loader workers unless model.hierarchy_in_loader=false"),
}


@dataclass
class Violation:
    """One kind of mistake at one call site; ``count`` times."""

    kind: str  # "device" | "dtype" | "sync"
    op: str
    site: str  # "file.py:line in function"
    detail: str
    count: int = 1

    def __str__(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.site}: {self.kind}: {self.op} {self.detail}{times}"


class DeviceViolation(AssertionError):
    """Raised by :meth:`DeviceGuard.assert_clean` (or at once, with ``raise_at_once=True``)."""


def _name(func: Callable) -> str:
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    owner = "Tensor." if "Tensor" in qualname.split(".")[0] else "torch."
    return owner + qualname.split(".")[-1]


def _to_host(args: tuple, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names the CPU as its device."""
    candidates = [kwargs.get("device"), *args[1:2]]
    for value in candidates:
        if isinstance(value, str | torch.device) and torch.device(value).type == "cpu":
            return True
    return False


class DeviceGuard(TorchFunctionMode):
    """Records (or raises on) device, dtype and host-sync mistakes of the checked code; see the module
    docstring for the rules.

    Args:
        roots: directories whose files are checked (default: the ``steerable`` package).
        allowed: legitimate sync sites (default :data:`ALLOWED`), keyed by
            ``"path relative to its root:qualified function name"``.
        check_dtype: record ``dtype`` violations.
        implicit_syncs: also record :data:`IMPLICIT_SYNCS`.
        raise_at_once: raise :class:`DeviceViolation` at the first violation instead of recording it.

    Attributes:
        violations: the recorded violations, one per (kind, op, site).
    """

    def __init__(self, roots: Iterable[str | Path] | None = None,
                 allowed: Mapping[str, Allowance] | None = None, check_dtype: bool = True,
                 implicit_syncs: bool = False, raise_at_once: bool = False) -> None:
        super().__init__()
        self.roots = [str(Path(r).resolve()) + "/" for r in (roots or [PACKAGE_ROOT])]
        self.allowed = dict(ALLOWED if allowed is None else allowed)
        self.check_dtype, self.raise_at_once = check_dtype, raise_at_once
        self.syncs = SYNCS | IMPLICIT_SYNCS if implicit_syncs else SYNCS
        self.violations: list[Violation] = []
        self._index: dict[tuple[str, str, str], Violation] = {}

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES:
            self._check_factory(func, args, kwargs)
        elif func in self.syncs:
            self._check_sync(func, args)
        elif func is torch.Tensor.to and _to_host(args, kwargs):
            self._check_to_host(func)
        return func(*args, **kwargs)

    def _check_factory(self, func, args: tuple, kwargs: Mapping[str, Any]) -> None:
        if func in _COPIES_ITS_INPUT and args and isinstance(args[0], torch.Tensor):
            return
        missing_device = kwargs.get("device") is None
        missing_dtype = (self.check_dtype and kwargs.get("dtype") is None
                         and _makes_float(func, (*args, *kwargs.values())))
        if not (missing_device or missing_dtype):
            return
        frame = _caller(through_torch=False)  # torch's own Python code (nn.Linear(...)) is its business
        site = self._site_of(frame)
        if site is None:
            return
        if missing_device:
            self._record("device", func, site, frame, "without device=: made on the default device, not "
                         "the input's (pass device=…, or use new_*/*_like)")
        if missing_dtype:
            self._record("dtype", func, site, frame, "without dtype=: a float32 tensor whatever the "
                         "model's dtype (pass dtype=…)")

    def _check_sync(self, func, args: tuple) -> None:
        frame, via = _caller(), None
        while frame is not None and self._site_of(frame) is None:
            via = via or frame
            frame = frame.f_back
        if frame is None:
            return
        site = self._site_of(frame)
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if self._allows(site, tensor, via):
            return
        where = "" if via is None else f" (inside {_short(via)})"
        self._record("sync", func, site, frame, f"needs the value on the host{where}: the step waits "
                     "for the device (keep it on the device, or allow the site with a reason)")

    def _check_to_host(self, func) -> None:
        frame = _caller()  # only the checked code's own calls: libraries move to computed devices
        site = self._site_of(frame)
        if site is not None and not self._allows(site, None, None):
            self._record("sync", func, site, frame, "to the CPU: a device-to-host copy that waits for the "
                         "device (keep it on the device, or allow the site with a reason)")

    def _allows(self, site: str, tensor: torch.Tensor | None, via: types.FrameType | None) -> bool:
        """Whether :attr:`allowed` covers a sync at ``site`` (its function, an enclosing one, or its file)."""
        path, _, qualname = site.partition(":")
        parts = qualname.split(".")
        keys = [f"{path}:{'.'.join(parts[:n])}" for n in range(len(parts), 0, -1)
                if parts[n - 1] != "<locals>"]
        allowance = next((self.allowed[k] for k in [*keys, path] if k in self.allowed), None)
        if allowance is None:
            return False
        if allowance.host_only and tensor is not None and tensor.device.type != "cpu":
            return False
        return allowance.via is None or (via is not None and allowance.via in via.f_code.co_filename)

    def _site_of(self, frame: types.FrameType) -> str | None:
        """``"relative/path.py:qualname"`` of a frame in the checked roots, else None."""
        filename = frame.f_code.co_filename
        if filename == _THIS_FILE:
            return None
        for root in self.roots:
            if filename.startswith(root):
                return f"{filename[len(root):]}:{frame.f_code.co_qualname}"
        return None

    def _record(self, kind: str, func, site: str, frame: types.FrameType, detail: str) -> None:
        key = (kind, _name(func), site)
        if key in self._index:
            self._index[key].count += 1
            return
        violation = Violation(kind, _name(func), _short(frame), detail)
        if self.raise_at_once:
            raise DeviceViolation(str(violation))
        self._index[key] = violation
        self.violations.append(violation)

    def report(self) -> str:
        """One line per violation (empty when there is none)."""
        return "\n".join(str(v) for v in self.violations)

    def assert_clean(self) -> None:
        """Raise :class:`DeviceViolation` listing every recorded violation, if any."""
        if self.violations:
            raise DeviceViolation(f"{len(self.violations)} device/dtype/sync violation(s):\n{self.report()}")


def _caller(through_torch: bool = True) -> types.FrameType:
    """The innermost frame outside this module (and, ``through_torch``, outside torch's own Python code,
    e.g. ``Tensor.__format__``): who called the torch op."""
    frame = sys._getframe(1)
    while frame.f_back is not None and (
            frame.f_code.co_filename == _THIS_FILE
            or (through_torch and frame.f_code.co_filename.startswith(_TORCH_ROOT))):
        frame = frame.f_back
    return frame


def _makes_float(func, args: tuple) -> bool:
    """Whether a factory call without ``dtype=`` gives a floating-point tensor."""
    if func in (torch.randint, torch.randperm, torch.tril_indices, torch.triu_indices):
        return False
    if func in (torch.arange, torch.full, torch.tensor, torch.as_tensor, torch.scalar_tensor):
        return _has_float(args)
    return True  # zeros, ones, empty, eye, linspace, rand, randn, ...: the default float dtype


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list | tuple):
        return any(_has_float(v) for v in value)
    return bool(getattr(value, "dtype", None) is not None and value.dtype.kind == "f")  # numpy arrays


def _short(frame: types.FrameType) -> str:
    """``path:line in function`` of a frame, the path relative to the repository when inside it."""
    path = Path(frame.f_code.co_filename)
    try:
        path = path.relative_to(PACKAGE_ROOT.parent)
    except ValueError:
        parts = path.parts
        path = Path(*parts[-2:]) if len(parts) > 1 else path
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_qualname}"


class DeviceGuardCallback(pl.Callback):
    """Runs every training/validation/test/predict step (forward, loss, backward, optimiser step and
    the other callbacks' per-batch hooks) under a :class:`DeviceGuard`; data loading and the batch
    transfer stay outside. Violations accumulate in :attr:`guard` over the run.

    Args:
        raise_at_end: raise :class:`DeviceViolation` at the end of ``fit``/``test``/``predict`` if
            anything was recorded (else only :attr:`guard` holds them).
        guard_kwargs: options of :class:`DeviceGuard`.
    """

    def __init__(self, raise_at_end: bool = True, **guard_kwargs: Any) -> None:
        self.guard = DeviceGuard(**guard_kwargs)
        self.raise_at_end = raise_at_end
        self._active = False

    def _enter(self, *_: Any) -> None:
        if not self._active:
            self.guard.__enter__()
            self._active = True

    def _exit(self, *_: Any) -> None:
        if self._active:
            self._active = False
            self.guard.__exit__(None, None, None)

    on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _enter
    on_train_batch_end = on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _exit

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._exit()

    def _finish(self, *_: Any) -> None:
        self._exit()
        if self.raise_at_end:
            self.guard.assert_clean()

    on_fit_end = on_test_end = on_predict_end = _finish

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._exit()
