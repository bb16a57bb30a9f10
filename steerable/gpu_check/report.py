"""The GPU check's report: headline numbers from the stages' metrics, and its Markdown page."""

from __future__ import annotations

from typing import Any

PATHS = ("reference", "nodewise")  # per-edge kernels, node-wise contraction
STATUS_MARK = {"passed": "passed", "failed": "**FAILED**", "timeout": "**TIMEOUT**", "skipped": "skipped"}


def _get(d: dict | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def summarise(stages: dict[str, dict]) -> dict:
    """Headline numbers of a run from its stages (``{name: StageResult.to_dict()}``); ``None`` where a
    stage did not produce the number."""
    machine = _get(stages, "machine", "metrics") or {}
    bench = _get(stages, "bench", "metrics") or {}
    nbody = _get(stages, "nbody", "metrics") or {}
    modelnet = _get(stages, "modelnet", "metrics") or {}
    matmul = machine.get("matmul_fp32_gflops")
    shapes = {}
    for name, line in (bench.get("shapes") or {}).items():
        gflops = line.get("contraction_gflops")
        shapes[name] = {"nodes": line.get("nodes"), "edges": line.get("edges"),
                        "speedup_vs_per_edge": line.get("speedup"),
                        "step_s": {p: line.get(f"{p}_s") for p in PATHS},
                        "peak_mb": {p: line.get(f"{p}_mb") for p in PATHS},
                        "memory_ratio": line.get("memory_ratio"), "contraction_gflops": gflops,
                        "contraction_vs_matmul": gflops / matmul if gflops and matmul else None}
    models = bench.get("models") or {}
    return {
        "modelnet_train_clouds_per_s": modelnet.get("train/samples_per_s"),
        "modelnet_peak_memory_mb": modelnet.get("train/peak_memory_mb"),
        "modelnet_test_acc": modelnet.get("test/acc"),
        "modelnet_model_clouds_per_s": _per_path(models.get("modelnet")),
        "qm9_like_molecules_per_s": _per_path(models.get("qm9")),
        "qm9": _get(stages, "qm9", "error"),
        "model_speedup_vs_per_edge": {name: {"train": m.get("train_speedup"), "infer": m.get("infer_speedup"),
                                             "train_paired": m.get("paired_train_speedup")}
                                      for name, m in models.items() if "skip" not in m},
        "goal_shapes": shapes,
        "bench_goals": bench.get("goals") or [],
        "matmul_fp32_gflops": matmul,
        "matmul_tf32_gflops": machine.get("matmul_tf32_gflops"),
        "nbody_test_mse": nbody.get("test/mse"),
        "nbody_val_mse_best": nbody.get("val/mse_best"),
        "nbody_systems_per_s": nbody.get("train/samples_per_s"),
        "nbody_epochs": nbody.get("train/epochs_done"),
        "nbody_train_s": nbody.get("max_time_s"),
        "nbody_peak_memory_mb": nbody.get("train/peak_memory_mb"),
        "nbody_target_mse": nbody.get("target_mse"),
        "nbody_val_to_target": nbody.get("val_to_target"),
    }


def _per_path(model: dict | None) -> dict | None:
    if not model or "skip" in model:
        return None
    return {"batch": model.get("batch"), "train": model.get("train_graphs_per_s"),
            "infer": model.get("infer_graphs_per_s"), "train_peak_mb": model.get("train_peak_mb")}


def _f(value: Any, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """``report.md``: machine, stage table, headline numbers, goal shapes, whole models, notes."""
    m, s = report.get("machine") or {}, report["summary"]
    v = m.get("versions") or {}
    title = m.get("gpu") or f"CPU ({m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores)"
    lines = [f"# GPU check: {title}", "",
             f"`{report['command']}` — {report['started']}, {report['wall_s']:.0f} s of a "
             f"{report['budget_s']:.0f} s budget, device `{report['device']}`, size `{report['size']}`: "
             + ("**all stages passed**" if report["passed"] else "**FAILED**"), "",
             "| machine | |", "|---|---|"]
    if m.get("gpu"):
        lines.append(f"| GPU | {m['gpu']}, {_f(m.get('gpu_memory_gib'), '.0f')} GiB, compute capability "
                     f"{m.get('compute_capability')}, {m.get('multiprocessors')} SMs, "
                     f"driver {m.get('driver')} |")
    lines += [f"| CPU | {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores |",
              f"| versions | Python {v.get('python')}, torch {v.get('torch')} (CUDA {v.get('torch_cuda')}, "
              f"cuDNN {v.get('cudnn')}), numpy {v.get('numpy')}, Lightning {v.get('pytorch_lightning')}, "
              f"PyG {v.get('torch_geometric')}, escnn {v.get('escnn')} (lie_learn {v.get('lie_learn')}, "
              f"py3nj {v.get('py3nj')}), Hydra {v.get('hydra')} |",
              f"| dense float32 matmul ({m.get('matmul_size')}²) | {_f(s['matmul_fp32_gflops'], '.0f')} "
              f"GFLOP/s (TF32: {_f(s['matmul_tf32_gflops'], '.0f')}) |", "",
              "## Stages", "", "| stage | status | s | limit s | result |", "|---|---|---|---|---|"]
    for st in report["stages"]:
        lines.append(f"| {st['name']} | {STATUS_MARK.get(st['status'], st['status'])} | {st['wall_s']:.0f} | "
                     f"{_f(st['limit_s'], '.0f')} | {_stage_line(st)} |")
    lines += ["", "## Headline numbers", "",
              "| | |", "|---|---|",
              f"| ModelNet-40 training, end to end (loader + step, generated clouds) | "
              f"{_f(s['modelnet_train_clouds_per_s'], '.1f')} clouds/s, "
              f"peak {_f(s['modelnet_peak_memory_mb'], '.0f')} MB |"]
    rows = (("ModelNet model, training step", "modelnet_model_clouds_per_s", "clouds/s"),
            ("QM9-like molecules, training step", "qm9_like_molecules_per_s", "molecules/s"))
    for label, key, unit in rows:
        per = s.get(key)
        if per:
            train, infer = per["train"] or {}, per["infer"] or {}
            lines.append(f"| {label} (batch {per['batch']}), node-wise / per-edge | "
                         f"{_f(train.get('nodewise'), '.1f')} / {_f(train.get('reference'), '.1f')} {unit} "
                         f"(inference {_f(infer.get('nodewise'), '.1f')} / "
                         f"{_f(infer.get('reference'), '.1f')}) |")
    lines.append(f"| QM9 training | {s['qm9'] or 'run'} |")
    lines.append(f"| N-body, {_f(s['nbody_train_s'], '.0f')} s of training | "
                 f"test MSE {_f(s['nbody_test_mse'], '.4g')} "
                 f"(best val {_f(s['nbody_val_mse_best'], '.4g')}), "
                 f"{_f(s['nbody_epochs'], '.0f')} epochs, {_f(s['nbody_systems_per_s'], '.0f')} systems/s, "
                 f"peak {_f(s['nbody_peak_memory_mb'], '.0f')} MB |")
    if s.get("nbody_target_mse") is not None:
        hit = s.get("nbody_val_to_target")
        reached = (f"after {hit['loop_s']:.0f} s of training (epoch {hit['epoch']}, "
                   f"val MSE {hit['val_mse']:.4g}; validation time excluded)" if hit else "not reached")
        lines.append(f"| N-body, validation MSE ≤ {s['nbody_target_mse']:g} | {reached} |")
    if s["goal_shapes"]:
        lines += ["", "## Layer: node-wise vs per-edge (bench shapes: the ModelNet goal shapes on a GPU)", "",
                  "| shape | N | E | speed-up | step s per-edge / node-wise | peak MB per-edge / node-wise | "
                  "memory ratio | contraction GFLOP/s | of fp32 matmul |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, g in s["goal_shapes"].items():
            t, mb = g["step_s"], g["peak_mb"]
            step = " / ".join(_f(t[p], ".4f") for p in PATHS)
            peak = " / ".join(_f(mb[p], ".0f") for p in PATHS)
            lines.append(f"| {name} | {g['nodes']} | {g['edges']} | {_f(g['speedup_vs_per_edge'], '.1f')}× | "
                         f"{step} | {peak} | {_f(g['memory_ratio'], '.1f')}× | "
                         f"{_f(g['contraction_gflops'], '.0f')} | {_f(g['contraction_vs_matmul'], '.1%')} |")
    if s["model_speedup_vs_per_edge"]:
        lines += ["", "Whole models, node-wise vs per-edge: " + "; ".join(
            f"{name} training ×{_f(x['train'], '.2f')}"
            + (f" (paired rounds ×{x['train_paired']:.2f})" if x.get("train_paired") is not None else "")
            + f", inference ×{_f(x['infer'], '.2f')}"
            for name, x in s["model_speedup_vs_per_edge"].items()) + "."]
    goals = s.get("bench_goals") or []
    if goals:
        lines += ["", "Bench targets: " + "; ".join(
            f"{g['goal']} {g['value']:.2f} ({'met' if g['met'] else 'not met'}, target {g['target']:g})"
            for g in goals) + "."]
    if report.get("notes"):
        lines += ["", "## Notes", "", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def _stage_line(st: dict) -> str:
    m, name = st.get("metrics") or {}, st["name"]
    if st["status"] in ("failed", "timeout", "skipped") and st.get("error"):
        return st["error"].replace("|", "/")[:400]
    if name == "machine":
        return f"{m.get('gpu') or m.get('cpu')}, fp32 matmul {_f(m.get('matmul_fp32_gflops'), '.0f')} GFLOP/s"
    if name == "tests":
        return (f"{m.get('tests')} tests, {m.get('failures')} failed, {m.get('errors')} errors, "
                f"{m.get('skipped')} skipped")
    if name == "bench":
        return f"{len(m.get('shapes', {}))} shapes, {len(m.get('models', {}))} models"
    if name == "nbody":
        return f"test MSE {_f(m.get('test/mse'), '.4g')} after {_f(m.get('train/epochs_done'), '.0f')} epochs"
    if name == "modelnet":
        return f"{_f(m.get('train/samples_per_s'), '.1f')} clouds/s, test acc {_f(m.get('test/acc'), '.2f')}"
    return ""
