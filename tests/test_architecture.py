"""The shape of the code: packages import one way (no cycles), modules stay small, the loop's functions short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "hat"
MAX_MODULE_LINES = 300
MAX_LOOP_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")


def _unit(module: str) -> str:
    """The unit of the import graph: a subpackage (``hat.engine``) as a whole, or a top-level module."""
    parts = module.split(".")
    return f"hat.{parts[1]}" if len(parts) > 1 and (SRC / parts[1]).is_dir() else module


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (every import statement, at any depth of the code)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        source = _unit(_module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("hat.") and _unit(name) != source:
                    graph.setdefault(source, set()).add(_unit(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for other in sorted(graph.get(unit, ())):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            component = []
            while not component or component[-1] != unit:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def test_no_package_or_module_imports_form_a_cycle():
    graph = import_graph()
    assert {"hat.engine", "hat.models", "hat.data", "hat.config"} <= set(graph)  # the graph was read
    problems = [" <-> ".join(c) + ": " + "; ".join(f"{u} imports {sorted(graph[u] & set(c))}" for u in c)
                for c in cycles(graph)]
    assert not problems, problems


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_the_training_loop_has_no_long_function():
    for module in ("loop.py", "training_run.py"):
        tree = ast.parse((SRC / "engine" / module).read_text())
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        long = [(f.name, f.end_lineno - f.lineno + 1) for f in functions
                if f.end_lineno - f.lineno + 1 > MAX_LOOP_FUNCTION_LINES]
        assert not long, f"{module}: {long}"
