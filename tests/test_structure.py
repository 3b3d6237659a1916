"""The package's own import graph: no cycles, and low layers that never reach up.

Every import of an ``infogeo_jax`` module is read from the source with ``ast`` (module-level,
inside functions and inside ``if TYPE_CHECKING:`` blocks alike), so an import that happens only
when a method runs still counts. The implicit import of a module's parent packages is not an
edge (every module would otherwise depend on the root ``__init__``).

Rules checked:
- the graph has no cycle;
- ``infogeo_jax.geometry`` (the metric-level Riemannian engine) imports only its own modules and
  the foundation modules ``_custom_types``, ``_misc`` and ``_results``, and the foundation
  modules import nothing else of the package;
- the abstract base ``AbstractStatisticalManifold`` and ``geometry`` never name a subclass of the
  base: no import of a module that defines one, no ``isinstance`` on one.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import infogeo_jax
from infogeo_jax import AbstractStatisticalManifold

PACKAGE = "infogeo_jax"
ROOT = Path(infogeo_jax.__file__).parent
FOUNDATION = {f"{PACKAGE}._custom_types", f"{PACKAGE}._misc", f"{PACKAGE}._results"}
GEOMETRY = f"{PACKAGE}.geometry"
BASE_MODULE = f"{PACKAGE}._manifold"


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> source file."""
    out = {PACKAGE: ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix=f"{PACKAGE}."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        out[info.name] = Path(spec.origin)
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` in ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _imports(module: str) -> set[str]:
    """The package modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                # (``pkg`` itself is a parent, already imported); any other name comes from
                # ``pkg``'s own code.
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_walk_sees_the_known_structure():
    # The graph must contain the edges that are known to exist, so that an empty or broken
    # walk cannot pass the rules below.
    assert f"{PACKAGE}.geometry._geodesic" in MODULES
    assert f"{PACKAGE}._family" in GRAPH[f"{PACKAGE}.families._normal"]
    assert BASE_MODULE in GRAPH[f"{PACKAGE}._family"]
    assert f"{PACKAGE}._results" in GRAPH[f"{PACKAGE}._projection_solver"]
    assert f"{PACKAGE}.geometry._curvature" in GRAPH[BASE_MODULE]
    assert len(MODULES) > 40


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith(GEOMETRY)))
def test_geometry_imports_nothing_above_it(module):
    above = {n for n in GRAPH[module] if not n.startswith(GEOMETRY) and n not in FOUNDATION}
    assert above == set(), f"{module} imports {sorted(above)}"


@pytest.mark.parametrize("module", sorted(FOUNDATION))
def test_foundation_imports_only_foundation(module):
    assert GRAPH[module] <= FOUNDATION, f"{module} imports {sorted(GRAPH[module] - FOUNDATION)}"


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.add(sub)
                todo.append(sub)
    return out


SUBCLASSES = {
    cls
    for cls in _all_subclasses(AbstractStatisticalManifold)
    if cls.__module__.startswith(PACKAGE)
}
SUBCLASS_MODULES = {cls.__module__ for cls in SUBCLASSES}
SUBCLASS_NAMES = {cls.__name__ for cls in SUBCLASSES}
LOW_MODULES = [BASE_MODULE, *sorted(n for n in MODULES if n.startswith(GEOMETRY))]


def test_subclasses_are_found():
    assert {"AbstractExponentialFamily", "StatisticalModel", "Normal", "Beta"} <= SUBCLASS_NAMES
    assert f"{PACKAGE}._family" in SUBCLASS_MODULES


@pytest.mark.parametrize("module", LOW_MODULES)
def test_low_layers_do_not_import_subclasses(module):
    reached = set()
    todo = [module]
    while todo:  # everything the module pulls in, directly or not
        for dep in GRAPH[todo.pop()]:
            if dep not in reached:
                reached.add(dep)
                todo.append(dep)
    assert reached & SUBCLASS_MODULES == set()


@pytest.mark.parametrize("module", LOW_MODULES)
def test_low_layers_never_test_for_a_subclass(module):
    tree = ast.parse(MODULES[module].read_text())
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            for sub in ast.walk(node.args[1]):
                if isinstance(sub, ast.Name):
                    named.add(sub.id)
                elif isinstance(sub, ast.Attribute):
                    named.add(sub.attr)
    assert named & (SUBCLASS_NAMES | {"AbstractStatisticalManifold"}) == set()
