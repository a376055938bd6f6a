"""The package's shape: no import circles, no stage importing another, a control plane that knows
nothing of the edge.

Read from the source with ``ast``, so every import counts: those under ``if TYPE_CHECKING:`` and
those inside functions too (a type-only import still says that one module depends on another).
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
# The pipeline's base class; a stage is a module defining a subclass of it (or named stage.py).
STAGE_BASE = "app.pipeline.stage"
# (importer, imported): packages that must not depend on each other in this direction.
FORBIDDEN = [
    ("app.control", "app.edge"),  # the control plane gets narrow objects from the composition root
    ("app.control", "app.gateway"),
    ("app.routing", "app.pipeline"),  # routing carries what the pipeline compiles without knowing it
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in APP.rglob("*.py"):
        parts = list(path.relative_to(APP.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The app modules one import statement names (``from a import b`` names ``a`` and, when it is
    a module, ``a.b``)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return {candidate for candidate in candidates if candidate in modules and candidate != name}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(name, path, node, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage_modules() -> set[str]:
    stages = set()
    for name, path in _modules().items():
        if name == STAGE_BASE:
            continue
        if path.name == "stage.py":
            stages.add(name)
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(base, ast.Name) and base.id == "Stage" for base in node.bases):
                stages.add(name)
    return stages


def test_the_graph_sees_type_only_and_local_imports() -> None:
    graph = import_graph()
    assert "app.pipeline.stage" in graph["app.cache.stage"]  # a module-level import
    assert "app.store.redis" in graph["app.store"]  # one inside a function (create_store)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_are_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_no_stage_imports_another_stage() -> None:
    graph = import_graph()
    stages = stage_modules()
    assert {"app.ratelimit.stage", "app.cache.stage", "app.breaker.stage", "app.control.activity"} <= stages
    crossing = sorted((stage, other) for stage in stages for other in graph[stage] & stages)
    assert crossing == []


def test_layers_point_one_way() -> None:
    graph = import_graph()
    wrong = sorted((module, target) for module, targets in graph.items() for target in targets
                   for importer, imported in FORBIDDEN
                   if (module == importer or module.startswith(importer + "."))
                   and (target == imported or target.startswith(imported + ".")))
    assert wrong == []
