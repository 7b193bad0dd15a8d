"""Shapes of values in a graph under construction, as blocks need them (e.g. the channels feeding a block)."""

from __future__ import annotations

from convstudio.ir.errors import GraphError, ShapeError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.shapes import infer_shapes


def value_shape(graph: Graph, ref: str) -> tuple[int, ...]:
    """Per-sample shape of value `ref`, from shape inference over the whole graph."""
    name, index = parse_ref(ref)
    if name not in graph.nodes:
        raise GraphError(f"no node named '{name}'", "block input")
    if graph.nodes[name].op == "Output":
        raise GraphError(f"'{name}' is an Output node, which has no consumers", "block input")
    infer_shapes(graph, strict=False)
    node = graph.nodes[name]
    shapes = node.meta.get("shapes")
    if not shapes or index >= len(shapes):
        reason = node.meta.get("error") or "a node before it has no shape"
        raise ShapeError(f"the shape of '{ref}' is unknown ({reason})", f"node '{name}'")
    return shapes[index]


def value_channels(graph: Graph, ref: str) -> int:
    """Channel count of a CxHxW value `ref`."""
    shape = value_shape(graph, ref)
    if len(shape) != 3:
        raise ShapeError(f"a block needs an NCHW value, '{ref}' is {['N', *shape]}", f"node '{parse_ref(ref)[0]}'")
    return shape[0]
