"""The structure picture of the code: which module imports which, read from the source with
:mod:`ast` (module-level imports, ``TYPE_CHECKING`` blocks and imports inside functions alike).

The layers of docs/architecture.md hold, and no module of ``zmeet`` or ``zmeet_cli`` reaches
itself through its imports (an import circle), because a circle makes the order of imports
matter and hides which side owns what.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"zmeet": ROOT / "zmeet", "zmeet_cli": ROOT / "cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    for _ in range(node.level - 1):
        base.pop()
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> Iterator[str]:
    """The zmeet modules that ``module`` imports (a name imported from a package counts as
    the submodule when there is one, else the package)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub
                elif target in MODULES:
                    yield target


GRAPH = {
    module: {
        # importing a package's submodule runs the package's __init__ first, but the picture
        # follows what the code names, as a reader does
        dep for dep in _imports(module, path) if dep != module
    }
    for module, path in MODULES.items()
}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_cycle_finder_finds_a_circle_and_no_false_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_graph_sees_relative_and_absolute_imports() -> None:
    assert "zmeet.protocol.codec" in GRAPH["zmeet.protocol"]  # from .codec import ...
    assert "zmeet_cli.common" in GRAPH["zmeet_cli.main"]  # from .common import ...
    assert "zmeet.broker" in GRAPH["zmeet_cli.broker"]  # from zmeet.broker import Broker


def test_no_import_circles_in_zmeet_or_the_cli() -> None:
    # a package importing its own submodules (``zmeet/protocol/__init__.py``) is how a package
    # exports; a submodule importing its package back is a circle, and so is any other loop
    assert _cycles(GRAPH) == []


def test_the_protocol_layer_imports_neither_gevent_nor_zmq_nor_the_rest_of_zmeet() -> None:
    allowed = {"zmeet.errors"}
    for module, path in MODULES.items():
        if not module.startswith("zmeet.protocol"):
            continue
        source = ast.parse(path.read_text())
        for node in ast.walk(source):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                assert not name.startswith(("gevent", "zmq")), (module, name)
        for dep in GRAPH[module]:
            assert dep.startswith("zmeet.protocol") or dep in allowed, (module, dep)
