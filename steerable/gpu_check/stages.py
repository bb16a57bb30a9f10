"""The stages of the GPU check: the command each runs, its time limit, and what is read back.

Every stage runs as a subprocess in its own process group, with its output in ``<work>/<stage>.log``;
at its limit the group gets SIGTERM, then SIGKILL 15 s later, so one hang costs only that stage.
Sizes: ``full`` is sized for one H200 within :data:`FULL_BUDGET_S`; ``tiny`` for a CPU in a few minutes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steerable.metrics_csv import read_metrics

REPO = Path(__file__).resolve().parents[2]
MARK = "RESULT "
STAGES = ("machine", "tests", "bench", "nbody", "modelnet", "qm9")
FULL_BUDGET_S = 510.0  # 8.5 min of the 10 a command may run; the wheel install comes before it
TINY_BUDGET_S = 420.0
# Upper limit of each stage (s); a stage also never takes time the later ones need (FLOOR_S).
LIMIT_S = {"full": {"machine": 90, "tests": 150, "bench": 200, "nbody": 240, "modelnet": 150, "qm9": 10},
           "tiny": {"machine": 60, "tests": 150, "bench": 150, "nbody": 120, "modelnet": 120, "qm9": 10}}
FLOOR_S = {"machine": 20, "tests": 30, "bench": 30, "nbody": 60, "modelnet": 45, "qm9": 0}
# Training seconds (Lightning's max_time) of the fixed-time runs; the rest of a stage's limit is
# start-up, data generation and the test of the best checkpoint.
FIT_S = {"full": {"nbody": 150, "modelnet": 60}, "tiny": {"nbody": 15, "modelnet": 20}}
FIT_OVERHEAD_S = {"full": {"nbody": 75, "modelnet": 75}, "tiny": {"nbody": 60, "modelnet": 60}}
GOAL_SHAPES = ("modelnet_k32_c64", "modelnet_k64_c64")  # ModelNet scale: k >= 32, 64 channels
# whole models of the bench; tiny runs one (building the QM9 model alone takes ~10 s on a busy CPU)
BENCH_MODELS = {"full": ("qm9", "modelnet"), "tiny": ("modelnet",)}
BENCH_PATHS = ("reference", "nodewise")
# SEGNN's published N-body test MSE: the GPU time to reach it is read off the validation curve
NBODY_TARGET_MSE = 0.0043
TEST_COUNTS = ("tests", "failures", "errors", "skipped")


@dataclass
class StageResult:
    """What one stage did: ``status`` is passed | failed | timeout | skipped."""

    name: str
    status: str = "skipped"
    wall_s: float = 0.0
    limit_s: float | None = None
    returncode: int | None = None
    command: list[str] | None = None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    log: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    """Settings shared by the stages.

    Attributes:
        device: ``cuda``, ``cuda:<i>`` or ``cpu``.
        size: ``full`` or ``tiny``.
        out: report directory (``report.json``, ``report.md``, ``bench.json``, ``stages.log``).
        work: scratch directory (data, run dirs, logs).
        python: interpreter of the stages.
        fit_s: training seconds of ``nbody`` and ``modelnet``.
    """

    device: str
    size: str
    out: Path
    work: Path
    python: str = sys.executable
    fit_s: dict[str, float] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def cpus(self) -> int:
        return os.cpu_count() or 1

    def env(self, **extra: str) -> dict[str, str]:
        """The stages' environment: this one, the repo first on ``PYTHONPATH``, unbuffered, no W&B."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
               "HYDRA_FULL_ERROR": "1"}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.pop("WANDB_API_KEY", None)
        return {**env, **extra}

    def run(self, result: StageResult, cmd: list[str], limit_s: float, **env: str) -> int | None:
        """Run ``cmd`` for ``result`` (its command, log and time accumulate); the exit code, or None
        when it was stopped at ``limit_s``."""
        log = self.work / f"{result.name}.log"
        result.log, result.command = str(log), cmd
        with open(log, "a") as handle:
            handle.write(f"$ {shlex.join(cmd)}\n")
            handle.flush()
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                    env=self.env(**env), start_new_session=True)
            try:
                code = proc.wait(timeout=max(limit_s, 1.0))
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                code = None
            result.wall_s += time.perf_counter() - start
        result.returncode = code
        if code is None:
            result.status, result.error = "timeout", f"stopped at its limit of {limit_s:.0f} s"
        elif code != 0:
            result.status, result.error = "failed", f"exit code {code}: {log_tail(log, 6)}"
        return code


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM to the process group of ``proc`` (Lightning saves and exits), SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(path: Path | str, lines: int = 20) -> str:
    """The last ``lines`` non-empty lines of a log, joined with `` | `` (for one-line errors)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def hms(seconds: float) -> str:
    """Lightning's ``max_time`` string ``DD:HH:MM:SS`` for ``seconds`` (at least 1 s)."""
    s = max(1, int(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _result_line(path: Path | str) -> dict | None:
    """The JSON of the last ``RESULT`` line in a log, if any."""
    found = None
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(MARK):
            found = json.loads(line[len(MARK):])
    return found


# ---------------------------------------------------------------------------------------------- stages


def stage_machine(ctx: Context, limit_s: float) -> StageResult:
    """Versions, the device, and the dense float32 matmul rate (``steerable.gpu_check.machine``)."""
    result = StageResult("machine", limit_s=limit_s)
    size = 8192 if ctx.size == "full" else 512
    code = ctx.run(result, [ctx.python, "-m", "steerable.gpu_check.machine", "--device", ctx.device,
                            "--matmul-size", str(size)], limit_s)
    if code == 0:
        info = _result_line(result.log)
        if info is None or not _finite(info.get("matmul_fp32_gflops")):
            result.status, result.error = "failed", "no RESULT line with a matmul rate"
        else:
            result.status, result.metrics = "passed", info
    return result


def parse_junit(path: Path) -> dict:
    """Counts (``tests``, ``failures``, ``errors``, ``skipped``), ``time_s`` and per-test outcomes."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in TEST_COUNTS}
    cases = []
    for case in root.iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        message = next((child.get("message", "") for child in case if child.tag != "system-out"), "")
        cases.append({"test": case.get("name"), "outcome": outcome, "time_s": float(case.get("time", 0)),
                      **({"message": message[:300]} if outcome != "passed" else {})})
    return {**counts, "time_s": sum(float(s.get("time", 0)) for s in suites), "cases": cases}


def stage_tests(ctx: Context, limit_s: float) -> StageResult:
    """``pytest -m cuda tests/test_cuda.py`` with ``STEERABLE_TEST_DEVICE`` set: all must pass, none skip."""
    result = StageResult("tests", limit_s=limit_s)
    junit = ctx.work / "tests.xml"
    cmd = [ctx.python, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    code = ctx.run(result, cmd, limit_s, STEERABLE_TEST_DEVICE=ctx.device,
                   STEERABLE_TEST_DATA_DIR=str(ctx.work / "tests_data"))
    if junit.is_file():
        result.metrics = parse_junit(junit)
    if code == 0:
        m = result.metrics
        if not m or m["tests"] == 0 or m["failures"] or m["errors"] or m["skipped"]:
            result.status = "failed"
            result.error = f"expected every test to run and pass: { {k: m.get(k) for k in TEST_COUNTS} }"
        else:
            result.status = "passed"
    return result


def bench_command(ctx: Context, out: Path, limit_s: float) -> list[str]:
    """``python -m steerable.bench`` on the goal shapes and the whole models, at ``ctx.size``."""
    threads = str(min(8, ctx.cpus)) if ctx.size == "full" else "1"
    # no paired rounds: they steady ratios on a shared CPU; a GPU of its own needs none
    models = ["--models", ",".join(BENCH_MODELS[ctx.size]), "--model-paths", ",".join(BENCH_PATHS),
              "--no-paired"]
    common = ["--device", ctx.device, "--out", str(out), "--plot", str(ctx.work / "bench.png"),
              "--threads", threads, "--variants", ",".join(BENCH_PATHS)]
    if ctx.size == "full":
        # 8 clouds × 1,024 points (the reference path's kernels at k = 64: 2 × 8.6 GB, fine on a GPU);
        # 8 jobs of ~15 s (interpreter, CUDA context, steps, profiler), none longer than 60 s
        return [ctx.python, "-m", "steerable.bench", *common, "--only", ",".join(GOAL_SHAPES),
                "--clouds", "8", "--repeats", "10", "--budget-s", "5",
                "--timeout-s", str(int(min(60, limit_s))), *models]
    # tiny: the quick ModelNet-like shape, jobs in this process (one interpreter start instead of ten)
    return [ctx.python, "-m", "steerable.bench", *common, "--quick", "--only", "modelnet_k8_c32",
            "--inprocess", *models]


def bench_metrics(report: dict) -> dict:
    """Per goal shape and whole model: times, speed-ups vs per-edge, peak memory, contraction GFLOP/s."""
    shapes = {}
    for line in report.get("summary", []):
        shapes[line["shape"]] = {k: line.get(k) for k in (
            "nodes", "edges", "c_in", "reference_s", "nodewise_s", "speedup", "reference_mb", "nodewise_mb",
            "memory_ratio", "contraction_gflops", "phi_share")}
    models = {}
    for m in report.get("models", []):
        if "skip" in m:
            models[m["model"]] = {"skip": m["skip"]}
            continue
        ref, nw = m["reference"], m["nodewise"]
        models[m["model"]] = {
            "batch": f"{ref['graphs']}×{ref['points_per_graph']}",
            **{key: {"reference": ref.get(key), "nodewise": nw.get(key)}
               for key in ("train_graphs_per_s", "infer_graphs_per_s", "train_peak_mb")},
            "train_speedup": m["train_speedup"], "infer_speedup": m["infer_speedup"],
            "paired_train_speedup": m.get("paired_train_speedup"), "memory_ratio": m["memory_ratio"]}
    errors = [f"{r.get('shape', r.get('model'))}/{r.get('variant', r.get('path'))}: {r['error'][-300:]}"
              for r in report.get("rows", []) + report.get("model_rows", []) if "error" in r]
    return {"dense_matmul_gflops": report.get("dense_matmul_gflops"), "shapes": shapes, "models": models,
            "goals": report.get("goals", []), "errors": errors, "complete": report.get("complete", True)}


def stage_bench(ctx: Context, limit_s: float) -> StageResult:
    """The bench's ModelNet goal shapes and whole models (QM9-like, ModelNet): node-wise vs per-edge."""
    result = StageResult("bench", limit_s=limit_s)
    out = ctx.out / "bench.json"
    out.unlink(missing_ok=True)
    code = ctx.run(result, bench_command(ctx, out, limit_s), limit_s)
    if out.is_file():  # written after the layer rows, then again after the models
        result.metrics = bench_metrics(json.loads(out.read_text()))
        if code is None and not result.metrics["complete"]:
            result.error += "; the layer rows are kept, the whole models were not measured"
    if code == 0:
        m = result.metrics
        if not m:
            result.status, result.error = "failed", f"no {out.name} written"
        elif m["errors"]:
            result.status = "failed"
            result.error = f"{len(m['errors'])} measurement(s) failed: {m['errors'][0]}"
        elif not m["shapes"] or any("skip" in m["models"].get(k, {"skip": ""})
                                    for k in BENCH_MODELS[ctx.size]):
            result.status, result.error = "failed", "shapes or models missing from the bench report"
        else:
            result.status = "passed"
    return result


def _train_command(ctx: Context, run_dir: Path, overrides: list[str]) -> list[str]:
    trainer = "gpu" if ctx.cuda else "cpu"
    device = [f"trainer.devices=[{ctx.device.split(':')[1]}]"] if ":" in ctx.device else []
    return [ctx.python, "-m", "steerable.gpu_check.train", f"trainer={trainer}", *device, "logger=csv",
            "callbacks=timed", "+callbacks.peak_memory._target_=steerable.gpu_check.train.PeakMemory",
            "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"hydra.run.dir={run_dir}", *overrides]


def _training_stage(ctx: Context, name: str, limit_s: float, overrides: list[str], required: tuple[str, ...],
                    prepare: Callable[[Path], None] | None = None) -> StageResult:
    """A ``steerable.train`` run of at most ``ctx.fit_s[name]`` s of training inside ``limit_s``."""
    result = StageResult(name, limit_s=limit_s)
    root = ctx.work / name
    fit_s = min(ctx.fit_s[name], limit_s - FIT_OVERHEAD_S[ctx.size][name])
    if fit_s < 5:
        result.error = f"{limit_s:.0f} s leave no time to train"
        return result
    start = time.perf_counter()
    if prepare is not None:
        prepare(root)
    result.wall_s = time.perf_counter() - start
    run_dir = root / "run"
    cmd = _train_command(ctx, run_dir, [f"trainer.max_time={hms(fit_s)}", *overrides])
    code = ctx.run(result, cmd, limit_s - result.wall_s, STEERABLE_ROOT=str(root))
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        result.metrics = {"max_time_s": fit_s, **json.loads(metrics_file.read_text())}
    if code == 0:
        missing = [k for k in required if not _finite(result.metrics.get(k))]
        result.status = "failed" if missing else "passed"
        if missing:
            result.error = f"metrics.json lacks finite {missing}"
    return result


def val_curve(metrics_csv: Path) -> list[dict]:
    """Per epoch of a run's ``metrics.csv``: ``epoch``, ``loop_s`` (training-loop seconds so far,
    validation excluded; ``train/loop_s``) and ``val_mse``, for the epochs that logged both."""
    series = read_metrics(metrics_csv)
    loop_s = dict(series.get("train/loop_s", []))
    return [{"epoch": int(x) - 1, "loop_s": loop_s[x], "val_mse": value}
            for x, value in sorted(series.get("val/mse", [])) if x in loop_s]


def time_to_target(curve: list[dict], target: float) -> dict | None:
    """The first epoch of ``curve`` whose validation MSE is at most ``target``, or None."""
    return next((point for point in curve if point["val_mse"] <= target), None)


def stage_nbody(ctx: Context, limit_s: float) -> StageResult:
    """``experiment=nbody`` for a fixed training time (full: the default 3,000 / 2,000 / 2,000 systems).

    Besides the run's final metrics: its validation curve and the training seconds to the first
    validation MSE ≤ :data:`NBODY_TARGET_MSE` (``val_to_target``); the curve is also copied to
    ``<out>/nbody_metrics.csv``."""
    overrides = ["experiment=nbody", "dataset.progress=false", f"dataset.gen_workers={min(8, ctx.cpus)}"]
    if ctx.size == "tiny":
        overrides += ["dataset=nbody_tiny", "trainer.max_epochs=2", "model.num_features=4",
                      "model.num_layers=2", "model.conv.channels=4", "model.conv.n_layers=2"]
    result = _training_stage(ctx, "nbody", limit_s, overrides,
                             ("test/mse", "val/mse_best", "train/samples_per_s", "train/peak_memory_mb"))
    metrics_csv = ctx.work / "nbody" / "run" / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        shutil.copyfile(metrics_csv, ctx.out / "nbody_metrics.csv")
        curve = val_curve(metrics_csv)
        result.metrics.update(val_curve=curve, target_mse=NBODY_TARGET_MSE,
                              val_to_target=time_to_target(curve, NBODY_TARGET_MSE))
    return result


MODELNET_SIZES = {"full": {"n_train": 2048, "n_test": 512, "points": 1024, "batch": 32, "epochs": 5},
                  "tiny": {"n_train": 80, "n_test": 40, "points": 256, "batch": 16, "epochs": 1}}


def stage_modelnet(ctx: Context, limit_s: float) -> StageResult:
    """ModelNet-40 training (SO(3), z/SO(3) protocol) on generated clouds in the HDF5 layout: clouds/s."""
    size = MODELNET_SIZES[ctx.size]
    data = ctx.work / "modelnet" / "modelnet40"

    def prepare(_: Path) -> None:
        from steerable.gpu_check.clouds import write_hdf5_dataset
        write_hdf5_dataset(data, size["n_train"], size["n_test"], size["points"])

    workers = max(1, min(12, ctx.cpus - 2)) if ctx.size == "full" else 0
    overrides = ["experiment=modelnet40_so3", f"dataset.root={data}", "dataset.format=hdf5",
                 f"dataset.num_points={size['points']}", f"dataset.batch_size={size['batch']}",
                 f"dataset.num_workers={workers}", f"dataset.pin_memory={str(ctx.cuda).lower()}",
                 f"trainer.max_epochs={size['epochs']}", "task.tta_samples=1"]
    if ctx.size == "tiny":
        overrides += ["model.stages=[{channels:4,ratio:1.0,k:8},{channels:4,ratio:0.25,k:8}]",
                      "model.conv.channels=4", "model.conv.n_layers=2", "model.head_hidden=16"]
    result = _training_stage(ctx, "modelnet", limit_s, overrides,
                             ("train/samples_per_s", "test/acc", "train/peak_memory_mb"), prepare)
    result.metrics["dataset"] = {**size, "num_workers": workers, "format": "hdf5 (generated clouds)"}
    return result


def stage_qm9(ctx: Context, limit_s: float) -> StageResult:
    """QM9 training is not part of the check; says why (and whether RDKit and qm9pack are importable)."""
    result = StageResult("qm9", limit_s=limit_s)
    missing = [name for name in ("rdkit", "qm9pack") if importlib.util.find_spec(name) is None]
    result.metrics = {"missing": missing}
    if missing:
        result.error = (f"not run: {' and '.join(missing)} not importable here, so the QM9 dataset "
                        "(qm9pack's molecules, RDKit bond perception) cannot be built; molecules/s is the "
                        "bench's QM9-like synthetic batch (model only)")
    else:
        result.error = ("not run: building QM9 (130,831 molecules through RDKit bond perception) does not "
                        "fit the check's budget; molecules/s is the bench's QM9-like synthetic batch "
                        "(model only)")
    return result


RUNNERS: dict[str, Callable[[Context, float], StageResult]] = {
    "machine": stage_machine, "tests": stage_tests, "bench": stage_bench, "nbody": stage_nbody,
    "modelnet": stage_modelnet, "qm9": stage_qm9}
