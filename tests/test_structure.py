"""The shape of the product code (docs/architecture.md, "Layers"): imports only point
down, each module stays small enough to hold one idea, each function short enough to
read at once. Read from the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("calpendo_assets", "mwl_service", "calpendo_sim")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 450


def product_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            # Alembic revisions are frozen history, not code anyone restructures.
            if "migrations" not in path.relative_to(ROOT).parts:
                files.append(path)
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in product_files()}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path) -> list[tuple[str, ast.AST]]:
    """(project module, import node) for every import in `path`, wherever it stands."""
    known = modules()
    current = module_name(path)
    found = []
    for node in ast.walk(parsed(path)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, current, path.name == "__init__.py")
            # `from package import module` imports the module, not only the package.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != current:
                found.append((target, node))
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {t for t, _ in imported_modules(path)} for name, path in modules().items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_the_import_graph_has_no_circle():
    assert strongly_connected(import_graph()) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), set()) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_api_app_stands_without_calpendo_assets():
    # Only mwl-api's console script reads the data-source config (--timezone's
    # default); the app and its modules get the zone passed in.
    graph = import_graph()
    assert any(t.startswith("calpendo_assets.") for t in graph["mwl_service.api.cli"])
    reached = reachable(graph, "mwl_service.api") | reachable(graph, "mwl_service.api.app")
    assert sorted(t for t in reached if t.startswith("calpendo_assets")) == []


def _under_type_checking(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, inner.end_lineno + 1))
    return lines


def test_no_project_import_hides_in_a_function_or_under_type_checking():
    hidden = []
    for path in product_files():
        tree = parsed(path)
        guarded = _under_type_checking(tree)
        in_functions = {
            n.lineno
            for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for target, node in imported_modules(path):
            if node.lineno in guarded or node.lineno in in_functions:
                hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert hidden == []


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in product_files():
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {length}")
    assert long == []


def test_no_file_is_longer_than_450_lines():
    long = [
        f"{path.relative_to(ROOT)} {n}"
        for path in product_files()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert long == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(source, expected):
    assert strongly_connected(source) == expected


def test_the_graph_sees_relative_and_package_imports():
    graph = import_graph()
    # Fixed points of today's layout that any layout keeps: the code location imports
    # the package's Dagster wiring, and the DICOM service's CLI its server.
    assert any(t.startswith("calpendo_assets.") for t in graph["calpendo_assets.definitions"])
    assert any(t.startswith("mwl_service.") for t in graph["mwl_service.cli"])
