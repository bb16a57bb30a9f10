"""Install steerable (editable, with the dev extras) into the interpreter that runs this script.

``make install`` runs it with ``.venv/bin/python`` or the active virtualenv/conda env. It chooses by
itself and says what it did:

- **torch.** An installed torch ≥ 2.3 is kept (a cluster's CUDA build stays). Without one it installs
  ``--torch`` (default ``torch==2.13.0``: the CPU wheel on Python 3.11 machines that carry it; elsewhere
  pip takes PyPI's build, which is the CUDA one on Linux).
- **numpy 1 or 2.** escnn imports ``lie_learn``, whose PyPI wheels need numpy < 2 and exist only up to
  Python 3.12. On Python ≥ 3.13, when numpy 2 is already installed, or with ``--numpy 2``, lie_learn is
  compiled for this interpreter against numpy 2 (``tools/lie_learn_wheel.py``, about 40 s) and the rest
  follows; otherwise numpy 1 and PyPI's lie_learn wheel are used.
- **gfortran.** escnn's dependency py3nj compiles Fortran. Without gfortran (and no root to apt-get it)
  escnn is installed without py3nj (it then uses slower pure-Python Clebsch–Gordan code), with a warning.

Usage: ``python tools/install.py [--numpy auto|1|2] [--torch SPEC] [--wheel-dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_TORCH = (2, 3)


def say(message: str) -> None:
    print(f">> {message}", flush=True)


def run(*cmd: str) -> None:
    print("   $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def pip(*args: str) -> None:
    run(sys.executable, "-m", "pip", *args)


def installed(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def release(version: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as ``2.11.0+cu130``."""
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def apt_install_if_missing(command: str, package: str, why: str) -> None:
    """apt-get ``package`` when ``command`` is missing and we are root on Debian/Ubuntu."""
    if shutil.which(command) or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    say(f"{command} missing ({why}): installing {package} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)


def install_torch(spec: str) -> str:
    """Keep an installed torch ≥ 2.3, else install ``spec``. Returns a line for the summary."""
    have = installed("torch")
    if have and release(have) >= MIN_TORCH:
        say(f"keeping the installed torch {have}")
        return f"torch {have} (kept)"
    if have:
        say(f"torch {have} is older than {'.'.join(map(str, MIN_TORCH))}: installing {spec}")
    pip("install", spec)
    return f"torch {installed('torch')} (installed: {spec})"


def wants_numpy2(choice: str) -> bool:
    if choice != "auto":
        return choice == "2"
    numpy = installed("numpy")
    return sys.version_info >= (3, 13) or (numpy is not None and release(numpy) >= (2, 0))


def install_lie_learn_for_numpy2(wheel_dir: Path) -> str:
    """Compile lie_learn against numpy 2 for this interpreter and install it (unless already such a build)."""
    have = installed("lie_learn")
    if have and "numpy2" in have:
        say(f"keeping lie_learn {have} (built for numpy 2)")
        return f"lie_learn {have} (kept)"
    say("numpy 2: building lie_learn for this interpreter (PyPI's lie_learn wheels need numpy < 2)")
    pip("install", "numpy>=2", "cython>=3", "setuptools<81", "wheel")
    run(sys.executable, str(ROOT / "tools" / "lie_learn_wheel.py"), "--out", str(wheel_dir))
    wheels = sorted(wheel_dir.glob(f"lie_learn-*+numpy2-cp{sys.version_info[0]}{sys.version_info[1]}-*.whl"))
    if not wheels:
        raise SystemExit(f"no lie_learn wheel for this interpreter in {wheel_dir}")
    pip("install", "--force-reinstall", "--no-deps", str(wheels[-1]))
    pip("install", "scipy", "requests")
    return f"lie_learn {installed('lie_learn')} (compiled here against numpy {installed('numpy')})"


def project_requirements(extras: str) -> list[str]:
    """The project's dependencies plus ``extras``, read from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in filter(None, extras.split(",")):
        requirements += project["optional-dependencies"][extra]
    return requirements


def install_project(extras: str, numpy2: bool) -> None:
    target = f".[{extras}]" if extras else "."
    if shutil.which("gfortran"):
        pip("install", "-e", target)
        return
    say("WARNING: gfortran missing and not root: installing escnn WITHOUT py3nj")
    say("(escnn then uses its slower pure-Python Clebsch-Gordan code). Install gfortran and re-run.")
    pip("install", "pymanopt", "autograd", *([] if numpy2 else ["lie-learn"]))
    pip("install", "--no-deps", next(r for r in project_requirements("") if r.startswith("escnn")))
    pip("install", *(r for r in project_requirements(extras) if not r.startswith("escnn")))
    pip("install", "--no-deps", "-e", ".")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numpy", choices=("auto", "1", "2"), default=os.environ.get("NUMPY", "auto"),
                        help="numpy major version (auto: 2 on Python >= 3.13 or when numpy 2 is installed)")
    parser.add_argument("--torch", default=os.environ.get("TORCH", "torch==2.13.0"),
                        help="what to install when no torch >= 2.3 is present")
    parser.add_argument("--extras", default="dev", help="comma-separated extras of the project")
    parser.add_argument("--wheel-dir", type=Path, default=ROOT / ".wheels",
                        help="where a lie_learn built for numpy 2 is kept")
    args = parser.parse_args(argv)

    say(f"installing steerable into {sys.executable} (Python {sys.version.split()[0]})")
    pip("install", "--upgrade", "pip", "setuptools<81", "wheel")
    apt_install_if_missing("gfortran", "gfortran", "needed by escnn -> py3nj")
    apt_install_if_missing("g++", "g++", "torch.compile on CPU, model.conv.compile_mlp=true")
    torch_line = install_torch(args.torch)
    numpy2 = wants_numpy2(args.numpy)
    if numpy2:
        lie_learn_line = install_lie_learn_for_numpy2(args.wheel_dir)
    else:
        say("numpy 1: using PyPI's lie_learn wheel")
        pip("install", "numpy<2")
        lie_learn_line = "lie_learn from PyPI"
    install_project(args.extras, numpy2)
    say("done: " + "; ".join([
        f"Python {sys.version.split()[0]}",
        torch_line,
        f"numpy {installed('numpy')}",
        lie_learn_line,
        f"escnn {installed('escnn')}",
        "py3nj " + ("yes" if installed("py3nj") else "no (pure-Python Clebsch-Gordan)"),
    ]))


if __name__ == "__main__":
    main()
