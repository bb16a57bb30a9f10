"""Smoke test of the benchmark harness (``python -m steerable.bench --quick``) on tiny shapes."""

from __future__ import annotations

import json

import pytest

from steerable.bench.__main__ import main
from steerable.bench.report import format_table, memory_slopes, summarise
from steerable.bench.worker import timed_repeats

ROW_FIELDS = {"shape", "variant", "nodes", "edges", "c_in", "c_out", "step_s", "peak_mb", "memory_method",
              "threads"}


def test_quick_bench_writes_json_table_and_plot(tmp_path):
    out = tmp_path / "bench.json"
    # In-process and one thread keeps this fast; the real run uses one subprocess per measurement.
    report = main(["--quick", "--inprocess", "--threads", "1", "--no-models", "--variants",
                   "reference,nodewise", "--only", "sweep_k2,sweep_k4", "--out", str(out)])
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    keys = {"machine", "dense_matmul_gflops", "rows", "summary", "memory_slope", "goals", "kernel"}
    assert keys <= set(data)
    assert data["machine"]["torch"] and data["dense_matmul_gflops"] > 0
    rows = [r for r in data["rows"] if "error" not in r]
    assert len(rows) == len(data["rows"]) == 4, [r.get("error") for r in data["rows"]]
    for row in rows:
        assert ROW_FIELDS <= set(row), row
        assert row["step_s"] > 0 and row["edges"] > 0
    nodewise = [r for r in rows if r["variant"] == "nodewise"]
    assert all({"phi_s", "contraction_gflops", "hidden"} <= set(r) for r in nodewise)
    line = next(s for s in data["summary"] if s["shape"] == "sweep_k4")
    assert line["speedup"] > 0 and line["memory_ratio"] is not None
    assert {"reference", "nodewise", "bound_bytes_per_edge"} <= set(data["memory_slope"])
    assert report["summary"] == data["summary"]


def test_summary_ratios_and_slope_from_synthetic_rows():
    rows = []
    for k, edges in ((4, 400), (8, 800)):
        for variant, seconds, mb in (("reference", 2.0, 10 * k), ("nodewise", 0.5, k)):
            rows.append(dict(shape=f"sweep_k{k}", variant=variant, nodes=100, edges=edges, c_in=16, c_out=16,
                             step_s=seconds, peak_mb=float(mb), hidden=32))
    lines = summarise(rows)
    assert lines[0]["speedup"] == pytest.approx(4.0) and lines[0]["memory_ratio"] == pytest.approx(10.0)
    slopes = memory_slopes(rows)
    assert slopes["nodewise"]["bytes_per_edge"] == pytest.approx(4 * 2**20 / 400)
    assert slopes["bound_bytes_per_edge"] == 4 * (32 + 16)
    assert "sweep_k4" in format_table(lines)


def test_timed_repeats_respects_budget():
    assert timed_repeats(0.01, 5, 10.0) == 5
    assert timed_repeats(30.0, 5, 10.0) == 1
    assert timed_repeats(2.0, 5, 10.0) == 5 and timed_repeats(3.0, 5, 10.0) == 3


@pytest.mark.slow
def test_quick_bench_in_subprocesses_with_analytic_and_models(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--threads", "1", "--only", "modelnet", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["rows"] if "error" not in r] == ["reference", "nodewise", "analytic"]
    assert all(r["memory_method"] == "VmHWM-reset" for r in data["rows"])
    assert {m["model"] for m in data["models"]} == {"qm9", "modelnet"}
