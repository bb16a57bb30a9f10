"""The one-command GPU check (``steerable.gpu_check``): its parts here, and the whole check on the CPU.

The end-to-end test runs ``make gpu-check DEVICE=cpu`` (tiny sizes): the same script and stages as on
the GPU machine, including the ``cuda``-marked tests with ``STEERABLE_TEST_DEVICE=cpu``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steerable.gpu_check.__main__ import main, stage_limit
from steerable.gpu_check.report import markdown, summarise
from steerable.gpu_check.stages import (
    FLOOR_S,
    REPO,
    STAGES,
    Context,
    StageResult,
    bench_metrics,
    hms,
    parse_junit,
    time_to_target,
    val_curve,
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="3" time="2.5"><testcase classname="tests.test_cuda" name="test_a" time="1.0"/>
<testcase classname="tests.test_cuda" name="test_b" time="0.5"><failure message="boom">trace</failure>
</testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0.0"><skipped message="no CUDA"/></testcase>
</testsuite></testsuites>"""


def _bench_report() -> dict:
    """A bench JSON report in the shape ``python -m steerable.bench`` writes (two shapes, two models)."""
    summary = [dict(shape=name, nodes=8192, edges=8192 * k, c_in=64, reference_s=1.0, nodewise_s=0.05,
                    speedup=20.0, reference_mb=8000.0, nodewise_mb=500.0, memory_ratio=16.0,
                    contraction_gflops=5000.0, phi_share=0.5)
               for name, k in (("modelnet_k32_c64", 32), ("modelnet_k64_c64", 64))]

    def row(graphs: int, rate: float) -> dict:
        return dict(graphs=graphs, points_per_graph=1024, train_graphs_per_s=rate,
                    infer_graphs_per_s=3 * rate, train_peak_mb=100.0)

    models = [dict(model="qm9", reference=row(32, 100.0), nodewise=row(32, 200.0), train_speedup=2.0,
                   infer_speedup=2.5, memory_ratio=1.4, paired_train_speedup=2.1),
              dict(model="modelnet", reference=row(8, 10.0), nodewise=row(8, 60.0), train_speedup=6.0,
                   infer_speedup=4.0, memory_ratio=5.0)]
    return dict(dense_matmul_gflops=40000.0, summary=summary, models=models,
                goals=[dict(goal="modelnet_k32_c64 speedup", value=20.0, target=20.0, met=True)],
                rows=[dict(shape="modelnet_k32_c64", variant="nodewise", step_s=0.05)],
                model_rows=[dict(model="qm9", path="compiled", error="RuntimeError: no compiler")])


def test_max_time_string():
    assert hms(150) == "00:00:02:30"
    assert hms(3 * 3600 + 5) == "00:03:00:05"
    assert hms(0.2) == "00:00:00:01"


def test_junit_counts_and_outcomes(tmp_path):
    path = tmp_path / "tests.xml"
    path.write_text(JUNIT)
    parsed = parse_junit(path)
    assert {k: parsed[k] for k in ("tests", "failures", "errors", "skipped")} == dict(
        tests=3, failures=1, errors=0, skipped=1)
    outcomes = {case["test"]: case["outcome"] for case in parsed["cases"]}
    assert outcomes == {"test_a": "passed", "test_b": "failure", "test_c": "skipped"}
    assert parsed["cases"][1]["message"] == "boom"


