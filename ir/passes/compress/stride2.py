"""stride2: downsample earlier. The chosen stride-1 conv gets stride 2 and the next downsampling layer
on its single-consumer chain (a stride-2 conv or pool) gets stride 1; a pool that then no longer
keeps the shapes (kernel = stride) is redundant and removed. Every value after that layer keeps its
shape; the layers in between run at a quarter of the positions. Weights stay valid.
"""

from __future__ import annotations

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.ops.pool import pool_stride
from convstudio.ir.passes.compress.common import conv_strategy
from convstudio.ir.shapes import infer_shapes

DEFAULTS: dict = {}
DOWNSAMPLERS = ("Conv2d", "MaxPool2d", "AvgPool2d")


def _stride(graph: Graph, name: str) -> tuple[int, int]:
    return pool_stride(graph.nodes[name].resolved)


def _later_downsampler(graph: Graph, name: str) -> tuple[str | None, list[str], str | None]:
    """(downsampling node, the chain before it, None) or (None, [], reason)."""
    chain = [name]
    current = name
    while True:
        users = sorted({c for c, _ in graph.users(current)})
        if len(users) != 1:
            return None, [], f"{current} output has {len(users)} consumers before the next downsampling layer"
        nxt = graph.nodes[users[0]]
        if nxt.op == "Output":
            return None, [], f"no downsampling layer follows {name}"
        if nxt.op in DOWNSAMPLERS and _stride(graph, nxt.name) != (1, 1):
            return nxt.name, chain, None
        if len(nxt.inputs) != 1:
            return None, [], f"{nxt.name} joins other values before the next downsampling layer"
        chain.append(nxt.name)
        current = nxt.name


def _rewrite_on(graph: Graph, name: str) -> tuple[list[str], str]:
    """Rewrite `graph` in place or raise DesignError with the reason."""
    node = graph[name]
    if node.op != "Conv2d":
        raise DesignError(f"{name} is a {node.op}, not a Conv2d")
    a = node.resolved
    if a["stride"] != (1, 1):
        raise DesignError(f"{name} already has stride {a['stride'][0]}x{a['stride'][1]}")
    later, chain, reason = _later_downsampler(graph, name)
    if reason:
        raise DesignError(reason)
    if _stride(graph, later) != (2, 2):
        raise DesignError(f"the next downsampling layer {later} has stride {list(_stride(graph, later))}, not 2")
    before = {n: graph.nodes[n].meta.get("shapes") for n in graph.nodes if n not in chain}
    attrs = dict(node.attrs, stride=2)
    if a["padding"] in ("same", "valid"):
        (top, bottom), (left, right) = conv_pads(a)
        if top != bottom or left != right:
            raise DesignError(f"{name}'s 'same' padding is asymmetric")
        attrs["padding"] = [top, left]
    graph.set_attrs(name, attrs)
    graph.set_attr(later, "stride", 1)
    removed = None
    infer_shapes(graph, strict=False)
    if graph.nodes[later].meta.get("shapes") != before[later] and graph.nodes[later].op != "Conv2d":
        a_later = graph.nodes[later].resolved
        if a_later["kernel_size"] == (2, 2) and a_later["padding"] == (0, 0):
            graph.replace_all_uses(later, graph.nodes[later].inputs[0])
            graph.erase(later)
            removed = later
            infer_shapes(graph, strict=False)
    for other, shapes in before.items():
        if other in graph.nodes and graph.nodes[other].meta.get("shapes") != shapes:
            now = graph.nodes[other].meta.get("shapes")
            got = f"{['N', *now[0]]}" if now else "no shape"
            raise DesignError(f"{other} would change shape from {['N', *shapes[0]]} to {got}")
    if removed:
        return [name], f"{name}: stride 2; {removed} (2x2 pool) is redundant and removed"
    return [name, later], f"{name}: stride 2; {later}: stride 1 (downsampling moved earlier)"


def applies(graph: Graph, name: str, **params) -> str | None:
    trial = graph.copy()
    infer_shapes(trial, strict=False)
    try:
        _rewrite_on(trial, name)
    except DesignError as e:
        return e.line()
    return None


def rewrite(graph: Graph, name: str) -> tuple[list[str], str]:
    return _rewrite_on(graph, name)


STRATEGY = conv_strategy(
    "stride2",
    "downsample earlier: stride 2 on the chosen conv, stride 1 on the later downsampling layer it makes redundant",
    DEFAULTS,
    applies,
    rewrite,
)
