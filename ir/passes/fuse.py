"""Fusion for inference: Conv2d/ConvTranspose2d/Linear + BatchNorm (+ activation) into one node.

Rules (each match keeps the conv's name; a pattern that cannot fuse is reported with the reason):
- Conv2d + BatchNorm2d, ConvTranspose2d + BatchNorm2d, Linear + BatchNorm1d on (N, C) values:
  the BN's scale gamma / sqrt(var + eps) multiplies the weight's output channels and the bias
  becomes (bias - mean)·scale + beta (a bias appears where the conv had none).
- then an activation in FUSED_ACTIVATIONS becomes the fused node's `activation` attribute;
  a conv followed directly by such an activation fuses too.
- convs that share parameters fuse only together: every member followed by the same pattern,
  its BNs sharing one group, so the fused members still share one set of folded weights.
- declined: the conv (or BN) output has several consumers or is a graph output, BN without
  running statistics, the conv already applies an activation, a sharing group whose members
  differ, BN that does not follow a conv (e.g. BN before the conv), activations that cannot fuse.
Without weights the structure still fuses (the fused node then has no params), so the fused cost
can be previewed.
"""

from __future__ import annotations

import numpy as np

from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.ops.activation import FUSED_ACTIVATIONS
from convstudio.ir.passes.base import PassResult
from convstudio.ir.shapes import infer_shapes

BN_AFTER = {"Conv2d": "BatchNorm2d", "ConvTranspose2d": "BatchNorm2d", "Linear": "BatchNorm1d"}
ACTIVATION_ATTR = {op: attr for attr, op in FUSED_ACTIVATIONS.items()}
ACTIVATION_PARAM = {"LeakyReLU": "negative_slope", "ELU": "alpha"}
BN_OPS = ("BatchNorm2d", "BatchNorm1d")


def fuse(graph: Graph) -> PassResult:
    """Fold BN and activations into the preceding conv/linear; pure (returns a new graph)."""
    g = graph.copy()
    infer_shapes(g, strict=False)
    fused: list[dict] = []
    declined: list[dict] = []
    claimed: set[str] = set()
    done: set[str] = set()
    notes: list[str] = []
    groups = g.share_groups()  # once, not per node; fusion only erases nodes, so members are filtered to those left
    for name in g.topo_order():
        node = g.nodes.get(name)
        if node is None or node.op not in BN_AFTER or name in done:
            continue
        members = _members(g, groups, node.share) if node.share else [name]
        done.update(members)
        found: list[dict] = []
        matches = [_match(g, m, found, claimed) for m in members]
        reason = _group_reason(g, groups, members, matches, found) if node.share else None
        if reason:
            declined.append({"nodes": members, "reason": reason})
            claimed.update(n for m in matches if m for n in m if n)
            continue
        declined.extend(found)
        for member, match in zip(members, matches):
            if match is not None:
                had_weights = bool(g.nodes[member].params)
                fused.append(_rewrite(g, member, *match))
                claimed.update(n for n in match if n)
                if had_weights and not g.nodes[member].params:
                    notes.append(f"{member}: weights dropped ({match[0]} has no parameters or running statistics to fold)")
        for member in members[1:]:
            g.nodes[member].params = g.nodes[members[0]].params
    _report_stray_bns(graph, g, declined, claimed)
    report = [f"fused {' + '.join(f['nodes'])} -> {f['into']} ({f['pattern']})" for f in fused]
    report += [f"declined {' + '.join(d['nodes'])}: {d['reason']}" for d in declined] + notes
    return PassResult(g, bool(fused), report, {"fused": fused, "declined": declined})


def _single_consumer(g: Graph, name: str) -> tuple[str | None, str | None]:
    """(the one consumer of `name`, None) or (None, reason it has not exactly one plain consumer)."""
    users = sorted({c for c, _ in g.users(name)})
    outputs = [c for c in users if g.nodes[c].op == "Output"]
    if outputs and len(users) > 1:
        return None, f"{name} output is a graph output ({outputs[0]})"
    if len(users) > 1:
        return None, f"{name} output has {len(users)} consumers"
    return (users[0], None) if users else (None, None)


