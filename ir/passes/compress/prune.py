"""prune: structured channel pruning over dependency groups, keeping the trained weights of the channels kept.

Rules (see channel_groups for how groups are found):
- a group's channel importance is the sum over its members: L1 norm of each filter producing the channel
  (convs, depthwise convs, linears) with `importance=l1`, |BN scale| with `importance=bn`;
- each group keeps its floor((1 - ratio)·n) most important channels (at least 1; ties keep the first); a group
  a grouped conv splits into blocks keeps that many per block;
- kept channels keep their weights, sliced from the trained ones; a design without weights keeps the first channels;
- `nodes` limits pruning to the groups those layers belong to; a blocked group is skipped with its reason.
"""

from __future__ import annotations

import math

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.base import PassResult
from convstudio.ir.passes.compress.channel_groups import NORM_OPS, ChannelGraph, Group
from convstudio.ir.passes.compress.common import Strategy, check_params, finish
from convstudio.ir.shapes import infer_shapes

DEFAULTS = {"ratio": 0.5, "importance": "l1"}
IMPORTANCE = ("l1", "bn")


def check(ratio: float, importance: str) -> None:
    if not (0 <= ratio < 1 and math.isfinite(ratio)):
        raise DesignError(f"ratio must be at least 0 and below 1, got {ratio}", "--param ratio")
    if importance not in IMPORTANCE:
        raise DesignError(f"importance must be one of {', '.join(IMPORTANCE)}, got '{importance}'", "--param importance")


def kept_count(n: int, ratio: float) -> int:
    """Channels a group of `n` keeps at `ratio` (floor, as Torch-Pruning, at least 1)."""
    return max(1, int(n * (1 - ratio) + 1e-9))


def _target(group: Group, ratio: float) -> int:
    """Channels the group keeps: a multiple of the blocks a grouped conv splits it into."""
    blocks = 1 if group.blocks is None else int(group.blocks.max()) + 1
    return kept_count(len(group.channels) // blocks, ratio) * blocks


def _skip_reason(graph: Graph, group: Group, ratio: float, importance: str) -> str | None:
    if group.reason:
        return group.reason
    if not group.members:
        return f"{group.name} has no layer to prune"
    if importance == "bn" and not any(graph.nodes[m].op in NORM_OPS for m in group.members):
        return f"no BatchNorm scales the channels of {group.name} (importance=bn)"
    n = len(group.channels)
    if _target(group, ratio) == n:
        return f"ratio {ratio:g} keeps all {n} channels"
    return None


def _groups_of(groups: list[Group], name: str) -> list[Group]:
    """The groups of a layer's output channels: the one it creates, else those it passes on (BN, depthwise conv)."""
    return [grp for grp in groups if name in grp.sources] or [grp for grp in groups if name in grp.members]


def _choose(graph: Graph, groups: list[Group], name: str, ratio: float, importance: str) -> tuple[list[Group], str | None]:
    """The groups `name` selects that can be pruned, or the reason there are none."""
    mine = _groups_of(groups, name)
    if not mine:
        return [], f"{name} is a {graph.nodes[name].op}, not a layer with prunable channels"
    reasons = [_skip_reason(graph, grp, ratio, importance) for grp in mine]
    chosen = [grp for grp, reason in zip(mine, reasons) if reason is None]
    return chosen, None if chosen else reasons[0]


def applies(graph: Graph, name: str, ratio: float = DEFAULTS["ratio"], importance: str = DEFAULTS["importance"]) -> str | None:
    infer_shapes(graph, strict=True)
    return _choose(graph, ChannelGraph(graph, importance).groups(), graph[name].name, ratio, importance)[1]


def apply(graph: Graph, nodes: list[str] | None = None, **given) -> PassResult:
    """Prune the dependency groups of `nodes` (None = every group that can be pruned) at `ratio`."""
    params = check_params("prune", DEFAULTS, given)
    check(**params)
    ratio, importance = params["ratio"], params["importance"]
    g = graph.copy()
    infer_shapes(g, strict=True)
    channels = ChannelGraph(g, importance)
    groups = channels.groups()
    declined, report, summary = [], [], []
    if nodes is None:
        targets = [grp for grp in groups if grp.members]
    else:
        targets = []
        for name in dict.fromkeys(nodes):
            g[name]  # an unknown name is a DesignError
            chosen, reason = _choose(g, groups, name, ratio, importance)
            if reason:
                declined.append({"node": name, "reason": reason})
            targets.extend(grp for grp in chosen if grp not in targets)
        report.extend(f"declined {d['node']}: {d['reason']}" for d in declined)
    removed: set[int] = set()
    for group in targets:
        n = len(group.channels)
        reason = _skip_reason(g, group, ratio, importance)
        if reason:
            summary.append({"group": group.name, "members": group.members, "before": n, "after": n, "skipped": reason})
            report.append(f"skipped {group.name}: {reason}")
            continue
        k = _target(group, ratio)
        removed.update(group.removed(k))
        summary.append({"group": group.name, "members": group.members, "before": n, "after": k, "skipped": None})
        report.append(f"{group.name}: {n} -> {k} channels ({', '.join(group.members)})")
    changed = channels.remove(removed)
    infer_shapes(g, strict=True)
    result = finish(g, changed, declined, report)
    result.data["groups"] = summary
    return result


STRATEGY = Strategy(
    "prune",
    "remove the least important channels (L1 of filters or BN scale) of coupled layers together, keeping the trained weights",
    DEFAULTS,
    applies,
    apply,
    keeps_weights=True,
)
