"""Timing and peak-memory measurement of one callable, shared by the conv and the model benchmarks.

Timings are medians of device-synchronised wall times. CPU peak memory: glibc is switched to serve
every allocation ≥ 64 KiB by mmap and to trim the heap (so RSS follows live tensors, see
:func:`_malloc_returns_memory`), the kernel's peak-RSS counter (``VmHWM``) is reset by writing ``5`` to
``/proc/self/clear_refs``, ``VmRSS`` is the baseline, and the result is ``VmHWM − baseline``. Where
``clear_refs`` is unavailable it falls back to the ``ru_maxrss`` delta (which under-reports when an
earlier step peaked higher). On a GPU memory is ``torch.cuda.max_memory_allocated`` over
``memory_allocated`` before the call.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from collections.abc import Callable

import torch


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(fn: Callable[[], object], device: torch.device | str | None = None) -> tuple[float, str]:
    """Peak memory (MB) that ``fn()`` adds on top of the memory in use before the call (RSS, or CUDA)."""
    gc.collect()
    if device is not None and torch.device(device).type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda.max_memory_allocated"
    try:
        exact = _malloc_returns_memory()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_mb("VmRSS")
        fn()
        return _status_mb("VmHWM") - base, "VmHWM-reset" + (", mmap>64KiB" if exact else "")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fn()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, "ru_maxrss"


def tensor_peak_mb(fn: Callable[[], object]) -> float:
    """Peak of the bytes held by tensors created during ``fn()`` (MB), from the torch profiler's memory
    timeline: exact and the same in every process, unlike RSS (whose peak delta varied by ±10 MB between
    processes for the same shape, from the allocator's state). Tensors that existed before count as 0,
    and freeing them lowers the total. Counts tensor storage only (any device), no allocator overhead.
    """
    from torch.profiler import profile
    from torch.profiler._memory_profiler import Action
    gc.collect()
    with profile(profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2**20


def _malloc_returns_memory() -> bool:
    """Make glibc serve every allocation ≥ 64 KiB by mmap and hand freed heap back (``malloc_trim``).

    By default glibc raises its mmap threshold as large blocks are freed, after which tensors live on the
    heap and RSS keeps pages that are free again: peak RSS then over-counts by whatever the heap
    fragmented into (measured: a chunked conv whose live memory is flat in E showed ~1 kB/edge). With a
    fixed low threshold RSS follows the live tensors. It slows allocation (page faults), so the worker
    calls this only for the memory step, after the timings. False where glibc is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 64 * 1024) == 1 and libc.mallopt(m_trim_threshold, 64 * 1024) == 1
    gc.collect()
    libc.malloc_trim(0)
    return ok


def median_time(fn: Callable[[], object], repeats: int,
                device: torch.device | str | None = None) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls (s) and all the samples (device-synchronised)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def timed_repeats(cold_s: float, repeats: int, budget_s: float) -> int:
    """How many timed steps fit the per-measurement budget (at least 1, at most ``repeats``)."""
    return max(1, min(repeats, int(budget_s / max(cold_s, 1e-6))))