def test_bench_metrics_summary_and_markdown():
    metrics = bench_metrics(_bench_report())
    assert set(metrics["shapes"]) == {"modelnet_k32_c64", "modelnet_k64_c64"}
    assert metrics["models"]["modelnet"]["train_graphs_per_s"] == {"reference": 10.0, "nodewise": 60.0}
    assert metrics["errors"] == ["qm9/compiled: RuntimeError: no compiler"]
    stages = {"machine": StageResult("machine", "passed", metrics={"gpu": "NVIDIA H200", "matmul_fp32_gflops":
                                                                   50000.0, "versions": {"torch": "2.11"}}),
              "bench": StageResult("bench", "passed", metrics=metrics),
              "nbody": StageResult("nbody", "passed", metrics={"test/mse": 0.01, "train/epochs_done": 40.0,
                                                               "max_time_s": 150}),
              "qm9": StageResult("qm9", error="not run: rdkit and qm9pack not importable here")}
    summary = summarise({name: r.to_dict() for name, r in stages.items()})
    assert summary["goal_shapes"]["modelnet_k64_c64"]["contraction_vs_matmul"] == pytest.approx(0.1)
    assert summary["modelnet_model_clouds_per_s"]["train"]["nodewise"] == 60.0
    assert summary["qm9_like_molecules_per_s"]["infer"]["reference"] == 300.0
    assert summary["nbody_test_mse"] == 0.01 and summary["modelnet_train_clouds_per_s"] is None
    assert summary["qm9"].startswith("not run: rdkit")
    report = dict(machine=stages["machine"].metrics, summary=summary, command="python -m steerable.gpu_check",
                  started="now", wall_s=400.0, budget_s=510.0, device="cuda", size="full", passed=False,
                  stages=[r.to_dict() for r in stages.values()], notes=["a note"])
    text = markdown(report)
    assert text.startswith("# GPU check: NVIDIA H200")
    row = "| modelnet_k64_c64 | 8192 | 524288 | 20.0× | 1.0000 / 0.0500 | 8000 / 500 | 16.0× | 5000 | 10.0% |"
    assert row in text
    assert "60.0 / 10.0 clouds/s" in text and "200.0 / 100.0 molecules/s" in text
    assert "| QM9 training | not run: rdkit" in text and "- a note" in text


def test_nbody_validation_curve_and_time_to_target(tmp_path):
    # Lightning's CSV rows: validation and training-epoch metrics of an epoch land in separate rows
    rows = ["epoch,step,train/loop_s,train/mse,val/mse",
            "0,59,,,0.02", "0,59,3.5,0.03,", "1,119,,,0.004", "1,119,7.0,0.01,", "2,179,,,0.005",
            "2,179,10.5,0.005,", "3,239,,,0.003"]  # epoch 3 was cut by max_time: no loop time
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    curve = val_curve(path)
    assert curve == [{"epoch": 0, "loop_s": 3.5, "val_mse": 0.02},
                     {"epoch": 1, "loop_s": 7.0, "val_mse": 0.004},
                     {"epoch": 2, "loop_s": 10.5, "val_mse": 0.005}]
    assert time_to_target(curve, 0.0043) == {"epoch": 1, "loop_s": 7.0, "val_mse": 0.004}
    assert time_to_target(curve, 0.001) is None
    summary = summarise({"nbody": StageResult("nbody", "passed", metrics={
        "target_mse": 0.0043, "val_to_target": time_to_target(curve, 0.0043)}).to_dict()})
    report = dict(machine={}, summary={**summary, "goal_shapes": {}}, command="c", started="now", wall_s=1.0,
                  budget_s=2.0, device="cuda", size="full", passed=True, stages=[], notes=[])
    text = markdown(report)
    assert "| N-body, validation MSE ≤ 0.0043 | after 7 s of training (epoch 1, val MSE 0.004;" in text


def test_a_stage_never_takes_the_time_later_stages_need():
    later = ["nbody", "modelnet", "qm9"]
    need = sum(FLOOR_S[s] for s in later)
    assert stage_limit("bench", 180, remaining=1000, later=later) == 180
    assert stage_limit("bench", 180, remaining=need + 50, later=later) == 50
    assert stage_limit("qm9", 10, remaining=3, later=[]) == 3


