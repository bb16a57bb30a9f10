"""Smoke test of the benchmark harness (``python -m steerable.bench --quick``) on tiny shapes."""

from __future__ import annotations

import json

import pytest

from steerable.bench.__main__ import main
from steerable.bench.measure import timed_repeats
from steerable.bench.report import format_table, memory_slopes, summarise
from steerable.testing import outputs_and_gradients_by_path

ROW_FIELDS = {"shape", "variant", "nodes", "edges", "c_in", "c_out", "step_s", "peak_mb", "tensor_peak_mb",
              "memory_method", "threads"}


@pytest.mark.slow  # 9 s: the fast suite tests the bench's parts (summary, budget, errors) one by one
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


def test_layer_rows_are_on_disk_before_the_models_are_measured(tmp_path, monkeypatch):
    """A run stopped while it measures the models (a time limit) keeps its layer rows."""
    import steerable.bench.__main__ as bench

    out = tmp_path / "bench.json"

    def stopped(args):
        data = json.loads(out.read_text())
        assert data["complete"] is False and data["models"] == []
        assert [r["variant"] for r in data["rows"]] == ["nodewise"] and "error" not in data["rows"][0]
        raise KeyboardInterrupt  # what a SIGTERM at the stage's limit amounts to

    monkeypatch.setattr(bench, "run_models", stopped)
    with pytest.raises(KeyboardInterrupt):
        main(["--quick", "--inprocess", "--threads", "1", "--variants", "nodewise", "--only", "sweep_k2",
              "--out", str(out)])
    assert json.loads(out.read_text())["rows"][0]["shape"] == "sweep_k2"


def test_summary_ratios_and_slope_from_synthetic_rows():
    rows = []
    for k, edges in ((4, 400), (8, 800)):
        for variant, seconds, mb in (("reference", 2.0, 10 * k), ("nodewise", 0.5, k), ("compiled", 0.4, k)):
            rows.append(dict(shape=f"sweep_k{k}", variant=variant, nodes=100, edges=edges, c_in=16, c_out=16,
                             step_s=seconds, peak_mb=float(mb), hidden=32))
    lines = summarise(rows)
    assert lines[0]["speedup"] == pytest.approx(4.0) and lines[0]["memory_ratio"] == pytest.approx(10.0)
    assert lines[0]["compiled_speedup"] == pytest.approx(5.0)
    slopes = memory_slopes(rows)
    assert slopes["nodewise"]["bytes_per_edge"] == pytest.approx(4 * 2**20 / 400)
    assert slopes["bound_bytes_per_edge"] == 4 * (32 + 16)
    # chunked rows are fitted only where E ≥ 2·chunk_edges (smaller graphs run in one piece)
    chunked = [dict(r, variant="chunked", chunk_edges=300, peak_mb=m)
               for r, m in zip(rows[1::3], (7.0, 5.0))] + [dict(rows[4], shape="sweep_k16", variant="chunked",
                                                                 edges=1600, chunk_edges=300, peak_mb=5.5)]
    chunked_slope = memory_slopes(rows + chunked)["chunked"]["bytes_per_edge"]
    assert chunked_slope == pytest.approx(0.5 * 2**20 / 800)
    # tensor peaks (profiler) take precedence over RSS peaks where measured
    exact = [dict(r, tensor_peak_mb=r["peak_mb"] / 2) for r in rows]
    assert memory_slopes(exact)["nodewise"]["bytes_per_edge"] == pytest.approx(2 * 2**20 / 400)
    assert memory_slopes(exact, rss=True)["nodewise"]["bytes_per_edge"] == pytest.approx(4 * 2**20 / 400)
    assert "sweep_k4" in format_table(lines)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_request_without_a_gpu_is_one_clear_error():
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["--quick", "--device", "cuda", "--no-models"])


