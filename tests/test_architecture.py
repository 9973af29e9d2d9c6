"""The package's shape: layers one way (import-linter's contracts in pyproject.toml), no import
cycle, no private name imported across modules, no import hidden behind TYPE_CHECKING.

Each check reads every import of the package, lazy ones inside functions included, so a change
that quietly undoes the layering fails here (and in ``lint-imports`` in CI).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")  # comes with import-linter (the [test] extra)

PACKAGE = Path(__file__).resolve().parents[1] / "lucent_core"


def _import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("lucent_core")
    return {module: set(graph.find_modules_directly_imported_by(module))
            for module in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    assert _cycles(_import_graph()) == []


@pytest.mark.parametrize("core", ["lucent_core.render", "lucent_core.objectives.core",
                                  "lucent_core.param.images", "lucent_core.hooks",
                                  "lucent_core.preprocessing", "lucent_core.units"])
def test_the_core_reaches_no_zoo_recipe_atlas_or_cli(core):
    graph = grimp.build_graph("lucent_core")
    reached = graph.find_upstream_modules(core)
    above = sorted(m for m in reached if m.split(".")[1] in ("models", "recipes", "atlas", "cli"))
    assert above == [], f"{core} imports (directly or not) {above}"


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lucent_core"):
                offenders += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and alias.name != "__version__"]
    assert offenders == []


def test_no_import_hides_behind_type_checking():
    offenders = [path.name for path in _python_files() if "TYPE_CHECKING" in path.read_text()]
    assert offenders == []


def test_import_linter_contracts_are_kept():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) \
        or shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed")
    done = subprocess.run([command, "--no-cache"], cwd=PACKAGE.parent, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
