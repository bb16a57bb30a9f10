"""A/B step time of two N-body model configs, interleaved (robust to a loaded, shared CPU).

    OMP_NUM_THREADS=1 python experiments/peers/ab_step.py "A overrides" "B overrides" [rounds]

Both models are built from ``experiment=nbody`` (or the ``experiment=`` among their overrides) plus
their overrides (space-separated) and trained on the same training batch, alternating one step each
for ``rounds`` rounds. Reports the median wall and process-CPU time per step (forward, backward,
AdamW) and the B/A ratio.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from profile_step import build


def main(argv: list[str]) -> None:
    specs = [argv[0].split(), argv[1].split()]
    rounds = int(argv[2]) if len(argv) > 2 else 20
    runs = []
    for overrides in specs:
        cfg, model, batch = build(overrides)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, fused=True)  # as conf/task
        runs.append((model.train(), opt, batch))

    def step(model, opt, batch):
        opt.zero_grad(set_to_none=True)
        out = model(batch)
        torch.nn.functional.mse_loss(out, batch.y.to(out.dtype)).backward()
        opt.step()

    for run in runs:
        for _ in range(3):
            step(*run)
    times = [([], []), ([], [])]
    for _ in range(rounds):
        for run, (wall, cpu) in zip(runs, times):
            w0, c0 = time.perf_counter(), time.process_time()
            step(*run)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    med = [(statistics.median(w), statistics.median(c)) for w, c in times]
    for name, spec, (w, c), run in zip("AB", specs, med, runs):
        params = sum(p.numel() for p in run[0].parameters())
        n = run[2].num_graphs
        print(f"{name} [{' '.join(spec) or 'default'}] params={params} batch={n}: wall {w * 1e3:.1f} ms/step "
              f"({n / w:.0f} samples/s), cpu {c * 1e3:.1f} ms/step ({n / c:.0f} samples/s)")
    print(f"B/A: wall {med[1][0] / med[0][0]:.3f}, cpu {med[1][1] / med[0][1]:.3f}  "
          f"(threads={torch.get_num_threads()}, rounds={rounds})")


if __name__ == "__main__":
    main(sys.argv[1:])
