"""``python -m steerable.bench``: node-wise vs per-edge implicit conv vs escnn analytic conv.

For every shape (QM9-like molecules, ModelNet-like clouds, a scaling sweep over E at fixed N) the
three variants run one after another, each in its own subprocess (:mod:`steerable.bench.worker`):
training-step time (forward + backward, median after warmup) and peak memory over a baseline.
Then the memory slope over the sweep, the node-wise contraction's GFLOP/s against a dense
``torch.mm``, and whole-model throughput when the models exist. Writes JSON and a PNG.

>>> # python -m steerable.bench --quick --out /tmp/bench.json
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads
# made 2-thread steps up to 70× slower than 1-thread ones (measured). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from steerable.bench.models import MODELS, PATHS  # noqa: E402
from steerable.bench.report import format_table, goals, machine_info, memory_slopes, plot, summarise  # noqa: E402
from steerable.bench.shapes import default_shapes  # noqa: E402
from steerable.bench.worker import MARK, VARIANTS  # noqa: E402
from steerable.io_utils import atomic_write  # noqa: E402

KERNEL = dict(channels=8, band_limit=1, n_layers=3)  # ImplicitKernel defaults, stated explicitly


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m steerable.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (smoke test)")
    p.add_argument("--out", type=Path, default=Path("experiments/bench/results_cpu.json"))
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: next to --out)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (memory then from torch.cuda.max_memory_allocated)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (at most)")
    p.add_argument("--budget-s", type=float, default=40.0, help="time budget of the timed steps of one job")
    p.add_argument("--clouds", type=int, default=2, help="ModelNet-like batch size (clouds of 1,024 points)")
    p.add_argument("--sweep-points", type=int, default=512, help="N of the scaling sweep")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ",".join(VARIANTS))
    p.add_argument("--only", default=None, help="comma list of shape-name prefixes to run")
    p.add_argument("--no-models", action="store_true", help="skip the whole-model throughput")
    p.add_argument("--models", default=",".join(MODELS), help="comma list of " + ",".join(MODELS))
    p.add_argument("--model-paths", default=",".join(PATHS),
                   help="comma list of the paths each model runs, of " + ",".join(PATHS))
    p.add_argument("--no-paired", action="store_true",
                   help="skip the paired job (the model paths' training steps interleaved in one process)")
    p.add_argument("--timeout-s", type=float, default=1200.0, help="per-subprocess timeout")
    p.add_argument("--inprocess", action="store_true",
                   help="run the jobs in this process (fast smoke test, not for figures: memory is less "
                        "clean, and after the first memory step glibc's mmap threshold stays fixed at "
                        "64 KiB, which slows the later timings)")
    return p.parse_args(argv)


def run_worker(job: dict, timeout: float, inprocess: bool = False) -> dict:
    """Run one job in a fresh interpreter (or here); its ``RESULT`` line, or an ``error`` entry."""
    if inprocess:
        from steerable.bench.models import run_model_job
        from steerable.bench.worker import run_job
        try:
            return run_job(job) if job["kind"] == "conv" else run_model_job(job)
        except Exception as err:  # noqa: BLE001 - a failed measurement is reported, not fatal
            return dict(error=repr(err))
    cmd = [sys.executable, "-m", "steerable.bench.worker", json.dumps(job)]
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), OMP_WAIT_POLICY=os.environ["OMP_WAIT_POLICY"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout after {timeout:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return dict(error=(proc.stderr or proc.stdout).strip()[-600:] or f"exit code {proc.returncode}")


def dense_matmul_gflops(threads: int, size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Achieved GFLOP/s of a square float32 ``torch.mm`` (the practical limit of this machine)."""
    from steerable.bench.measure import median_time
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    seconds, _ = median_time(lambda: a @ b, repeats, device)
    return 2 * size**3 / seconds / 1e9


def run_convs(args: argparse.Namespace) -> list[dict]:
    shapes = default_shapes(args.quick, args.clouds, args.sweep_points)
    if args.only:
        shapes = [s for s in shapes if s["name"].startswith(tuple(args.only.split(",")))]
    rows = []
    for spec in shapes:
        for variant in args.variants.split(","):
            job = dict(kind="conv", shape=spec, variant=variant, threads=args.threads, seed=0, kernel=KERNEL,
                       repeats=1 if args.quick else args.repeats, budget_s=args.budget_s,
                       device=args.device)
            start = time.perf_counter()
            result = run_worker(job, args.timeout_s, args.inprocess)
            result.setdefault("shape", spec["name"])
            result.setdefault("variant", variant)
            result["wall_s"] = time.perf_counter() - start
            rows.append(result)
            status = result.get("error", "")[-200:] or (
                f"E={result['edges']:>7d} step {result['step_s']:.3f} s  "
                f"tensors {result['tensor_peak_mb']:.0f} MB  RSS {result['peak_mb']:.0f} MB")
            print(f"  {spec['name']:<20s} {variant:<10s} {status}", flush=True)
    return rows


