"""One measurement in a fresh process: ``python -m steerable.bench.worker '<json job>'``.

Running every (shape, variant) in its own process keeps measurements independent. Timings are the
median of several training steps after a warmup step; one more training step then gives the peak
memory (how both are measured: :mod:`steerable.bench.measure`). Model jobs (``kind`` other than
``conv``) run :func:`steerable.bench.models.run_model_job`. The result is one JSON line prefixed by
``RESULT``. On a GPU (``job["device"] = "cuda"``) timings synchronise the device.
"""

from __future__ import annotations

import json
import sys

import torch

from steerable.bench.measure import median_time, peak_memory_mb, tensor_peak_mb, timed_repeats
from steerable.bench.models import run_model_job
from steerable.bench.shapes import build_inputs

MARK = "RESULT "
VARIANTS = ("reference", "nodewise", "compiled", "chunked", "analytic")
CHUNK_EDGES = 4096  # the ``chunked`` variant: node-wise with φ recomputed per chunk of ~4k edges


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
    result = run_job(job) if job.get("kind", "conv") == "conv" else run_model_job(job)
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
