"""Fill ``wheelhouse/`` with the Python 3.12 wheels a bare CUDA image lacks, for ``make gpu-check``.

The GPU machines this project is checked on (Python 3.12, numpy 2, a CUDA torch, torch-geometric,
Lightning, scipy, joblib; no network) lack escnn and Hydra. This script downloads (or, for packages
published only as sources, builds) exactly those wheels, at the versions installed in this environment,
and compiles escnn's ``lie_learn`` for CPython 3.12 against numpy 2 (``tools/lie_learn_wheel.py``).
wandb, RDKit and qm9pack stay out (the check logs to CSV and needs no QM9), which keeps the folder
under the 60 MiB that travels with the working tree.

Usage: ``make wheelhouse`` (= ``python tools/wheelhouse.py --out wheelhouse``). Needs Python 3.12 for the
lie_learn build (``--python312``; pyenv's is found by itself).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import lie_learn_wheel  # noqa: E402

# What the image lacks that `steerable.gpu_check` imports (escnn and its pure-Python needs, Hydra).
PURE_PYTHON = (
    "escnn",
    "pymanopt",
    "autograd",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "submitit",
    "hydra-submitit-launcher",
)
TARGET = ("--python-version", "3.12", "--implementation", "cp",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux2014_x86_64")
# numpy the lie_learn extension is compiled against: the oldest numpy 2, so any numpy 2.x runs it.
BUILD_NUMPY = "numpy==2.0.2"
LIMIT_MIB = 60


def pinned(name: str) -> str:
    """``name==version`` at the version installed here (the versions the tests ran with)."""
    return f"{name}=={metadata.version(name)}"


def run(*cmd: str) -> None:
    print("   $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def fetch_pure_python(out: Path) -> None:
    """A py3 wheel of each of :data:`PURE_PYTHON`: PyPI's, or one built here from its sdist."""
    for name in PURE_PYTHON:
        requirement = pinned(name)
        try:
            run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                *TARGET, "--dest", str(out), requirement)
        except subprocess.CalledProcessError:
            print(f">> {requirement} has no wheel on PyPI: building one from its sources", flush=True)
            run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                requirement)


def find_python312(explicit: str | None) -> str:
    """An interpreter that runs and is CPython 3.12 (pyenv's shims may exist without a 3.12 behind them)."""
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))
    candidates = [explicit] if explicit else [*map(str, pyenv), shutil.which("python3.12")]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    raise SystemExit("no Python 3.12 found (needed to compile lie_learn for the GPU image): pass --python312")


def build_lie_learn(python312: str, out: Path) -> None:
    """lie_learn for cp312 + numpy 2, built in a throw-away venv of ``python312``."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse_py312_") as tmp:
        run(python312, "-m", "venv", tmp)
        python = str(Path(tmp) / "bin" / "python")
        run(python, "-m", "pip", "install", "--quiet", BUILD_NUMPY, "cython>=3", "setuptools<81", "wheel")
        lie_learn_wheel.build(python, out)


def report(out: Path) -> float:
    """Print every wheel with its size; returns the total in MiB."""
    total = 0.0
    for wheel in sorted(out.glob("*.whl")):
        size = wheel.stat().st_size / 2**20
        total += size
        print(f"   {size:6.2f} MiB  {wheel.name}")
    print(f">> {total:.1f} MiB in {out}")
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--python312", help="a CPython 3.12 to compile lie_learn with")
    args = parser.parse_args(argv)
    python312 = find_python312(args.python312)
    if args.out.exists():
        shutil.rmtree(args.out)  # one version of each package: two would stop the install there
    args.out.mkdir(parents=True)
    fetch_pure_python(args.out)
    build_lie_learn(python312, args.out)
    if report(args.out) > LIMIT_MIB:
        raise SystemExit(f"wheelhouse exceeds {LIMIT_MIB} MiB: it would not travel with the working tree")


if __name__ == "__main__":
    main()
