"""The layout rules of the codebase, checked on the source (no imports executed).

- No import cycles inside the runtime (``sluice``) or the emulator (``localaws``).
- Forbidden directions: runtime → emulator or demo, runtime → infra, runtime → handlers,
  infra → runtime except the shared-names module :mod:`sluice.names`.
- Every non-test Python file outside ``bench/`` has at most 500 lines, every function at most 60.

Imports inside ``if TYPE_CHECKING:`` blocks are type annotations, not run-time dependencies,
and are left out of the graph; imports inside functions count (a lazy import that breaks a cycle
at run time still ties the two modules together).
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "lambdas"
# Source roots and the top-level packages they hold.
PACKAGE_ROOTS = {"sluice": RUNTIME, "localaws": ROOT, "sluice_demo": ROOT, "infra": ROOT}
EMULATION = ("localaws", "sluice_demo")
SHARED_NAMES = "sluice.names"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    base = PACKAGE_ROOTS[package] / package
    if not base.is_dir():
        return {}
    return {_module_name(path, PACKAGE_ROOTS[package]): path for path in sorted(base.rglob("*.py"))}


ALL_MODULES = {name: path for package in PACKAGE_ROOTS for name, path in _modules(package).items()}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (n for child in node.orelse for n in _import_nodes(ast.Module(body=[child])))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str) -> set[str]:
    """The project modules ``module`` imports: ``from a.b import c`` is ``a.b.c`` if that is a module."""
    path = ALL_MODULES[module]
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        source = _resolve(module, path.name == "__init__.py", node)
        for alias in node.names:
            candidate = f"{source}.{alias.name}"
            targets.add(candidate if candidate in ALL_MODULES else source)
    return {target for target in targets if target in ALL_MODULES and target != module}


GRAPH = {module: imports_of(module) for module in ALL_MODULES}


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", ["sluice", "localaws", "sluice_demo"])
def test_no_import_cycles(package: str) -> None:
    graph = {
        module: {target for target in targets if _top(target) == package}
        for module, targets in GRAPH.items()
        if _top(module) == package
    }
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def _violations(source_filter, target_filter) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if source_filter(module)
        for target in targets
        if target_filter(target)
    )


def test_runtime_imports_no_emulator_infra_or_handlers() -> None:
    def forbidden(target: str) -> bool:
        return _top(target) in (*EMULATION, "infra") or target.startswith("sluice.handlers")

    runtime = lambda module: _top(module) == "sluice" and not module.startswith("sluice.handlers")  # noqa: E731
    assert _violations(runtime, forbidden) == []


def test_handlers_import_no_emulator_or_infra() -> None:
    handlers = lambda module: module.startswith("sluice.handlers")  # noqa: E731
    assert _violations(handlers, lambda target: _top(target) in (*EMULATION, "infra")) == []


def test_infra_imports_only_the_shared_names_of_the_runtime() -> None:
    infra = lambda module: _top(module) == "infra"  # noqa: E731
    forbidden = lambda target: _top(target) in ("sluice", *EMULATION) and target not in (SHARED_NAMES, "sluice")  # noqa: E731
    assert _violations(infra, forbidden) == []


def test_shared_names_import_nothing() -> None:
    tree = ast.parse(ALL_MODULES[SHARED_NAMES].read_text())
    imported = [n for n in _import_nodes(tree) if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    assert imported == []


def _source_files() -> list[Path]:
    files = [ROOT / "app.py", *ALL_MODULES.values()]
    return sorted(path for path in files if "tests" not in path.relative_to(ROOT).parts)


def test_files_are_at_most_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _source_files()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_functions_are_at_most_60_lines() -> None:
    long = {}
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert long == {}


def test_the_graph_sees_the_packages() -> None:
    # Guards the checks above against passing vacuously after a move.
    assert "sluice.handlers.score" in GRAPH
    assert SHARED_NAMES in GRAPH
    assert any(_top(module) == "infra" for module in GRAPH)
    assert GRAPH["sluice.handlers.score"], "the score handler imports runtime modules"
