"""Machine facts and the device's dense matmul rate: ``python -m steerable.gpu_check.machine``.

Prints one JSON line prefixed with ``RESULT``: Python, numpy, torch (and its CUDA and cuDNN builds),
PyTorch Lightning, PyG and escnn versions; CPU cores; for CUDA the device name, memory, compute
capability, device count and driver version; and the achieved GFLOP/s of a square float32 matmul
with full IEEE float32 (``torch.set_float32_matmul_precision("highest")``) and with TF32
(``"high"``), the ceilings the contraction rates of the bench are compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata

import torch

MARK = "RESULT "


def versions() -> dict[str, str | None]:
    """Versions of the interpreter and of the libraries the framework runs on (``None``: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                  "torch_cuda": torch.version.cuda,
                                  "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available()
                                  else None}
    for key, dist in (("numpy", "numpy"), ("pytorch_lightning", "pytorch-lightning"),
                      ("torch_geometric", "torch-geometric"), ("escnn", "escnn"), ("hydra", "hydra-core"),
                      ("omegaconf", "omegaconf"), ("lie_learn", "lie_learn"), ("py3nj", "py3nj")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def device_info(device: torch.device) -> dict:
    """Name, memory (GiB), compute capability and multiprocessors of a CUDA device; the CPU otherwise."""
    info: dict = {"device": str(device), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                    compute_capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, cuda_devices=torch.cuda.device_count(),
                    driver=_driver_version())
    else:
        info["gpu"] = None
    return info


def _driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi``, or ``None`` where it does not answer."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def matmul_gflops(device: torch.device, size: int, precision: str, repeats: int = 10) -> float:
    """Achieved GFLOP/s of ``(size × size) @ (size × size)`` in float32 at a matmul ``precision``.

    Median over ``repeats`` timed products after three warm-ups, synchronised on CUDA.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(size, size, device=device, generator=gen)
        b = torch.randn(size, size, device=device, generator=gen)
        times = []
        for i in range(3 + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
        return 2 * size**3 / statistics.median(times) / 1e9
    finally:
        torch.set_float32_matmul_precision(previous)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m steerable.gpu_check.machine",
                                description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--matmul-size", type=int, default=8192)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}, but torch sees no CUDA device")
    result = {"versions": versions(), **device_info(device), "matmul_size": args.matmul_size,
              "matmul_fp32_gflops": matmul_gflops(device, args.matmul_size, "highest")}
    if device.type == "cuda":
        result["matmul_tf32_gflops"] = matmul_gflops(device, args.matmul_size, "high")
    print(MARK + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
