"""group_shuffle: a 1x1 conv becomes a grouped 1x1 conv followed by a channel shuffle (ShuffleNet).

`groups` must divide the input and output channels. The grouped conv keeps the original name; the
shuffle takes over its consumers.
"""

from __future__ import annotations

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compress.common import conv_strategy, in_shape, place_after

DEFAULTS = {"groups": 4}


def check(groups: int) -> None:
    if groups < 2:
        raise DesignError(f"groups must be at least 2, got {groups}", "--param groups")


def applies(graph: Graph, name: str, groups: int = DEFAULTS["groups"], **params) -> str | None:
    node = graph[name]
    if node.op != "Conv2d":
        return f"{name} is a {node.op}, not a Conv2d"
    a = node.resolved
    if a["kernel_size"] != (1, 1):
        return f"{name} is not a 1x1 conv (kernel {a['kernel_size'][0]}x{a['kernel_size'][1]})"
    if a["groups"] != 1:
        return f"{name} is already grouped (groups={a['groups']})"
    cin, cout = in_shape(graph, name)[0], a["out_channels"]
    if cin % groups or cout % groups:
        return f"groups {groups} does not divide {name}'s channels ({cin} in, {cout} out)"
    return None


def rewrite(graph: Graph, name: str, groups: int) -> tuple[list[str], str]:
    node = graph.nodes[name]
    graph.set_attr(name, "groups", groups)
    node.params = {}
    shuffle = graph.add("ChannelShuffle", [name], name=graph.fresh_name(f"{name}_shuffle"), attrs={"groups": groups}).name
    graph.replace_all_uses(name, shuffle, exclude=[shuffle])
    place_after(graph, [shuffle], name)
    return [name, shuffle], f"{name}: 1x1 conv -> grouped 1x1 (groups={groups}) + channel shuffle {shuffle}"


STRATEGY = conv_strategy(
    "group_shuffle",
    "a 1x1 conv becomes a grouped 1x1 conv followed by a channel shuffle",
    DEFAULTS,
    applies,
    rewrite,
    check,
)
