"""What every pass returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convstudio.ir.graph import Graph


@dataclass
class PassResult:
    """A pass's output graph, whether it changed anything, and a report of what it did or declined."""

    graph: Graph
    changed: bool
    report: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def run_pipeline(graph: Graph, steps: list) -> tuple[Graph, list[tuple[str, PassResult]]]:
    """Run named steps `[(name, pass_fn), ...]` in order, feeding each the previous graph."""
    results = []
    for name, step in steps:
        result = step(graph)
        results.append((name, result))
        graph = result.graph
    return graph, results
