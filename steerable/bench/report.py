"""Summaries of benchmark rows: side-by-side table, goal checks (:data:`GOALS`), memory slope, plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

GOALS = dict(modelnet_speedup=20.0, modelnet_memory=10.0, qm9_speedup=3.0, model_speedup=5.0)


def machine_info(threads: int) -> dict:
    """CPU model, cores, memory, library versions and the load average (other jobs share the CPU)."""
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                threads=threads, cpu_count=os.cpu_count(), loadavg_start=os.getloadavg(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), gpu="none (CPU-only machine)")
    try:
        import escnn
        info["escnn"] = getattr(escnn, "__version__", "?")
    except ImportError:
        pass
    for path, key, field in (("/proc/cpuinfo", "cpu", "model name"), ("/proc/meminfo", "memory", "MemTotal")):
        try:
            with open(path) as f:
                info[key] = next(line.split(":", 1)[1].strip() for line in f if line.startswith(field))
        except (OSError, StopIteration):
            pass
    return info


def by_shape(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """``{shape: {variant: row}}`` keeping the shape order of ``rows``."""
    table: dict[str, dict[str, dict]] = {}
    for row in rows:
        table.setdefault(row["shape"], {})[row["variant"]] = row
    return table


def memory_mb(row: dict | None, prefix: str = "") -> float | None:
    """A row's peak memory: the tensor peak from the profiler when measured, else the RSS peak.

    ``prefix="train_"`` reads a whole-model row's training-step peak.
    """
    if not row:
        return None
    return row.get(f"{prefix}tensor_peak_mb", row.get(f"{prefix}peak_mb"))


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    """``a[key] / b[key]`` (``key="memory"``: :func:`memory_mb`, denominators floored at 1 MB)."""
    value = memory_mb if key == "memory" else (lambda row: row.get(key) if row else None)
    top, bottom = value(a), value(b)
    if top is None or bottom is None:
        return None
    return top / max(bottom, 1.0 if key == "memory" else 1e-9)


def summarise(rows: list[dict]) -> list[dict]:
    """One line per shape: times, memories, nodewise-vs-reference (and analytic) ratios."""
    lines = []
    for shape, variants in by_shape(rows).items():
        ref, nw, co, ch, an = (variants.get(v) for v in ("reference", "nodewise", "compiled", "chunked",
                                                          "analytic"))
        base = nw or ref or co or ch or an
        line = dict(shape=shape, nodes=base["nodes"], edges=base["edges"], c_in=base["c_in"],
                    speedup=_ratio(ref, nw, "step_s"), memory_ratio=_ratio(ref, nw, "memory"),
                    analytic_vs_nodewise_time=_ratio(an, nw, "step_s"),
                    analytic_vs_nodewise_memory=_ratio(an, nw, "memory"),
                    compiled_speedup=_ratio(ref, co, "step_s"),
                    chunked_speedup=_ratio(ref, ch, "step_s"),
                    chunked_memory_ratio=_ratio(ref, ch, "memory"))
        for name, row in (("reference", ref), ("nodewise", nw), ("compiled", co), ("chunked", ch),
                          ("analytic", an)):
            line[f"{name}_s"] = row.get("step_s") if row else None
            line[f"{name}_mb"] = memory_mb(row)
            line[f"{name}_rss_mb"] = row.get("peak_mb") if row else None
        if nw and "phi_s" in nw:
            line.update(phi_share=nw["phi_s"] / nw["step_s"], contraction_gflops=nw["contraction_gflops"],
                        contraction_speedup=_contraction_speedup(ref, nw))
        lines.append(line)
    return lines


def _contraction_speedup(ref: dict | None, nw: dict) -> float | None:
    """Speedup of what differs between the paths (step minus the shared kernel MLP φ)."""
    if not ref:
        return None
    rest_ref, rest_nw = ref["step_s"] - nw["phi_s"], nw["step_s"] - nw["phi_s"]
    return rest_ref / rest_nw if rest_nw > 0 and rest_ref > 0 else None


def memory_slopes(rows: list[dict], family_prefix: str = "sweep", rss: bool = False) -> dict:
    """Least-squares slope of peak memory vs E over the sweep, in bytes per edge, per variant.

    Fitted to :func:`memory_mb` (tensor peaks where measured), or to the RSS peaks with ``rss``.
    ``chunked`` is fitted over the sweep points that are actually cut into chunks (E ≥ 2·chunk_edges;
    smaller graphs run in one piece, i.e. exactly as ``nodewise``).
    """
    def value(row: dict) -> float | None:
        return row.get("peak_mb") if rss else memory_mb(row)

    out = {}
    sweep = [r for r in rows if r["shape"].startswith(family_prefix) and value(r) is not None]
    for variant in ("reference", "nodewise", "compiled", "chunked", "analytic"):
        pts = [(r["edges"], value(r)) for r in sweep if r["variant"] == variant
               and r["edges"] >= 2 * r.get("chunk_edges", 0)]
        if len(pts) >= 2:
            e, mb = np.array(pts, dtype=float).T
            slope, intercept = np.polyfit(e, mb * 2**20, 1)
            out[variant] = dict(bytes_per_edge=float(slope), intercept_mb=float(intercept / 2**20))
    nodewise = [r for r in sweep if r["variant"] == "nodewise" and "hidden" in r]
    if nodewise:
        h, c = nodewise[0]["hidden"], nodewise[0]["c_in"]
        out["bound_bytes_per_edge"] = 4.0 * (h + c)
        out["hidden"], out["c_in"] = h, c
    return out


def goals(lines: list[dict], slopes: dict, models: list[dict]) -> list[dict]:
    """The speed and memory targets of :data:`GOALS`, each with the measured value and met / not met."""
    checks = []

    def add(name, value, target, higher=True):
        if value is not None:
            checks.append(dict(goal=name, value=value, target=target,
                               met=bool(value >= target if higher else value <= target)))

    for line in lines:
        degree = line["edges"] / line["nodes"]
        if line["shape"].startswith("modelnet") and degree >= 32 and line["c_in"] >= 64:
            add(f"{line['shape']} speedup", line["speedup"], GOALS["modelnet_speedup"])
            add(f"{line['shape']} speedup (compiled φ)", line.get("compiled_speedup"),
                GOALS["modelnet_speedup"])
            add(f"{line['shape']} memory ratio", line["memory_ratio"], GOALS["modelnet_memory"])
        if line["shape"].startswith("qm9"):
            add(f"{line['shape']} speedup", line["speedup"], GOALS["qm9_speedup"])
            add(f"{line['shape']} speedup (compiled φ)", line.get("compiled_speedup"), GOALS["qm9_speedup"])
    for variant in ("nodewise", "chunked"):
        if variant in slopes and "bound_bytes_per_edge" in slopes:
            add(f"{variant} memory slope (bytes/edge)", slopes[variant]["bytes_per_edge"],
                slopes["bound_bytes_per_edge"], higher=False)
    for m in models:
        if m.get("model", "").startswith("modelnet") and m.get("train_speedup") is not None:
            add(f"{m['model']} training throughput ratio", m["train_speedup"], GOALS["model_speedup"])
            add(f"{m['model']} training throughput ratio (compiled φ)", m.get("compiled_train_speedup"),
                GOALS["model_speedup"])
            add(f"{m['model']} training ratio, paired rounds", m.get("paired_train_speedup"),
                GOALS["model_speedup"])
            add(f"{m['model']} training ratio, paired rounds (compiled φ)",
                m.get("paired_compiled_train_speedup"), GOALS["model_speedup"])
    return checks


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def format_table(lines: list[dict]) -> str:
    """Markdown table of the per-shape summary."""
    head = ("| shape | N | E | C | ref s | nodewise s | compiled s | chunked s | analytic s | speedup | "
            "compiled speedup | ref MB | "
            "nodewise MB | chunked MB | analytic MB | mem ratio | chunked mem ratio | φ share | "
            "contraction speedup | GFLOP/s |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for ln in lines:
        rows.append("| " + " | ".join([
            ln["shape"], str(ln["nodes"]), str(ln["edges"]), str(ln["c_in"]),
            _fmt(ln["reference_s"], ".3f"), _fmt(ln["nodewise_s"], ".3f"), _fmt(ln.get("compiled_s"), ".3f"),
            _fmt(ln.get("chunked_s"), ".3f"), _fmt(ln["analytic_s"], ".3f"), _fmt(ln["speedup"], ".1f") + "×",
            _fmt(ln.get("compiled_speedup"), ".1f") + "×", _fmt(ln["reference_mb"], ".0f"),
            _fmt(ln["nodewise_mb"], ".0f"), _fmt(ln.get("chunked_mb"), ".0f"), _fmt(ln["analytic_mb"], ".0f"),
            _fmt(ln["memory_ratio"], ".1f") + "×", _fmt(ln.get("chunked_memory_ratio"), ".1f") + "×",
            _fmt(ln.get("phi_share"), ".0%"), _fmt(ln.get("contraction_speedup"), ".1f") + "×",
            _fmt(ln.get("contraction_gflops"), ".1f")]) + " |")
    return "\n".join(rows)


def plot(rows: list[dict], path: Path) -> None:
    """Step time and peak memory vs number of edges, one colour per variant (log–log)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = dict(reference="tab:red", nodewise="tab:blue", compiled="tab:cyan", chunked="tab:purple",
                   analytic="tab:green")
    families = {"qm9": ("qm9", None, "s"), "modelnet C=32": ("modelnet", 32, "D"),
                "modelnet C=64": ("modelnet", 64, "o"), "sweep": ("sweep", None, "^")}
    for variant, colour in colours.items():
        for family, (prefix, channels, marker) in families.items():
            pts = sorted((r["edges"], r["step_s"], memory_mb(r)) for r in rows
                         if r["variant"] == variant and r["shape"].startswith(prefix) and "step_s" in r
                         and channels in (None, r["c_in"]))
            if not pts:
                continue
            e, t, m = zip(*pts, strict=True)
            style = "-" if family == "sweep" else ""
            label = f"{variant} ({family})"
            axes[0].plot(e, t, style + marker, color=colour, label=label, alpha=0.8)
            axes[1].plot(e, np.maximum(m, 1e-1), style + marker, color=colour, label=label, alpha=0.8)
    labels = ("train step (fwd+bwd) [s]", "peak tensor memory of a step [MB]")
    for ax, ylabel in zip(axes, labels, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("edges E")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=1)
    fig.suptitle("Implicit point conv: per-edge reference vs node-wise (one pass, compiled φ, chunked) "
                 "vs escnn analytic")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_models(models: list[dict]) -> str:
    """Markdown table of whole-model throughput (graphs/s), node-wise vs reference.

    *loader s/batch*: the per-item work the data-loader workers do for a batch (the ModelNet point
    hierarchy), outside the timed step; ``—`` where the model does it all in the step. *paired ×*:
    median over interleaved rounds of the per-round training ratio (node-wise / compiled).
    """
    head = ("| model | batch | loader s/batch | reference train/s | nodewise train/s | train × | "
            "compiled train/s | train × | reference infer/s | nodewise infer/s | infer × | "
            "compiled infer/s | infer × | ref MB | nodewise MB | mem ratio | paired × |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in models:
        if "skip" in m:
            rows.append(f"| {m['model']} | skipped: {m['skip']} |" + " |" * (head.count("|") - 3))
            continue
        ref, nw, co = m["reference"], m["nodewise"], m.get("compiled") or {}
        rows.append("| " + " | ".join([
            m["model"], f"{ref['graphs']}×{ref['points_per_graph']}",
            _fmt(nw.get("loader_transform_s") or None, ".3f"), f"{ref['train_graphs_per_s']:.2f}",
            f"{nw['train_graphs_per_s']:.2f}",
            f"{m['train_speedup']:.2f}×", _fmt(co.get("train_graphs_per_s"), ".2f"),
            _fmt(m.get("compiled_train_speedup"), ".2f") + "×", f"{ref['infer_graphs_per_s']:.2f}",
            f"{nw['infer_graphs_per_s']:.2f}", f"{m['infer_speedup']:.2f}×",
            _fmt(co.get("infer_graphs_per_s"), ".2f"), _fmt(m.get("compiled_infer_speedup"), ".2f") + "×",
            _fmt(memory_mb(ref, "train_"), ".0f"), _fmt(memory_mb(nw, "train_"), ".0f"),
            f"{m['memory_ratio']:.1f}×",
            f"{_fmt(m.get('paired_train_speedup'), '.2f')}× / "
            f"{_fmt(m.get('paired_compiled_train_speedup'), '.2f')}×",
        ]) + " |")
    return "\n".join(rows)


def markdown(report: dict) -> str:
    """The results section of ``experiments/bench/README.md`` from a bench JSON report."""
    parts = [format_table(report["summary"])]
    slopes = report.get("memory_slope", {})
    if "nodewise" in slopes:
        per_variant = ", ".join(f"{v} **{slopes[v]['bytes_per_edge']:.0f} B/edge**"
                                for v in ("reference", "nodewise", "compiled", "chunked", "analytic")
                                if v in slopes)
        parts.append(f"Memory slope over the sweep (least squares, tensor peak MB vs E): {per_variant}; "
                     f"(H + C_in)·4 = {slopes['bound_bytes_per_edge']:.0f} B/edge "
                     f"(H = {slopes['hidden']}, C_in = {slopes['c_in']}).")
    if report.get("models"):
        parts.append(format_models(report["models"]))
    parts.append("\n".join(
        f"- {g['goal']}: {g['value']:.2f} (goal {'≤' if 'slope' in g['goal'] else '≥'} {g['target']:g}) "
        f"→ **{'met' if g['met'] else 'not met'}**" for g in report["goals"]))
    return "\n\n".join(parts)


if __name__ == "__main__":
    import json
    import sys
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
