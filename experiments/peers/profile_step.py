"""Where a training step of an N-body model goes: wall time per step and the share of its parts.

    OMP_NUM_THREADS=1 python experiments/peers/profile_step.py [model=nbody|egnn] [key=value ...]

Builds the model from the Hydra config of ``experiment=nbody`` (or the ``experiment=`` given) plus the
overrides, takes one training batch of the training split (100 N-body systems by default), and times
``steps`` forward+backward+AdamW steps;
then profiles a few with ``torch.profiler`` and prints the top operators and the share of the
implicit kernel's parts (φ's edge inputs, φ's hidden layers, the node-wise contraction, the rest).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[2]


def build(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=nbody"]
        cfg = compose("train", overrides=[*base, "logger=none", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(REPO / "data")
    from hydra.core.hydra_config import HydraConfig
    HydraConfig.instance().set_config(cfg)
    dm = instantiate(cfg.dataset, _convert_="all")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    model = instantiate(cfg.model, _convert_="all")
    return cfg, model, batch


def main(argv: list[str]) -> None:
    steps = 20
    overrides = [a for a in argv if not a.startswith("steps=")]
    steps = next((int(a.split("=")[1]) for a in argv if a.startswith("steps=")), steps)
    cfg, model, batch = build(overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, fused=True)  # as conf/task
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(batch), batch.y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in model.parameters())
    print(f"model={cfg.model._target_} params={params} threads={torch.get_num_threads()} "
          f"batch={batch.num_graphs} systems: {per_step * 1e3:.1f} ms/step, "
          f"{batch.num_graphs / per_step:.0f} samples/s (step only)")
    from torch.profiler import ProfilerActivity, profile
    label_parts()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    total = sum(e.self_cpu_time_total for e in events)
    print("forward parts (CPU total incl. children, % of the profiled steps; backward not attributed):")
    for e in sorted(events, key=lambda e: -e.cpu_time_total):
        if e.key.startswith("part/"):
            print(f"  {e.key:32s} {100 * e.cpu_time_total / total:5.1f} %  ({e.count // 5} calls/step)")
    backward = sum(e.self_cpu_time_total for e in events
                   if "evaluate_function" in e.key or "Backward" in e.key)
    print(f"  {'(autograd backward functions, self)':32s} {100 * backward / total:5.1f} %")
    print_hom_sparsity(model)


def print_hom_sparsity(model: torch.nn.Module) -> None:
    """Share of non-zero entries of each implicit kernel's contraction weight W̃ (C_out, H, C_in): the
    node-wise contraction multiplies by it densely, Schur's lemma makes most of it zero."""
    from steerable.kernels.implicit import ImplicitKernel
    kernels = [(name, m) for name, m in model.named_modules() if isinstance(m, ImplicitKernel)]
    if not kernels:
        return
    print("contraction weight W̃ (C_out, H, C_in), share of non-zero entries:")
    with torch.no_grad():
        for name, kernel in kernels:
            w_tilde, _ = kernel.weight_and_bias()
            print(f"  {name:32s} {tuple(w_tilde.shape)}  {float((w_tilde != 0).float().mean()):.2f}")


def label_parts() -> None:
    """Wrap the implicit model's parts in ``torch.profiler.record_function`` labels ``part/...``."""
    import functools

    from torch.profiler import record_function

    import steerable.nn.point_conv as point_conv
    from steerable.kernels.implicit import ImplicitKernel
    from steerable.models import blocks

    def wrap(owner, name, label):
        original = getattr(owner, name, None)
        if original is None:  # not used by this version of the layer
            return

        @functools.wraps(original)
        def labelled(*args, **kwargs):
            with record_function(label):
                return original(*args, **kwargs)
        setattr(owner, name, labelled)

    wrap(ImplicitKernel, "edge_features", "part/phi edge inputs")
    wrap(ImplicitKernel, "hidden", "part/phi hidden layers (+inputs)")
    wrap(ImplicitKernel, "weight_and_bias", "part/Hom weight expansion")
    wrap(point_conv, "contract_messages", "part/node-wise contraction")
    wrap(point_conv, "segment_layout", "part/segment layout")
    wrap(point_conv, "cached_segment_layout", "part/segment layout")
    wrap(point_conv.ImplicitPointConv, "forward", "part/conv (all)")
    wrap(blocks.SteerableBlock, "forward", "part/block (conv+norm+gate)")


if __name__ == "__main__":
    main(sys.argv[1:])