def test_timed_repeats_respects_budget():
    assert timed_repeats(0.01, 5, 10.0) == 5
    assert timed_repeats(30.0, 5, 10.0) == 1
    assert timed_repeats(2.0, 5, 10.0) == 5 and timed_repeats(3.0, 5, 10.0) == 3


@pytest.mark.slow
def test_quick_bench_in_subprocesses_with_analytic_and_models(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--threads", "1", "--only", "modelnet", "--out", str(out)])
    data = json.loads(out.read_text())
    variants = ["reference", "nodewise", "compiled", "chunked", "analytic"]
    assert [r["variant"] for r in data["rows"] if "error" not in r] == variants
    assert all(r["memory_method"].startswith("VmHWM-reset") for r in data["rows"])
    assert {m["model"] for m in data["models"]} == {"qm9", "modelnet", "modelnet_graphs_in_step"}
    assert all(m["compiled_train_speedup"] > 0 for m in data["models"])
    loader = {m["model"]: m["nodewise"]["loader_transform_s"] for m in data["models"]}
    assert loader["modelnet"] > 0 and loader["modelnet_graphs_in_step"] == loader["qm9"] == 0
    # the interleaved job ran every path in one process, one round each
    assert all(m["paired_rounds"] == 1 and m["paired_train_speedup"] > 0 for m in data["models"])
    pairs = [r for r in data["model_rows"] if r.get("kind") == "model_pair"]
    assert all(set(r["step_s"]) == {"reference", "nodewise", "compiled"} for r in pairs) and len(pairs) == 3
    assert next(r for r in data["rows"] if r["variant"] == "compiled")["first_step_s"] > 0


@pytest.mark.parametrize("aggr", ["mean", "add"])
def test_nodewise_matches_reference_on_every_contraction_layout(aggr):
    """The bench compares the two paths; they must compute the same thing on fixed/padded/scatter layouts."""
    import torch

    from steerable.geometry import knn_graph, radius_graph
    from steerable.groups import build_group
    from steerable.nn.contraction import segment_layout
    from steerable.nn.point_conv import ImplicitPointConv

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conv = ImplicitPointConv(build_group("so3"), "3x0e+2x1o", "2x0e+1x1o", channels=2, aggr=aggr).double()
    n = 40
    pos = 1.5 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    radius = radius_graph(pos, 1.5)
    shuffled = radius[:, torch.randperm(radius.shape[1], generator=gen)]
    star = torch.stack([torch.arange(1, n), torch.zeros(n - 1, dtype=torch.long)])
    graphs = [("fixed", knn_graph(pos, 5)), ("padded", radius), ("padded", shuffled), ("scatter", star)]
    for mode, edge_index in graphs:
        assert segment_layout(edge_index[1], n).mode == mode
        x = torch.randn(n, conv.in_type.size, generator=gen, dtype=torch.float64, requires_grad=True)
        weights = torch.linspace(-1, 1, n * conv.out_type.size, dtype=torch.float64).view(n, -1)
        results = outputs_and_gradients_by_path(conv, x, pos, edge_index, weights)
        for a, b in zip(results["reference"], results["nodewise"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_model_jobs_select_models_paths_and_the_paired_job():
    from steerable.bench.models import model_jobs

    jobs = model_jobs(True, 1, 1, 1.0, models=["qm9"], paths=("reference", "nodewise"), paired=False)
    assert [(j["model"], j["path"]) for j in jobs] == [("qm9", "reference"), ("qm9", "nodewise")]
    paired = model_jobs(True, 1, 1, 1.0, models=["modelnet"], paths=("reference", "nodewise"))
    assert paired[-1]["kind"] == "model_pair" and paired[-1]["paths"] == ["reference", "nodewise"]
    assert all(j["kind"] == "model" for j in model_jobs(True, 1, 1, 1.0, models=["qm9"], paths=("nodewise",)))
    with pytest.raises(ValueError, match="unknown models/paths"):
        model_jobs(True, 1, 1, 1.0, models=["qm10"])
