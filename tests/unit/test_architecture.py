"""The shape of the code: no import circles, a core that stands alone, files a reader can hold.

The import graph is read from the source (every import, also inside functions, except those
under ``if TYPE_CHECKING:``, which never run), so a circle dodged with a late import counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from callvault.providers.registry import PROVIDER_NAMES, provider_named
from local.simulated_providers import SIMULATIONS

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "callvault"
PACKAGES = {"callvault": CORE / "callvault", "local": ROOT / "local"}
MAX_LINES = 500
# A file may be longer only if its docstring says why, in these words.
LONG_FILE_REASON = "Long because"


def module_name(path: Path) -> str:
    base = CORE if path.is_relative_to(CORE) else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files() -> Iterator[Path]:
    for package in PACKAGES.values():
        yield from sorted(package.rglob("*.py"))


def runtime_imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, inside a function?) for every import that can run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (found for stmt in child.orelse for found in walk(stmt, in_function))
                continue
            if isinstance(child, ast.Import):
                yield from ((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else [])
                    )
                for alias in child.names:
                    yield (f"{base}.{alias.name}", in_function)  # a submodule, or a name in ``base``
                    yield (base, in_function)
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from walk(child, nested)

    yield from walk(tree, False)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in python_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {target for target, _ in runtime_imports(path) if target in modules and target != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_module_imports_itself_back_even_late() -> None:
    assert cycles(import_graph()) == []


def test_the_core_imports_neither_the_local_stack_nor_the_functions() -> None:
    offenders = [
        f"{module_name(path)} imports {target}"
        for path in sorted((CORE / "callvault").rglob("*.py"))
        for target, _ in runtime_imports(path)
        if target.split(".")[0] in ("local", "functions", "tests")
    ]
    assert offenders == []


def test_the_core_imports_its_own_modules_at_the_top() -> None:
    late = [
        f"{module_name(path)} imports {target} inside a function"
        for path in sorted((CORE / "callvault").rglob("*.py"))
        for target, in_function in runtime_imports(path)
        if in_function and target.startswith("callvault")
    ]
    assert late == []


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in [*python_files(), *sorted((ROOT / "functions").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_a_file_over_500_lines_says_why_in_its_docstring(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    if source.count("\n") <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert LONG_FILE_REASON in docstring, f"{path.relative_to(ROOT)} has {source.count(chr(10))} lines"


def test_every_provider_of_the_core_can_be_played_by_the_local_stack() -> None:
    assert sorted(SIMULATIONS) == sorted(PROVIDER_NAMES)


def test_each_registered_name_loads_the_provider_of_that_name() -> None:
    for name in PROVIDER_NAMES:
        provider = provider_named(name)
        assert provider is not None and provider.name == name
    assert provider_named("asterisk") is None
