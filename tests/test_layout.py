"""The package's shape: small modules, no import circles, lower layers never importing upper
ones (docs/design/pipeline.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "popcorn"
MAX_LINES = 600

# Each layer and the layers above it, which it must never import (even lazily).
ABOVE = {
    "popcorn.llm": ("popcorn.writer", "popcorn.pipeline", "popcorn.study", "popcorn.app"),
    "popcorn.retrieval": ("popcorn.writer", "popcorn.pipeline", "popcorn.study", "popcorn.app"),
    "popcorn.media": ("popcorn.writer", "popcorn.pipeline", "popcorn.study", "popcorn.app"),
    "popcorn.predictor": ("popcorn.pipeline", "popcorn.study", "popcorn.app"),
    "popcorn.runs": ("popcorn.writer", "popcorn.pipeline", "popcorn.study", "popcorn.app"),
    "popcorn.writer": ("popcorn.pipeline", "popcorn.study", "popcorn.app", "popcorn.cli"),
    "popcorn.pipeline": ("popcorn.study", "popcorn.app", "popcorn.cli"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, *, eager_only: bool) -> set[str]:
    """The popcorn modules ``path`` imports: at import time only (``eager_only``: module level,
    outside ``if TYPE_CHECKING``) or anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if eager_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n in MODULES and n != "popcorn"}


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_two_modules_import_each_other_at_import_time() -> None:
    graph = {name: _imports(path, eager_only=True) for name, path in MODULES.items()}
    circles = []
    for start in graph:
        # A path back to ``start`` through the modules it imports is a circle.
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name == start:
                circles.append(start)
                break
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
    assert circles == []


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_a_lower_layer_never_imports_an_upper_one(layer: str) -> None:
    wrong = {
        f"{name} -> {target}"
        for name, path in MODULES.items()
        if name == layer or name.startswith(layer + ".")
        for target in _imports(path, eager_only=False)
        if target.startswith(ABOVE[layer])
    }
    assert wrong == set()