def test_a_hanging_stage_is_stopped_with_its_children(tmp_path):
    ctx = Context(device="cpu", size="tiny", out=tmp_path, work=tmp_path)
    result = StageResult("hang")
    start = time.perf_counter()
    code = ctx.run(result, ["bash", "-c", "sleep 120 & echo started; wait"], limit_s=1.0)
    assert code is None and result.status == "timeout" and time.perf_counter() - start < 20
    assert "started" in Path(result.log).read_text()
    assert "sleep 120" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    failed = StageResult("fails")
    assert ctx.run(failed, [sys.executable, "-c", "raise SystemExit('bad input')"], limit_s=30) == 1
    assert failed.status == "failed" and "bad input" in failed.error


def test_generated_clouds_read_as_modelnet40(tmp_path):
    from steerable.data.modelnet_io import load_split
    from steerable.gpu_check.clouds import write_hdf5_dataset

    root = write_hdf5_dataset(tmp_path / "mn40", n_train=80, n_test=40, points=64)
    train, test = load_split(root, "train"), load_split(root, "test")
    assert train.points.shape == (80, 64, 3) and test.points.shape == (40, 64, 3)
    assert sorted(set(train.labels.tolist())) == list(range(40)) and train.class_names[0] == "airplane"
    assert train.points.isfinite().all() and 0.1 < float(train.points.abs().max()) < 2


def test_report_of_a_run_without_device_stages(tmp_path):
    assert main(["--device", "cpu", "--out", str(tmp_path), "--stages", "qm9"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and [s["name"] for s in report["stages"]] == ["qm9"]
    assert report["stages"][0]["status"] == "skipped" and report["stages"][0]["error"].startswith("not run")
    assert (tmp_path / "report.md").read_text().startswith("# GPU check: CPU")
    assert (tmp_path / "stages.log").is_file()


@pytest.mark.slow
def test_make_gpu_check_on_the_cpu(tmp_path):
    """``make gpu-check DEVICE=cpu``: every stage passes and the numbers are there and plausible."""
    out = tmp_path / "report"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", "DEVICE=cpu", f"OUT={out}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((out / "report.json").read_text())
    status = {s["name"]: s["status"] for s in report["stages"]}
    errors = {s["name"]: s["error"] for s in report["stages"] if s["error"]}
    assert proc.returncode == 0, (status, errors, proc.stdout[-2000:], proc.stderr[-2000:])
    assert report["passed"] and list(status) == list(STAGES)
    assert status == {**{s: "passed" for s in STAGES}, "qm9": "skipped"}, errors
    assert report["wall_s"] < report["budget_s"] and report["size"] == "tiny"
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "nbody_metrics.csv", "report.json",
                                                     "report.md", "stages.log"]
    stages = {s["name"]: s for s in report["stages"]}
    tests = stages["tests"]["metrics"]
    assert tests["tests"] >= 9 and tests["failures"] == tests["errors"] == tests["skipped"] == 0
    summary = report["summary"]
    assert summary["matmul_fp32_gflops"] > 0
    (shape, line), = summary["goal_shapes"].items()
    assert shape == "modelnet_k8_c32" and line["speedup_vs_per_edge"] > 0 and line["peak_mb"]["nodewise"] > 0
    rates = [summary["modelnet_model_clouds_per_s"][kind][p] for kind in ("train", "infer")
             for p in ("reference", "nodewise")]
    assert all(rate > 0 for rate in rates), rates
    assert 0 < summary["nbody_test_mse"] < 10 and math.isfinite(summary["nbody_test_mse"])
    assert summary["nbody_epochs"] >= 1 and summary["nbody_peak_memory_mb"] > 0
    curve = stages["nbody"]["metrics"]["val_curve"]
    assert [p["epoch"] for p in curve] == list(range(len(curve))) and len(curve) >= 1
    assert min(p["val_mse"] for p in curve) == pytest.approx(summary["nbody_val_mse_best"])
    assert summary["modelnet_train_clouds_per_s"] > 0 and 0 <= summary["modelnet_test_acc"] <= 1
    text = (out / "report.md").read_text()
    assert "all stages passed" in text and "clouds/s" in text and "test MSE" in text