def _is_activation(g: Graph, name: str) -> bool:
    return g.nodes[name].opdef.category == "activation"


def _match(g: Graph, conv: str, declined: list, claimed: set) -> tuple[str | None, str | None] | None:
    """The (bn, activation) names to fold into `conv`, or None; declines are appended with reasons."""
    node = g.nodes[conv]
    nxt, why = _single_consumer(g, conv)
    if why:
        followers = [c for c, _ in g.users(conv) if g.nodes[c].op in BN_OPS or _is_activation(g, c)]
        if followers:
            declined.append({"nodes": [conv, *sorted(set(followers))], "reason": why})
            claimed.update(c for c in followers if g.nodes[c].op in BN_OPS)
        return None
    if nxt is None:
        return None
    bn = None
    if g.nodes[nxt].op in BN_OPS:
        reason = _bn_reason(g, conv, nxt)
        if reason:
            declined.append({"nodes": [conv, nxt], "reason": reason})
            claimed.add(nxt)
            return None
        bn = nxt
        nxt, why = _single_consumer(g, bn)
        if why:
            acts = [c for c, _ in g.users(bn) if _is_activation(g, c)]
            if acts:
                declined.append({"nodes": [bn, *sorted(set(acts))], "reason": why + ", the activation stays separate"})
        if nxt is None or why:
            return bn, None
    if not _is_activation(g, nxt):
        return (bn, None) if bn else None
    act = g.nodes[nxt]
    if act.op not in ACTIVATION_ATTR:
        declined.append({"nodes": [bn or conv, nxt], "reason": f"activation {act.op} ({nxt}) cannot fuse into {conv}"})
        return (bn, None) if bn else None
    if node.resolved["activation"] != "none":
        declined.append({"nodes": [conv, nxt], "reason": f"{conv} already applies {node.resolved['activation']}"})
        return (bn, None) if bn else None
    return bn, nxt


def _signature(g: Graph, name: str | None) -> tuple | None:
    node = g.nodes[name] if name else None
    return None if node is None else (node.op, sorted(node.resolved.items()), node.share)


def _members(g: Graph, groups: dict[str, list[str]], group: str) -> list[str]:
    """The members of sharing group `group` still in `g`, from `groups` (the groups before fusion erased any node)."""
    return [m for m in groups.get(group, ()) if m in g.nodes]


def _group_reason(g: Graph, groups: dict[str, list[str]], members: list[str], matches: list, found: list[dict]) -> str | None:
    """Why a sharing group of convs cannot fuse as one (every member must fold the same shared BN)."""
    group = g.nodes[members[0]].share
    if all(m is None for m in matches) and not found:
        return None
    if found:
        return f"{found[0]['reason']} (so the sharing group '{group}' cannot fuse)"
    if any(m is None for m in matches):
        return f"members of sharing group '{group}' are not all followed by the same pattern"
    for k in range(2):
        if len({repr(_signature(g, m[k])) for m in matches}) > 1:
            return f"members of sharing group '{group}' are followed by different layers"
    bns = [m[0] for m in matches if m[0]]
    if bns:
        bn_group = g.nodes[bns[0]].share
        if not bn_group or sorted(_members(g, groups, bn_group)) != sorted(bns):
            return f"{bns[0]} has its own statistics while {members[0]} shares parameters (group '{group}')"
    return None


def _bn_reason(g: Graph, conv: str, bn: str) -> str | None:
    """Why BN `bn` cannot fold into `conv`, or None."""
    node, b = g.nodes[conv], g.nodes[bn]
    if b.op != BN_AFTER[node.op]:
        return f"{b.op} ({bn}) does not fold into {node.op} ({conv})"
    if not b.resolved["track_running_stats"]:
        return f"BN without running statistics ({bn} has track_running_stats false)"
    if node.resolved["activation"] != "none":
        return f"{conv} applies {node.resolved['activation']} before {bn}"
    if b.share and not node.share:
        return f"{bn} shares parameters (group '{b.share}') but {conv} does not"
    shapes = node.meta.get("shapes")
    if node.op == "Linear" and (not shapes or len(shapes[0]) != 1):
        return f"{conv} output is not (N, C), so {bn} normalizes another dimension"
    return None


