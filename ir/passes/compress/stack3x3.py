"""stack3x3: a kxk convolution (k odd >= 5, stride 1) becomes (k-1)/2 stacked 3x3 convolutions.

The stack has the same receptive field and output shape: the conv's padding p (per dimension) is
spread as padding 1 on the first p convs of the stack and 0 on the rest. The intermediate convs have
`width` output channels (0 = the conv's out_channels) and apply `activation` (as in VGG); the last conv
keeps the original name, out_channels, bias and activation.
"""

from __future__ import annotations

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.passes.compress.common import check_activation, conv_strategy, place_before

DEFAULTS = {"width": 0, "activation": "relu"}


def applies(graph: Graph, name: str, **params) -> str | None:
    node = graph[name]
    if node.op != "Conv2d":
        return f"{name} is a {node.op}, not a Conv2d"
    a = node.resolved
    kh, kw = a["kernel_size"]
    if kh != kw:
        return f"kernel {kh}x{kw} is not square"
    if kh < 5 or kh % 2 == 0:
        return f"kernel {kh}x{kw} is not odd and at least 5"
    if a["stride"] != (1, 1):
        return f"stride {a['stride'][0]}x{a['stride'][1]} is not 1"
    if a["dilation"] != (1, 1):
        return "the conv is dilated"
    if a["groups"] != 1:
        return f"the conv is grouped (groups={a['groups']})"
    layers = (kh - 1) // 2
    for pads in conv_pads(a):
        if pads[0] != pads[1] or pads[0] > layers:
            return f"padding {list(pads)} cannot be spread over {layers} 3x3 convs"
    return None


def check(width: int, activation: str) -> None:
    check_activation(activation)
    if width < 0:
        raise DesignError(f"width must be 0 (the conv's out_channels) or positive, got {width}", "--param width")


def rewrite(graph: Graph, name: str, width: int, activation: str) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    layers = (a["kernel_size"][0] - 1) // 2
    (ph, _), (pw, _) = conv_pads(a)
    mid = width or a["out_channels"]
    ref = node.inputs[0]
    added = []
    for i in range(layers - 1):
        attrs = {"out_channels": mid, "kernel_size": 3, "padding": [int(i < ph), int(i < pw)], "bias": a["bias"], "activation": activation}
        ref = graph.add("Conv2d", [ref], name=graph.fresh_name(f"{name}_3x3_{i + 1}"), attrs=attrs).name
        added.append(ref)
    last = layers - 1
    attrs = {"out_channels": a["out_channels"], "kernel_size": 3, "padding": [int(last < ph), int(last < pw)], "bias": a["bias"]}
    if a["activation"] != "none":
        attrs.update(activation=a["activation"], activation_param=a["activation_param"])
    graph.set_input(name, 0, ref)
    graph.set_attrs(name, attrs)
    node.params = {}
    place_before(graph, added, name)
    k = a["kernel_size"][0]
    return [*added, name], f"{name}: {k}x{k} conv -> {layers} stacked 3x3 convs ({', '.join([*added, name])})"


STRATEGY = conv_strategy(
    "stack3x3",
    "a kxk conv (k odd >= 5, stride 1) becomes (k-1)/2 stacked 3x3 convs with the same receptive field",
    DEFAULTS,
    applies,
    rewrite,
    check,
)
