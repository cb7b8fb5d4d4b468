"""plait's modules import each other in one direction: no cycle, also not through imports
inside functions; ``keras.src`` is reached from one module only."""

from __future__ import annotations

import ast
from pathlib import Path

import plait

PACKAGE = Path(plait.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str]) -> set[str]:
    """Every plait module this file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found - {"plait"}


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported(path, set(files)) - {name} for name, path in files.items() if name != "plait"}


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(edges.get(name, ())):
            if target in trail:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(edges):
        if name not in done:
            visit(name, [name])
    assert not cycles, cycles


def test_the_bundle_module_only_reads_and_writes_files() -> None:
    assert graph()["plait.bundle"] <= {"plait.errors"}


def test_the_report_renders_without_loading_or_training() -> None:
    assert not graph()["plait.report"] & {"plait.model", "plait.bundle", "plait.preprocess", "plait.training"}


def test_keras_internals_are_reached_from_one_module() -> None:
    users = [module_name(path) for path in PACKAGE.rglob("*.py")
             if "keras.src" in path.read_text(encoding="utf-8")]
    assert users == ["plait.backend"]
