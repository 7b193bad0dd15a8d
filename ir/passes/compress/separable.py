"""separable: a conv becomes a depthwise conv (same kernel, stride, padding, dilation) and a 1x1 pointwise conv.

With `bn` a BatchNorm2d follows the depthwise conv; `activation` (a fused-activation name or none) is
applied between the two, as a separate op after BN or as the depthwise conv's fused activation. The
pointwise conv keeps the original name, out_channels, bias and activation.
"""

from __future__ import annotations

from convstudio.ir.graph import Graph
from convstudio.ir.ops.activation import FUSED_ACTIVATIONS
from convstudio.ir.passes.compress.common import check_activation, conv_strategy, in_shape, place_before, spatial_attrs

DEFAULTS = {"bn": True, "activation": "relu"}


def applies(graph: Graph, name: str, **params) -> str | None:
    node = graph[name]
    if node.op != "Conv2d":
        return f"{name} is a {node.op}, not a Conv2d"
    a = node.resolved
    if a["kernel_size"] == (1, 1):
        return f"{name} is already a pointwise (1x1) conv"
    if a["groups"] != 1:
        return f"{name} is already grouped (groups={a['groups']})"
    if in_shape(graph, name)[0] == 1:
        return f"{name} has a single input channel"
    return None


def check(bn: bool, activation: str) -> None:
    check_activation(activation)


def rewrite(graph: Graph, name: str, bn: bool, activation: str) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    cin = in_shape(graph, name)[0]
    dw_attrs = {"out_channels": cin, **spatial_attrs(a), "groups": cin, "bias": not bn}
    if not bn and activation != "none":
        dw_attrs["activation"] = activation
    added = [graph.add("Conv2d", [node.inputs[0]], name=graph.fresh_name(f"{name}_dw"), attrs=dw_attrs).name]
    if bn:
        added.append(graph.add("BatchNorm2d", [added[-1]], name=graph.fresh_name(f"{name}_dw_bn")).name)
        if activation != "none":
            op = FUSED_ACTIVATIONS[activation]
            added.append(graph.add(op, [added[-1]], name=graph.fresh_name(f"{name}_dw_{op.lower()}")).name)
    pw_attrs = {"out_channels": a["out_channels"], "kernel_size": 1, "bias": a["bias"]}
    if a["activation"] != "none":
        pw_attrs.update(activation=a["activation"], activation_param=a["activation_param"])
    graph.set_input(name, 0, added[-1])
    graph.set_attrs(name, pw_attrs)
    node.params = {}
    place_before(graph, added, name)
    return [*added, name], f"{name}: conv -> depthwise {added[0]} + pointwise {name}"


STRATEGY = conv_strategy(
    "separable",
    "a conv becomes depthwise + pointwise (1x1), optionally with BN + activation between",
    DEFAULTS,
    applies,
    rewrite,
    check,
)