def run_models(args: argparse.Namespace) -> list[dict]:
    from steerable.bench.models import model_jobs, summarise_models
    results = []
    for job in model_jobs(args.quick, args.threads, args.repeats, args.budget_s, args.device,
                          args.models.split(","), tuple(args.model_paths.split(",")), not args.no_paired):
        if "skip" in job:
            print(f"  model {job['model']}: skipped ({job['skip']})", flush=True)
            results.append(job)
            continue
        result = run_worker(job, args.timeout_s, args.inprocess)
        result.setdefault("model", job["model"])
        result.setdefault("path", job["path"])
        if "error" in result:
            status = result["error"][-200:]
        elif "paired_speedup" in result:
            status = f"{result['rounds']} interleaved rounds, training ratio (median of rounds) " + ", ".join(
                f"{path} ×{ratio:.2f}" for path, ratio in result["paired_speedup"].items())
        else:
            status = (f"train {result['train_graphs_per_s']:.2f} graphs/s, infer "
                      f"{result['infer_graphs_per_s']:.2f} graphs/s, peak {result['train_peak_mb']:.0f} MB")
        print(f"  model {job['model']:<24s} {job['path']:<10s} {status}", flush=True)
        results.append(result)
    return results, summarise_models(results)


def write_json(path: Path, report: dict) -> None:
    """``report`` as JSON at ``path``, atomically (a reader never sees half a file)."""
    with atomic_write(path, "w") as handle:
        json.dump(report, handle, indent=1)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}, but torch sees no CUDA device on this machine")
    info = machine_info(args.threads)
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(args.device)
    print(f"machine: {info.get('cpu')} ({info['cpu_count']} cores), torch {info['torch']}, "
          f"{args.threads} threads, load {info['loadavg_start']}; device {args.device}, GPU: {info['gpu']}",
          flush=True)
    matmul = dense_matmul_gflops(args.threads, 512 if args.quick else 2048, device=args.device)
    print(f"dense torch.mm: {matmul:.1f} GFLOP/s", flush=True)
    rows = run_convs(args)
    ok = [r for r in rows if "error" not in r]
    lines, slopes, rss_slopes = summarise(ok), memory_slopes(ok), memory_slopes(ok, rss=True)

    def report_with(model_rows: list[dict], models: list[dict], complete: bool) -> dict:
        info["loadavg_end"] = os.getloadavg()
        return dict(machine=info, args={k: str(v) for k, v in vars(args).items()}, kernel=KERNEL,
                    dense_matmul_gflops=matmul, rows=rows, summary=lines, memory_slope=slopes,
                    rss_memory_slope=rss_slopes, model_rows=model_rows, models=models,
                    goals=goals(lines, slopes, models), complete=complete)

    if not args.no_models:  # the layer rows survive a run stopped while the models are measured
        write_json(args.out, report_with([], [], complete=False))
    model_rows, models = ([], []) if args.no_models else run_models(args)
    report = report_with(model_rows, models, complete=True)
    print("\n" + format_table(lines))
    for name, fitted in (("tensor", slopes), ("RSS", rss_slopes)):
        if fitted.get("nodewise"):
            print(f"\nmemory slope (sweep, {name} peaks): " + ", ".join(
                f"{v} {fitted[v]['bytes_per_edge']:.0f} B/edge" for v in VARIANTS if v in fitted)
                + f"; bound (H + C_in)·4 = {fitted['bound_bytes_per_edge']:.0f} B/edge")
    for m in models:
        print(f"\nmodel {m['model']}: " + (m["skip"] if "skip" in m else
              f"training throughput ×{m['train_speedup']:.2f}, inference ×{m['infer_speedup']:.2f}, "
              f"memory ÷{m['memory_ratio']:.2f} (nodewise vs reference)"
              + (f"; compiled φ: training ×{m['compiled_train_speedup']:.2f}, inference "
                 f"×{m['compiled_infer_speedup']:.2f}" if "compiled" in m else "")
              + (f"; paired rounds: training ×{m['paired_train_speedup']:.2f}"
                 if m.get("paired_train_speedup") is not None else "")
              + (f" (compiled ×{m['paired_compiled_train_speedup']:.2f})"
                 if m.get("paired_compiled_train_speedup") is not None else "")))
    for g in report["goals"]:
        print(f"  goal {g['goal']}: {g['value']:.2f} vs {g['target']} -> {'met' if g['met'] else 'NOT met'}")
    write_json(args.out, report)
    if ok:
        plot(ok, args.plot or args.out.with_suffix(".png"))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
