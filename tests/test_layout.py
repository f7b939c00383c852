"""The library's import graph: module-level imports between its modules form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import melhubert_lib

ROOT = Path(melhubert_lib.__file__).parent


def _module_imports() -> dict[str, set[str]]:
    """Each module of the library (dotted name) -> the library modules it imports at module level."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.parse(path.read_text()).body:  # imports inside functions are deferred on purpose
            if isinstance(node, ast.ImportFrom) and node.level:
                target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                deps |= {t for t in (target, *(f"{target}.{a.name}" for a in node.names)) if t in modules}
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path, node, dep]
            if dep not in state and (found := visit(dep, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_library_has_no_import_cycle():
    graph = _module_imports()
    assert "melhubert_lib.model" in graph["melhubert_lib.compression.methods"]  # the graph sees relative imports
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


STAGES = ("data", "training", "compression", "probes", "study")  # the pipeline's order
TOP_LEVEL_ENTRY_POINTS = {"melhubert_lib", "melhubert_lib.cli", "melhubert_lib.__main__"}


def _stage(module: str) -> str | None:
    """The stage package a module belongs to (None: a top-level module such as model or scales)."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in STAGES else None


def _backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Module-level imports that point from a stage to a later one, or from a top-level module (but the entry
    points) into any stage after data."""
    wrong = []
    for module, deps in graph.items():
        for dep in sorted(deps):
            here, there = _stage(module), _stage(dep)
            if here and there and STAGES.index(there) > STAGES.index(here):
                wrong.append(f"{module} -> {dep}")
            elif here is None and module not in TOP_LEVEL_ENTRY_POINTS and there not in (None, "data"):
                wrong.append(f"{module} -> {dep}")
    return wrong


def test_no_stage_imports_a_later_one():
    graph = _module_imports()
    assert {_stage(m) for m in graph} == {*STAGES, None}
    assert _backward_imports(graph) == []


def test_the_stage_order_check_finds_a_backward_import():
    graph = {"melhubert_lib.data.frames": {"melhubert_lib.probes.superb"}, "melhubert_lib.model": {
        "melhubert_lib.training.pretrain"}, "melhubert_lib.study.questions": {"melhubert_lib.data.frames"}}
    assert _backward_imports(graph) == ["melhubert_lib.data.frames -> melhubert_lib.probes.superb",
                                        "melhubert_lib.model -> melhubert_lib.training.pretrain"]
