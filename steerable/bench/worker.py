"""One measurement in a fresh process: ``python -m steerable.bench.worker '<json job>'``.

Running every (shape, variant) in its own process keeps measurements independent. Timings are the
median of several training steps after a warmup step. Then the CPU peak memory: the worker switches
glibc to serve every allocation ≥ 64 KiB by mmap and trims the heap (so RSS follows live tensors, see
:func:`_malloc_returns_memory`), resets the kernel's peak-RSS counter (``VmHWM``, by writing ``5`` to
``/proc/self/clear_refs``), records ``VmRSS`` as the baseline, runs one more training step and reports
``VmHWM − baseline``. Where ``clear_refs`` is unavailable it falls back to the ``ru_maxrss`` delta
(which under-reports when an earlier step peaked higher). The result is one JSON line prefixed by
``RESULT``.
On a GPU (``job["device"] = "cuda"``) memory is ``torch.cuda.max_memory_allocated`` over
``memory_allocated`` before the step, and timings synchronise the device.
"""

from __future__ import annotations

import ctypes
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from steerable.bench.shapes import build_inputs

MARK = "RESULT "
VARIANTS = ("reference", "nodewise", "compiled", "chunked", "analytic")
CHUNK_EDGES = 4096  # the ``chunked`` variant: node-wise with φ recomputed per chunk of ~4k edges


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


def build_conv(group, variant: str, in_type: str, out_type: str, kernel: dict) -> torch.nn.Module:
    """The layer under test: implicit conv (``reference``, ``nodewise``, ``compiled``: node-wise with
    ``compile_mlp``, ``chunked``) or escnn's analytic."""
    if variant == "analytic":
        from steerable.nn.analytic import AnalyticPointConv
        return AnalyticPointConv(group, in_type, out_type)
    from steerable.nn.point_conv import ImplicitPointConv
    if variant == "chunked":
        return ImplicitPointConv(group, in_type, out_type, path="nodewise", chunk_edges=CHUNK_EDGES, **kernel)
    if variant == "compiled":
        return ImplicitPointConv(group, in_type, out_type, path="nodewise", compile_mlp=True, **kernel)
    return ImplicitPointConv(group, in_type, out_type, path=variant, **kernel)


def timed_repeats(cold_s: float, repeats: int, budget_s: float) -> int:
    """How many timed steps fit the per-measurement budget (at least 1, at most ``repeats``)."""
    return max(1, min(repeats, int(budget_s / max(cold_s, 1e-6))))


def contraction_rate(conv, inputs: dict, repeats: int) -> dict:
    """Forward time and GFLOP/s of the node-wise contraction alone (aggregation + Hom matmul)."""
    from steerable.nn.contraction import contract_messages, segment_layout
    src, dst = inputs["edge_index"]
    x, num = inputs["x"], inputs["x"].shape[0]
    with torch.no_grad():
        rel = inputs["pos"][src] - inputs["pos"][dst]
        h_t, _, affine = conv.kernel.hidden(rel)
        w_tilde, _ = conv.kernel.weight_and_bias(affine)
        w_flat, layout = w_tilde.flatten(1), segment_layout(dst, num)

        def contract():
            return contract_messages(h_t, x[src], None, w_flat, None, layout)

        contract()
        seconds, _ = median_time(contract, repeats, x.device)
    e, hid, c_in, c_out = src.numel(), h_t.shape[0], x.shape[1], w_tilde.shape[0]
    flops = 2 * e * hid * c_in + 2 * num * hid * c_in * c_out
    return dict(contraction_s=seconds, contraction_gflop=flops / 1e9,
                contraction_gflops=flops / seconds / 1e9)


def phi_time(conv, inputs: dict, repeats: int) -> float:
    """Forward + backward time of the kernel MLP φ alone (shared by both implicit paths)."""
    src, dst = inputs["edge_index"]
    rel = inputs["pos"][src] - inputs["pos"][dst]

    def step():
        conv.zero_grad(set_to_none=True)
        h, window, _ = conv.kernel.hidden(rel)
        (h.sum() + window.sum()).backward()

    step()
    return median_time(step, repeats, rel.device)[0]


def run_job(job: dict) -> dict:
    """Measure one (shape, variant): step time, peak memory, and for ``nodewise`` φ and contraction rates."""
    torch.set_num_threads(int(job["threads"]))
    torch.manual_seed(int(job["seed"]))
    from steerable.groups import build_group
    spec, variant = job["shape"], job["variant"]
    group = build_group(job.get("group", "so3"))
    device = torch.device(job.get("device", "cpu"))
    conv = build_conv(group, variant, spec["in_type"], spec["out_type"], job["kernel"]).to(device)
    conv.train()
    inputs = {k: v.to(device) for k, v in build_inputs(spec, conv.in_type.size).items()}
    x = inputs["x"].requires_grad_(True)
    pos, edge_index = inputs["pos"], inputs["edge_index"]

    def step():
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x, pos, edge_index).square().mean().backward()

    compile_s = median_time(step, 1, device)[0] if variant == "compiled" else None  # compiles
    cold_s, _ = median_time(step, 1, device)
    if cold_s < job["budget_s"] / 4:
        step()  # warmup
    repeats = timed_repeats(cold_s, int(job["repeats"]), float(job["budget_s"]))
    step_s, samples = median_time(step, repeats, device)
    result = dict(shape=spec["name"], variant=variant, nodes=int(pos.shape[0]),
                  edges=int(edge_index.shape[1]), c_in=conv.in_type.size, c_out=conv.out_type.size,
                  step_s=step_s, step_samples=samples, cold_step_s=cold_s,
                  threads=torch.get_num_threads(), device=str(device))
    if variant != "analytic":
        result["hidden"] = conv.kernel.hidden_size
    if variant == "chunked":
        result["chunk_edges"] = CHUNK_EDGES
    if compile_s is not None:
        result["first_step_s"] = compile_s  # includes compilation (graphs may come from inductor's cache)
    if variant == "nodewise" and job.get("extras", True):
        result["phi_s"] = phi_time(conv, inputs, repeats)
        result.update(contraction_rate(conv, inputs, max(repeats, 3)))
    result["tensor_peak_mb"] = tensor_peak_mb(step)
    result["peak_mb"], result["memory_method"] = peak_memory_mb(step, device)  # last: it slows malloc
    return result


def main(argv: list[str] | None = None) -> None:
    job = json.loads((argv or sys.argv[1:])[0])
    result = run_job(job) if job.get("kind", "conv") == "conv" else _model_job(job)
    print(MARK + json.dumps(result), flush=True)


def _model_job(job: dict) -> dict:
    from steerable.bench.models import run_model_job
    return run_model_job(job)


if __name__ == "__main__":
    main()
