"""The install scripts' decisions (tools/install.py) and the lie_learn source extraction.

The installs themselves run for real in CI: Python 3.11 + numpy 1 (``make install``) and a fresh
Python 3.13 + numpy 2 environment with a torch of its own (``.ci/run``).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import install  # noqa: E402
import lie_learn_wheel  # noqa: E402


@pytest.mark.parametrize(("version", "expected"), [
    ("2.11.0+cu130", (2, 11)), ("2.13.0", (2, 13)), ("2.3.1", (2, 3)), ("1.26.4", (1, 26)),
    ("2.0.0rc1", (2, 0)),
])
def test_release_reads_major_and_minor(version, expected):
    assert install.release(version) == expected


@pytest.fixture
def fake_installed(monkeypatch):
    """Pretend these distributions are installed (name -> version or None)."""
    versions: dict[str, str | None] = {}
    monkeypatch.setattr(install, "installed", lambda dist: versions.get(dist))
    return versions


def test_numpy2_is_chosen_where_numpy2_is_installed_or_asked_for(fake_installed, monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 11, 7))
    fake_installed["numpy"] = "1.26.4"
    assert not install.wants_numpy2("auto")
    assert install.wants_numpy2("2")
    fake_installed["numpy"] = "2.5.2"
    assert install.wants_numpy2("auto")
    assert not install.wants_numpy2("1")
    fake_installed["numpy"] = None
    assert not install.wants_numpy2("auto")
    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    assert install.wants_numpy2("auto")


def test_an_installed_torch_is_kept_and_an_old_one_replaced(fake_installed, monkeypatch):
    calls = []
    monkeypatch.setattr(install, "pip", lambda *args: calls.append(args))
    fake_installed["torch"] = "2.11.0+cu130"
    assert "kept" in install.install_torch("torch==2.13.0")
    assert calls == []
    fake_installed["torch"] = "2.1.2"
    install.install_torch("torch==2.13.0")
    assert calls == [("install", "torch==2.13.0")]


def test_pyproject_admits_every_torch_from_2_3_and_numpy_1_and_2():
    from packaging.requirements import Requirement

    requirements = {Requirement(r).name: Requirement(r) for r in install.project_requirements("dev")}
    for torch_version in ("2.3.0", "2.11.0", "2.13.0", "2.14.1"):
        assert requirements["torch"].specifier.contains(torch_version), torch_version
    for numpy_version in ("1.26.4", "2.0.2", "2.5.2"):
        assert requirements["numpy"].specifier.contains(numpy_version), numpy_version


def _wheel(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.writestr(member, "x")
    return path


def test_lie_learn_sources_are_taken_without_compiled_files(tmp_path):
    wheel = _wheel(tmp_path / "fork.whl", [
        "lie_learn/__init__.py", "lie_learn/groups/SO3.pyx", "lie_learn/groups/SO3.c",
        "lie_learn/groups/SO3.cpython-312-x86_64-linux-gnu.so", "lie_learn/data/J.npy",
        "lie_learn_escience-0.0.5.dist-info/METADATA",
    ])
    assert lie_learn_wheel.extract_sources(wheel, tmp_path / "src") == 1
    kept = sorted(str(p.relative_to(tmp_path / "src")) for p in (tmp_path / "src").rglob("*") if p.is_file())
    assert kept == ["lie_learn/__init__.py", "lie_learn/data/J.npy", "lie_learn/groups/SO3.pyx"]


def test_a_wheel_without_cython_sources_is_refused(tmp_path):
    wheel = _wheel(tmp_path / "binary.whl",
                   ["lie_learn/__init__.py", "lie_learn/x.cpython-312-x86_64-linux-gnu.so"])
    with pytest.raises(SystemExit, match="no Cython sources"):
        lie_learn_wheel.extract_sources(wheel, tmp_path / "src")
