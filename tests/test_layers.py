"""Package layering: every import inside ``steerable`` goes to its own layer or to a layer below it.

The layers, bottom up (:data:`LAYERS`); a module may import modules of its own layer and of the layers
:data:`BASES` lists for it, and no module imports itself back through others (no circle). Imports
are read with ``ast`` from the source, function-level imports included, so a lazy import counts the
same as a top-level one. A new module needs an entry in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import steerable

ROOT = Path(steerable.__file__).parent

#: Layer of every module, by module name or package prefix (the longest match wins; ``steerable``
#: itself, the package's ``__init__``, matches only itself).
LAYERS: dict[str, str] = {
    # plain Python and torch, shared by everything above
    "steerable": "base",
    "steerable.io_utils": "base",
    "steerable.seeding": "base",
    "steerable.escnn_compat": "base",
    "steerable.chem": "base",
    "steerable.geometry": "base",
    "steerable.transforms": "base",
    "steerable.results": "base",
    "steerable.metrics_csv": "base",
    "steerable.device_guard": "base",
    "steerable.schedules": "base",
    # escnn groups, field-wise operations on typed tensors, equivariance checks
    "steerable.groups": "groups",
    "steerable.fields": "groups",
    "steerable.equivariance": "groups",
    "steerable.testing": "groups",
    "steerable.kernels": "kernels",
    "steerable.nn": "nn",
    "steerable.models": "models",
    "steerable.data": "data",
    "steerable.tasks": "tasks",
    # Lightning runtime: callbacks, loggers, config checks, checkpoints, run plots
    "steerable.callbacks": "run",
    "steerable.csv_logger": "run",
    "steerable.wandb_logger": "run",
    "steerable.throughput": "run",
    "steerable.config_checks": "run",
    "steerable.checkpoint": "run",
    "steerable.kernel_views": "run",
    "steerable.run_plots": "run",
    # command-line entry points
    "steerable.train": "entry",
    "steerable.evaluate": "entry",
    "steerable.predict": "entry",
    "steerable.plot": "entry",
    "steerable.check": "entry",
    "steerable.bench": "entry",
    "steerable.gpu_check": "entry",
}

#: The layers each layer builds on (besides itself). Data and models are siblings: neither imports the other.
BASES: dict[str, set[str]] = {
    "base": set(),
    "groups": {"base"},
    "kernels": {"base", "groups"},
    "nn": {"base", "groups", "kernels"},
    "models": {"base", "groups", "kernels", "nn"},
    "data": {"base"},
    "tasks": {"base", "groups", "kernels", "nn", "models"},
    "run": {"base", "groups", "kernels", "nn", "models", "data", "tasks"},
    "entry": {"base", "groups", "kernels", "nn", "models", "data", "tasks", "run"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> str:
    prefixes = [p for p in LAYERS if module == p or (p != "steerable" and module.startswith(p + "."))]
    if not prefixes:
        raise KeyError(f"{module} has no layer: add it to LAYERS in {__file__}")
    return LAYERS[max(prefixes, key=len)]


def imported_modules(module: str) -> set[str]:
    """The ``steerable`` modules ``module`` imports anywhere in its source (function-level too)."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: relative import (steerable imports absolutely)"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {name for name in found if name in MODULES and name != module}


IMPORTS: dict[str, set[str]] = {module: imported_modules(module) for module in MODULES}


def test_every_module_has_a_layer():
    assert set(BASES) == set(LAYERS.values())
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    layer = layer_of(module)
    upward = sorted(f"{target} ({layer_of(target)})" for target in IMPORTS[module]
                    if layer_of(target) != layer and layer_of(target) not in BASES[layer])
    assert not upward, f"{module} ({layer}) imports from layers it does not build on: {', '.join(upward)}"


def test_no_import_circle():
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(IMPORTS[module]):
            if state.get(target) == "open":
                circle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_reader_sees_lazy_and_package_imports():
    """Function-level imports and ``from package import module`` count (else the rules above could
    pass on a package that breaks them)."""
    assert "steerable.run_plots" in IMPORTS["steerable.callbacks"]  # imported inside a method
    assert "steerable.data.qm9_cache" in IMPORTS["steerable.data.qm9"]  # from steerable.data import qm9_cache
    assert IMPORTS["steerable.kernels"] >= {"steerable.kernels.implicit", "steerable.kernels.linear"}
    assert layer_of("steerable.bench.worker") == "entry" and layer_of("steerable.nn.point_conv") == "nn"
