"""Shape inference: per-sample output shapes of every node (the batch dimension is symbolic)."""

from __future__ import annotations

from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError
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
        src, idx = parse_ref(ref) if ":" in ref else (ref, 0)
        produced = shapes.get(src)
        if produced is None or idx >= len(produced):
            return None
        out.append(produced[idx])
    return out


def infer_node(node: Node, ins: list[Shape]) -> list[Shape]:
    """Output shapes of one node given its input shapes; errors name the node and field."""
    opdef = node.opdef
    lo, hi = opdef.arity
    if not lo <= len(ins) or (hi is not None and len(ins) > hi):
        opdef.check_arity(len(ins), f"node '{node.name}'")
    try:
        a = node.resolved
        outs = [tuple(map(int, s)) for s in opdef.infer(a, ins)]
        check_param_sizes(opdef.params(a, ins))
        return outs
    except DesignError as e:
        raise e.at(f"node '{node.name}'") from None


def infer_one(graph: Graph, node: Node, shapes: dict) -> tuple[list[Shape] | None, DesignError | None]:
    """(shapes, error) for a node given the shapes computed so far; never raises for bad shapes."""
    _, outs, error = infer_with_inputs(graph, node, shapes)
    return outs, error


def infer_with_inputs(graph: Graph, node: Node, shapes: dict) -> tuple[list[Shape] | None, list[Shape] | None, DesignError | None]:
    """(input shapes, output shapes, error) for a node given the shapes computed so far; never raises for bad shapes."""
    ins = input_shapes_of(graph, node, shapes)
    if ins is None:
        for i, ref in enumerate(node.inputs):
            if ref is None:
                return None, None, GraphError(f"input {i} is not connected", f"node '{node.name}'")
        return None, None, None
    try:
        return ins, infer_node(node, ins), None
    except DesignError as e:
        return ins, None, e


def param_shapes_of(node: Node, ins: list[Shape]) -> dict[str, Shape]:
    """Shapes of a node's parameters and buffers given its input shapes."""
    a = node.resolved
    return {k: tuple(v) for k, v in {**node.opdef.params(a, ins), **node.opdef.buffers(a, ins)}.items()}


def share_error(graph: Graph, group: str, owner: str, member: str, shapes: dict[str, list[Shape] | None]) -> DesignError | None:
    """Why `member` cannot use the parameters of `owner`, the first node of their sharing group `group`: another op, other
    attributes, or inputs that make parameters of other shapes (a Linear fed 256 features and one fed 400 pass the attribute
    check but need weights of different shapes). None when it can, or while either's shapes are unknown."""
    first, node = graph.nodes[owner], graph.nodes[member]
    if node.op != first.op:
        return AttrError(f"sharing group '{group}' mixes ops {sorted({first.op, node.op})}", f"node '{member}' share")
    if node.resolved != first.resolved:
        return AttrError(f"node shares '{group}' with '{owner}' but its attributes differ", f"node '{member}' share")
    owner_ins = input_shapes_of(graph, first, shapes)
    ins = input_shapes_of(graph, node, shapes)
    if owner_ins is None or ins is None or shapes.get(owner) is None or shapes.get(member) is None:
        return None  # not known yet, or one of them has an error of its own (its parameters may not be defined)
    expected, got = param_shapes_of(first, owner_ins), param_shapes_of(node, ins)
    if got == expected:
        return None
    key = next(k for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k))
    return ShapeError(f"shares parameters with '{owner}' (group '{group}') but its input makes {key} of shape {list(got.get(key, ()))}, "
                      f"where '{owner}' has shape {list(expected.get(key, ()))}", f"node '{member}' share")


def shared_param_errors(graph: Graph, shapes: dict[str, list[Shape] | None], groups: dict[str, list[str]] | None = None) -> list[tuple[str, DesignError]]:
    """(member, error) for the members of a sharing group that cannot use the parameters of the group's owner (its first
    node), by `share_error`. `groups`: the graph's `share_groups()`, when at hand."""
    errors = []
    for group, members in (graph.share_groups() if groups is None else groups).items():
        for member in members[1:]:
            error = share_error(graph, group, members[0], member, shapes)
            if error is not None:
                errors.append((member, error))
    return errors


def infer_shapes(graph: Graph, strict: bool = True) -> PassResult:
    """Write meta['shapes'] (list of per-sample shapes, or None) and meta['error'] on every node.

    Strict mode raises the first error; otherwise errors are recorded and downstream nodes get no shape.
    Sharing groups whose members would need parameters of different shapes are errors too.
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
    for member, error in shared_param_errors(graph, shapes):
        if strict:
            raise error
        graph.nodes[member].meta["error"] = error.line()
        errors.append(error.line())
    return PassResult(graph, False, errors)
