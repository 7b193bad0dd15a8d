"""The modules of backends/ import each other without a cycle, counting every import: top-level, inside
functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2] / "backends"
PACKAGE = "convstudio.backends"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The backends modules `path` imports anywhere in its body (`from P import m` counts as P.m when m is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> nx.DiGraph:
    files = sorted(ROOT.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for f in files:
        graph.add_edges_from((module_name(f), target) for target in imported_modules(f, known))
    return graph


def test_the_graph_sees_function_level_and_type_checking_imports():
    graph = import_graph()
    assert graph.has_edge("convstudio.backends.onnx.ops", "convstudio.backends.onnx.emitter")  # under TYPE_CHECKING
    assert graph.has_edge("convstudio.backends.onnx.importer", "convstudio.backends.onnx.mapping")
    assert graph.has_edge("convstudio.backends.onnx.mapping", "convstudio.backends.onnx.importer_core")
    assert graph.has_edge("convstudio.backends.onnx.importer_core", "convstudio.backends.onnx.fold")  # `from P import fold`


def test_backends_modules_import_without_a_cycle():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, [" -> ".join([*c, c[0]]) for c in cycles]
