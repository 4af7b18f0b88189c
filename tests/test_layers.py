"""The package's layers, read from the source with ``ast`` (nothing is imported).

errors/devices < data < models < pipeline < tasks < flows < cli: a module imports only modules of
its own layer or of lower ones (lazy imports inside functions and ``TYPE_CHECKING`` imports count
too), there are no import cycles inside ``spadepis``, and only the Prefect layer and the CLI import
Prefect. Installing the project puts only ``spadepis`` packages into site-packages.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "spadepis"

LAYERS = ["base", "data", "models", "pipeline", "tasks", "flows", "cli", "api"]
BASE_MODULES = {"spadepis._version", "spadepis.errors", "spadepis.devices"}
# The public API for training consumers (``from spadepis import AugmentedDataset, read_index``; ``spadepis.manifest``):
# the top of the stack, which no module of the package imports (the version lives in spadepis._version).
API_MODULES = {"spadepis", "spadepis.manifest"}
PREFECT_LAYER = ("spadepis.tasks", "spadepis.flows", "spadepis.cli", "spadepis.__main__")
ORCHESTRATION = {"prefect", "prefect_dask", "flows", "tasks"}

# Phase 2 of issue 11 removed the last two cycles (config<->plan: the preflight checks moved to
# pipeline/preflight.py; manifest<->storage: the schema moved to pipeline/schema.py). Keep it empty.
KNOWN_CYCLES: list[set[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = _modules()


def _layer(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    if module in API_MODULES:
        return "api"
    if module == "spadepis.__main__":
        return "cli"
    sub = module.split(".")[1]
    if sub not in LAYERS:
        raise AssertionError(
            f"{module} is in no layer: put it under spadepis/{{data,models,pipeline,tasks,flows,cli}}/ "
            "(or extend LAYERS in tests/test_layers.py if a new layer is meant)"
        )
    return sub


def _imports(module: str) -> list[tuple[str, int]]:
    """(absolute imported name, line) of every import statement in ``module``, wherever it stands."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the submodule pkg.mod when there is one.
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out += [(s, node.lineno) for s in subs] or [(target, node.lineno)]
    return out


def _internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for name, _ in _imports(m):
            # the longest spadepis module the name refers to (spadepis.models.spade.fast, ...)
            parts = name.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            target = ".".join(parts)
            if parts and parts[0] == "spadepis" and target != m:
                graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_the_layer_packages_exist():
    for layer in ("data", "models", "pipeline", "tasks", "flows", "cli"):
        assert (PKG / layer / "__init__.py").is_file(), layer
    assert not (ROOT / "flows").exists() and not (ROOT / "tasks").exists(), "top-level flows/ or tasks/ came back"
    assert len(MODULES) > 30  # the walk found the tree


def test_a_lower_layer_never_imports_a_higher_one():
    graph = _internal_graph()
    bad = []
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            if LAYERS.index(_layer(t)) > LAYERS.index(_layer(m)):
                bad.append(f"{m} ({_layer(m)}) imports {t} ({_layer(t)})")
    assert not bad, "\n".join(bad)


def test_no_module_below_the_cli_imports_the_orchestration():
    bad = []
    for m in MODULES:
        if m.startswith(PREFECT_LAYER):
            continue
        for name, line in _imports(m):
            top = name.split(".")[0]
            if top in ORCHESTRATION or name.startswith(("spadepis.flows", "spadepis.tasks", "spadepis.cli")):
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_top_level_flows_or_tasks():
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {name}"
           for m in MODULES for name, line in _imports(m) if name.split(".")[0] in ("flows", "tasks")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_beyond_the_known_ones():
    cycles = _cycles(_internal_graph())
    new = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not new, f"import cycles inside spadepis: {new}"


def test_no_import_cycles_at_all():
    assert KNOWN_CYCLES == [] and _cycles(_internal_graph()) == []


def test_the_cycle_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def test_packaging_installs_only_spadepis():
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "spadepis.flows" in packages and "spadepis.tasks" in packages and "spadepis.models.spade" in packages
    assert all(p == "spadepis" or p.startswith("spadepis.") for p in packages), packages
