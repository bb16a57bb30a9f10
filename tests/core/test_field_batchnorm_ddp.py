"""FieldBatchNorm under a real 2-process gloo group: with ``sync`` set, what each rank computes on its
share of a batch equals one process on the whole batch (outputs, gradients, running statistics)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steerable.fields import FieldBatchNorm
from steerable.kernels import ImplicitKernel
from steerable.testing import group

SPEC = "2x0e+2x1o+1x2e"
ROWS = (5, 3)  # rows (and edges) per rank: unequal on purpose
FULL = slice(0, sum(ROWS))


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole batch: features ``(8, C)``, loss weights ``(8, C)``, relative positions ``(8, 3)``."""
    generator = torch.Generator().manual_seed(0)
    size = group("o3").field_type(SPEC, on="fiber").size
    x = torch.randn(sum(ROWS), size, generator=generator, dtype=torch.float64) * 3 + 1
    weights = torch.randn(sum(ROWS), size, generator=generator, dtype=torch.float64)
    rel_pos = torch.randn(sum(ROWS), 3, generator=generator, dtype=torch.float64)
    return x, weights, rel_pos


def _modules(sync: bool) -> tuple[FieldBatchNorm, ImplicitKernel]:
    torch.manual_seed(1)
    spec = group("o3")
    norm = FieldBatchNorm(spec.field_type(SPEC, on="fiber")).double()
    kernel = ImplicitKernel(spec, spec.field_type("1x0e"), spec.field_type("1x1o"), channels=2).double()
    for module in (norm, *kernel.modules()):
        if isinstance(module, FieldBatchNorm):
            module.sync = sync
    return norm.train(), kernel.train()


def _run(rows: slice, sync: bool) -> dict[str, torch.Tensor]:
    """Normalise ``rows`` of the batch and evaluate the kernel (φ with batch norms) on those edges."""
    x, weights, rel_pos = _inputs()
    norm, kernel = _modules(sync)
    x = x[rows].clone().requires_grad_(True)
    out = norm(x)
    k = kernel.kernel(rel_pos[rows])  # (E, C_out, C_in): φ's batch norms over this rank's edges
    ((out * weights[rows]).sum() + k.square().sum()).backward()
    norms = [m for m in kernel.modules() if isinstance(m, FieldBatchNorm)]
    return {"out": out.detach(), "kernel": k.detach(), "x_grad": x.grad,
            "running_mean": norm.running_mean, "running_var": norm.running_var,
            "kernel_running_var": norms[-1].running_var, "weight_grad": norm.weight.grad,
            "kernel_grad": next(kernel.parameters()).grad}


def _worker(rank: int, store: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=len(ROWS))
    try:
        start = sum(ROWS[:rank])
        torch.save(_run(slice(start, start + ROWS[rank]), sync=True), f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


def _ranks(tmp_path: Path) -> list[dict[str, torch.Tensor]]:
    results = str(tmp_path / "rank")
    mp.spawn(_worker, args=(str(tmp_path / "store"), results), nprocs=len(ROWS), join=True)
    return [torch.load(f"{results}.{rank}", weights_only=True) for rank in range(len(ROWS))]


@pytest.mark.slow
def test_synced_batch_norm_over_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    whole = _run(FULL, sync=False)
    ranks = _ranks(tmp_path)
    for key in ("out", "kernel", "x_grad"):  # row by row: each rank holds its own rows
        torch.testing.assert_close(torch.cat([r[key] for r in ranks]), whole[key], msg=key)
    for key in ("running_mean", "running_var", "kernel_running_var"):  # the same on every rank
        for r in ranks:
            torch.testing.assert_close(r[key], whole[key], msg=key)
    for key in ("weight_grad", "kernel_grad"):  # summed over ranks (DDP averages; the loss here is a sum)
        torch.testing.assert_close(ranks[0][key] + ranks[1][key], whole[key], msg=key)
    alone = _run(slice(0, ROWS[0]), sync=False)  # what rank 0 computed without sync: its own statistics
    assert not torch.allclose(alone["running_var"], whole["running_var"])
