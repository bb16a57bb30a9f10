"""``python -m steerable.gpu_check``: every device check in one command, one JSON + Markdown report.

Stages (each a subprocess with its own time limit, see :mod:`steerable.gpu_check.stages`):
``machine`` (versions, GPU, dense float32 matmul rate), ``tests`` (``pytest -m cuda`` on the device),
``bench`` (ModelNet goal shapes and whole models, node-wise vs per-edge), ``nbody`` (fixed-time
training, test MSE), ``modelnet`` (ModelNet-40 training on generated clouds, clouds/s), ``qm9`` (not
run; the report says why). A stage gets at most its limit and never the time the later stages need,
so the whole run stays within ``--budget-s``. Exit status 0 when every stage that runs passed.

>>> # python -m steerable.gpu_check --device cuda --out experiments/gpu              # ~8.5 min, H200
>>> # python -m steerable.gpu_check --device cpu --size tiny --out /tmp/gpu-check     # a few min, CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from steerable.gpu_check.report import markdown, summarise
from steerable.gpu_check.stages import (
    FIT_S,
    FLOOR_S,
    FULL_BUDGET_S,
    LIMIT_S,
    RUNNERS,
    STAGES,
    TINY_BUDGET_S,
    Context,
    StageResult,
)

LOG_LINES = 400  # per stage in stages.log


def _limits(text: str | None) -> dict[str, float]:
    """``"tests=120,nbody=200"`` → ``{"tests": 120.0, "nbody": 200.0}``."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        if name not in STAGES or not value:
            raise argparse.ArgumentTypeError(f"bad stage limit {item!r}: expected <stage>=<seconds>, stages "
                                             f"{', '.join(STAGES)}")
        out[name] = float(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m steerable.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:<index> or cpu")
    p.add_argument("--size", choices=("full", "tiny"), default=None,
                   help="problem sizes (default: full on CUDA, tiny on the CPU)")
    p.add_argument("--out", type=Path, required=True, help="report directory (report.json, report.md, "
                   "bench.json, stages.log)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"wall-clock budget of all stages (default {FULL_BUDGET_S:.0f} full, "
                        f"{TINY_BUDGET_S:.0f} tiny)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma list of stages to run, in order")
    p.add_argument("--stage-s", type=_limits, default={}, metavar="STAGE=S,...",
                   help="per-stage limits replacing the defaults, e.g. tests=120,nbody=200")
    p.add_argument("--nbody-fit-s", type=float, default=None, help="N-body training seconds (max_time)")
    p.add_argument("--modelnet-fit-s", type=float, default=None,
                   help="ModelNet-40 training seconds (max_time)")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new temp dir, "
                   "removed at the end unless --keep-work)")
    p.add_argument("--keep-work", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.size = args.size or ("tiny" if args.device == "cpu" else "full")
    args.budget_s = args.budget_s or (FULL_BUDGET_S if args.size == "full" else TINY_BUDGET_S)
    unknown = [s for s in args.stages.split(",") if s not in STAGES]
    if unknown:
        p.error(f"unknown stages {unknown}; stages are {', '.join(STAGES)}")
    return args


def stage_limit(name: str, cap: float, remaining: float, later: list[str]) -> float:
    """The most ``name`` may take: its cap, and never what the ``later`` stages need at least."""
    return min(cap, remaining - sum(FLOOR_S[s] for s in later))


def run(args: argparse.Namespace) -> dict:
    """Run the stages, write ``report.json`` / ``report.md`` / ``stages.log`` under ``args.out``."""
    started = time.perf_counter()
    deadline = started + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="steerable-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    fit_s = dict(FIT_S[args.size])
    fit_s.update({k: v for k, v in (("nbody", args.nbody_fit_s), ("modelnet", args.modelnet_fit_s)) if v})
    ctx = Context(device=args.device, size=args.size, out=args.out, work=work, fit_s=fit_s)
    caps = {**LIMIT_S[args.size], **args.stage_s}
    order = [s for s in STAGES if s in args.stages.split(",")]
    results: list[StageResult] = []
    for i, name in enumerate(order):
        limit = stage_limit(name, caps[name], deadline - time.perf_counter(), order[i + 1:])
        if results and results[0].name == "machine" and results[0].status != "passed":
            result = StageResult(name, error="not run: the machine stage failed (see its error)")
        elif limit < FLOOR_S[name]:
            left = max(limit, 0.0)
            why = f"not run: {left:.0f} s of the budget left, it needs {FLOOR_S[name]} s"
            result = StageResult(name, limit_s=left, error=why)
        else:
            print(f">> {name} (limit {limit:.0f} s)", flush=True)
            result = RUNNERS[name](ctx, limit)
        why = f" - {result.error}" if result.error else ""
        print(f"   {name}: {result.status} in {result.wall_s:.0f} s{why}", flush=True)
        results.append(result)
    report = build_report(args, results, time.perf_counter() - started)
    write_report(args.out, report, results)
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def build_report(args: argparse.Namespace, results: list[StageResult], wall_s: float) -> dict:
    """The report dict: run settings, machine, stages, headline summary, notes."""
    stages = {r.name: r.to_dict() for r in results}
    machine = stages.get("machine", {}).get("metrics") or {}
    notes = ["The ModelNet-40 stage trains on generated clouds in the HDF5 release layout "
             "(steerable/gpu_check/clouds.py): its clouds/s is the real pipeline's (loader workers build the "
             "point hierarchy, then the step), its accuracy means nothing.",
             "Bench rows: one training step (forward + backward) per measurement, median of up to 10 after "
             "a warm-up; peak memory is the profiler's tensor peak of a step (the bench's `*_mb`); whole "
             "models are timed on synthetic batches, the QM9-like one of 32 molecules × 18 atoms."]
    if args.size == "tiny":
        notes.append("Tiny sizes: a check that the stages run, not a measurement.")
    return {"passed": all(r.status == "passed" for r in results if r.name != "qm9"),
            "device": args.device, "size": args.size, "budget_s": args.budget_s, "wall_s": wall_s,
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m steerable.gpu_check " + shlex.join(args.argv),
            "machine": machine, "summary": summarise(stages), "stages": [r.to_dict() for r in results],
            "notes": notes}


def write_report(out: Path, report: dict, results: list[StageResult]) -> None:
    """``report.json``, ``report.md`` and ``stages.log`` (the last lines of each stage's log)."""
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(markdown(report))
    parts = []
    for r in results:
        text = Path(r.log).read_text(errors="replace") if r.log and Path(r.log).is_file() else ""
        kept = text.replace("\r", "\n").splitlines()[-LOG_LINES:]
        parts.append(f"===== {r.name}: {r.status} ({r.wall_s:.0f} s)\n" + "\n".join(kept))
    (out / "stages.log").write_text("\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(f"\n{'all stages passed' if report['passed'] else 'FAILED'}; wrote {args.out / 'report.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
