"""bottleneck: a kxk conv becomes 1x1 reduce -> kxk -> 1x1 expand (ResNet bottleneck).

The middle width is out_channels // `reduction` (at least 1); the reduce and kxk convs apply ReLU;
the expand conv keeps the original name, out_channels, bias and activation. Declined where it would
not lower the multiply-accumulates.
"""

from __future__ import annotations

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compress.common import conv_strategy, in_shape, place_before, spatial_attrs

DEFAULTS = {"reduction": 4}


def check(reduction: int) -> None:
    if reduction < 2:
        raise DesignError(f"reduction must be at least 2, got {reduction}", "--param reduction")


def _mid(out_channels: int, reduction: int) -> int:
    check(reduction)
    return max(1, out_channels // reduction)


def applies(graph: Graph, name: str, reduction: int = DEFAULTS["reduction"], **params) -> str | None:
    node = graph[name]
    if node.op != "Conv2d":
        return f"{name} is a {node.op}, not a Conv2d"
    a = node.resolved
    kh, kw = a["kernel_size"]
    if (kh, kw) == (1, 1):
        return f"{name} is a 1x1 conv"
    if a["groups"] != 1:
        return f"{name} is grouped (groups={a['groups']})"
    cin, cout, mid = in_shape(graph, name)[0], a["out_channels"], _mid(a["out_channels"], reduction)
    before = cin * cout * kh * kw
    after = cin * mid + mid * mid * kh * kw + mid * cout
    if after >= before:
        return f"a {mid}-channel bottleneck would not be cheaper ({cin} in, {cout} out)"
    return None


def rewrite(graph: Graph, name: str, reduction: int) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    mid = _mid(a["out_channels"], reduction)
    reduce = graph.add("Conv2d", [node.inputs[0]], name=graph.fresh_name(f"{name}_reduce"),
                       attrs={"out_channels": mid, "kernel_size": 1, "bias": a["bias"], "activation": "relu"}).name
    middle = {"out_channels": mid, **spatial_attrs(a), "bias": a["bias"], "activation": "relu"}
    kxk = graph.add("Conv2d", [reduce], name=graph.fresh_name(f"{name}_kxk"), attrs=middle).name
    expand = {"out_channels": a["out_channels"], "kernel_size": 1, "bias": a["bias"]}
    if a["activation"] != "none":
        expand.update(activation=a["activation"], activation_param=a["activation_param"])
    graph.set_input(name, 0, kxk)
    graph.set_attrs(name, expand)
    node.params = {}
    place_before(graph, [reduce, kxk], name)
    return [reduce, kxk, name], f"{name}: conv -> 1x1 reduce {reduce} ({mid} channels) + {kxk} + 1x1 expand {name}"


STRATEGY = conv_strategy(
    "bottleneck",
    "a kxk conv becomes 1x1 reduce -> kxk -> 1x1 expand",
    DEFAULTS,
    applies,
    rewrite,
    check,
)
