"""The package's shape, checked: layers that data flows down through, no import circles, small
functions. A newcomer should find each concept in one obvious place; these tests keep it so."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_trtparity"

#: Lower layers never import higher ones: options -> settings -> engine -> checks -> judgement ->
#: artifacts. A module's layer is that of its longest matching prefix.
LAYERS: dict[str, int] = {
    "errors": 0,
    "util": 0,
    "contract": 1,
    "settings": 1,
    "reference": 2,
    "trt": 3,
    "backends": 4,
    "judge": 5,
    "checks": 6,
    "explain": 7,
    "sharding": 7,
    "faults": 8,
    "signoff": 9,
    "artifacts": 10,
    "session": 11,
    "bundled": 12,
    "commands": 12,
    "cli": 13,
    "newhooks": 13,
    "plugin": 13,
    "xdist_support": 13,
    "__init__": 13,
}
MAX_UPWARD = 1
MAX_ROOT_MODULES = 12
MAX_LONG_FUNCTIONS = 3
LONG = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    head = module.split(".")[0]
    if head not in LAYERS:
        raise AssertionError(f"module {module} has no layer in LAYERS: add its package there")
    return LAYERS[head]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.ImportFrom | ast.Import]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _targets(path: Path, node: ast.ImportFrom | ast.Import) -> Iterator[str]:
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith("pytest_trtparity."):
                yield alias.name.removeprefix("pytest_trtparity.")
        return
    if node.level == 0:
        if not (node.module or "").startswith("pytest_trtparity"):
            return
        base = (node.module or "").split(".")[1:]
    else:
        base = package[: len(package) - node.level + 1] + (node.module or "").split(".")
        base = [b for b in base if b]
    for alias in node.names:
        candidate = [*base, alias.name]
        if (PACKAGE.joinpath(*candidate).with_suffix(".py")).exists() or PACKAGE.joinpath(
            *candidate
        ).is_dir():
            yield ".".join(candidate)
        elif base:
            yield ".".join(base)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        name = _module_name(path)
        graph.setdefault(name, set())
        for node in _runtime_imports(tree):
            for target in _targets(path, node):
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _resolve(graph: dict[str, set[str]], target: str) -> str | None:
    if target in graph:
        return target
    init = target + ".__init__"
    return init if init in graph else None


def test_no_import_circles() -> None:
    graph = _graph()
    edges = {m: {t for t in (_resolve(graph, x) for x in ts) if t} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_imports_run_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert len(upward) <= MAX_UPWARD, "imports running up the layers:\n" + "\n".join(upward)


def test_few_modules_at_the_package_root() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= MAX_ROOT_MODULES, loose


def test_functions_stay_short() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LONG:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length})")
    assert len(long) <= MAX_LONG_FUNCTIONS, "functions over 60 lines:\n" + "\n".join(sorted(long))


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_layer_names_something_real(package: str) -> None:
    assert (PACKAGE / package).is_dir() or (PACKAGE / f"{package}.py").exists(), package