def _rewrite(g: Graph, conv: str, bn: str | None, act: str | None) -> dict:
    """Fold `bn` and `act` into `conv` in place on the working copy `g`."""
    node = g.nodes[conv]
    attrs = dict(node.attrs)
    pattern = [node.op]
    if bn:
        bn_node = g.nodes[bn]
        pattern.append(bn_node.op)
        node.params = _fold_bn(node.op, node.resolved, node.params, bn_node.resolved, bn_node.params)
        attrs["bias"] = True
    if act:
        act_node = g.nodes[act]
        pattern.append(act_node.op)
        attrs["activation"] = ACTIVATION_ATTR[act_node.op]
        if act_node.op in ACTIVATION_PARAM:
            attrs["activation_param"] = act_node.resolved[ACTIVATION_PARAM[act_node.op]]
    last = act or bn
    g.replace_all_uses(last, conv)
    for name in (act, bn):
        if name:
            g.erase(name)
    g.set_attrs(conv, attrs)
    nodes = [n for n in (conv, bn, act) if n]
    return {"pattern": "+".join(pattern), "nodes": nodes, "into": conv}


def _fold_bn(op: str, a: dict, params: dict, bn_attrs: dict, bn_params: dict) -> dict:
    """Conv/linear parameters with the eval-mode BN folded in; {} when either side lacks weights."""
    needed = {"running_mean", "running_var"} | ({"weight", "bias"} if bn_attrs["affine"] else set())
    if "weight" not in params or not needed <= set(bn_params):
        return {}
    mean = bn_params["running_mean"].astype(np.float64)
    var = bn_params["running_var"].astype(np.float64)
    gamma = bn_params["weight"].astype(np.float64) if bn_attrs["affine"] else np.ones_like(mean)
    beta = bn_params["bias"].astype(np.float64) if bn_attrs["affine"] else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn_attrs["eps"])
    weight = params["weight"].astype(np.float64)
    if op == "ConvTranspose2d":
        # weight is (Cin, Cout/g, kh, kw): output channel = group·(Cout/g) + j
        groups = a["groups"]
        cin, cout_g = weight.shape[:2]
        shaped = weight.reshape(groups, cin // groups, cout_g, *weight.shape[2:])
        weight = (shaped * scale.reshape(groups, 1, cout_g, 1, 1)).reshape(weight.shape)
    else:
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    bias = params["bias"].astype(np.float64) if "bias" in params else np.zeros_like(mean)
    return {"weight": weight.astype(np.float32), "bias": ((bias - mean) * scale + beta).astype(np.float32)}


def _report_stray_bns(original: Graph, g: Graph, declined: list, claimed: set) -> None:
    """Explain every BN left unfused in `g` that no earlier decline covers, by its neighbours in `original`."""
    for name in g.topo_order():
        if g.nodes[name].op not in BN_OPS or name in claimed:
            continue
        ref = original.nodes[name].inputs[0]
        if ref is None:  # work in progress in the designer
            declined.append({"nodes": [name], "reason": f"{name} has no input yet; BN folds only into a Conv2d, ConvTranspose2d or Linear right before it"})
            continue
        src = parse_ref(ref)[0]
        src_op = original.nodes[src].op
        feeds_conv = _feeds_conv(original, name)
        if feeds_conv:
            reason = f"BN before the conv is not a pattern ({name} follows {src_op} {src} and feeds {feeds_conv})"
        else:
            reason = f"{name} follows {src_op} {src}; BN folds only into a Conv2d, ConvTranspose2d or Linear right before it"
        declined.append({"nodes": [name], "reason": reason})


def _feeds_conv(g: Graph, name: str) -> str | None:
    """The conv reached from `name` through activations only, if any."""
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for consumer, _ in g.users(current):
            op = g.nodes[consumer].op
            if op in BN_AFTER:
                return consumer
            if _is_activation(g, consumer):
                frontier.append(consumer)
    return None
