"""Shape inference: per-sample output shapes of every node (the batch dimension is symbolic)."""

from __future__ import annotations

from convstudio.ir.errors import DesignError, GraphError
from convstudio.ir.graph import Graph, Node, parse_ref
from convstudio.ir.ops.registry import check_param_sizes
from convstudio.ir.passes.base import PassResult

Shape = tuple[int, ...]


def input_shapes_of(graph: Graph, node: Node, shapes: dict[str, list[Shape] | None]) -> list[Shape] | None:
    """The shapes feeding `node`, or None when a producer has none (not connected or broken)."""
    out = []
    for ref in node.inputs:
        if ref is None:
            return None
        src, idx = parse_ref(ref)
        produced = shapes.get(src)
        if produced is None or idx >= len(produced):
            return None
        out.append(produced[idx])
    return out


def infer_node(node: Node, ins: list[Shape]) -> list[Shape]:
    """Output shapes of one node given its input shapes; errors name the node and field."""
    opdef = node.opdef
    where = f"node '{node.name}'"
    opdef.check_arity(len(ins), where)
    try:
        outs = [tuple(map(int, s)) for s in opdef.infer(node.resolved, ins)]
        check_param_sizes(opdef.params(node.resolved, ins))
        return outs
    except DesignError as e:
        raise e.at(where) from None


def infer_one(graph: Graph, node: Node, shapes: dict) -> tuple[list[Shape] | None, DesignError | None]:
    """(shapes, error) for a node given the shapes computed so far; never raises for bad shapes."""
    for i, ref in enumerate(node.inputs):
        if ref is None:
            return None, GraphError(f"input {i} is not connected", f"node '{node.name}'")
    ins = input_shapes_of(graph, node, shapes)
    if ins is None:
        return None, None
    try:
        return infer_node(node, ins), None
    except DesignError as e:
        return None, e


def infer_shapes(graph: Graph, strict: bool = True) -> PassResult:
    """Write meta['shapes'] (list of per-sample shapes, or None) and meta['error'] on every node.

    Strict mode raises the first error; otherwise errors are recorded and downstream nodes get no shape.
    """
    shapes: dict[str, list[Shape] | None] = {}
    errors = []
    for name in graph.topo_order():
        node = graph.nodes[name]
        result, error = infer_one(graph, node, shapes)
        if error is not None and strict:
            raise error
        shapes[name] = result
        node.meta["shapes"] = result
        node.meta["error"] = error.line() if error else None
        if error:
            errors.append(error.line())
    return PassResult(graph, False, errors)
