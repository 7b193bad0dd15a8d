"""Pieces of a graph as plain node specs: what copy/paste, undo of delete and palette drops carry.

A spec is a dict with name, op, attrs, inputs, params and share; no Qt here.
"""

from __future__ import annotations

from convstudio.ir.graph import Graph, Node, make_ref, parse_ref
from convstudio.ir.groups import Group, members
from convstudio.ir.ops import registry

STARTER_ATTRS = {
    "Input": {"shape": [3, 32, 32]},
    "Conv2d": {"out_channels": 16, "kernel_size": 3, "padding": 1},
    "ConvTranspose2d": {"out_channels": 16, "kernel_size": 2, "stride": 2},
    "DeformConv2d": {"out_channels": 16, "kernel_size": 3, "padding": 1},
    "Linear": {"out_features": 10},
    "LRN": {"size": 5},
    "MaxPool2d": {"kernel_size": 2},
    "AvgPool2d": {"kernel_size": 2},
    "AdaptiveAvgPool2d": {"output_size": 1},
    "Upsample": {"scale_factor": 2},
    "ChannelShuffle": {"groups": 2},
    "Permute": {"dims": [0, 2, 3, 1]},
}


def starter_attrs(op: str) -> dict:
    """Attributes a freshly dropped node of `op` starts with (its required ones filled in)."""
    opdef = registry.get(op)
    attrs = dict(STARTER_ATTRS.get(op, {}))
    for a in opdef.attrs:
        if a.required and a.name not in attrs:
            attrs[a.name] = int(a.min) if a.min is not None else 1
    return attrs


def starter_inputs(op: str) -> list[None]:
    """Unconnected input slots for a new node: as many as the op needs at least."""
    return [None] * registry.get(op).arity[0]


def node_spec(node: Node) -> dict:
    return {
        "name": node.name,
        "op": node.op,
        "attrs": dict(node.attrs),
        "inputs": list(node.inputs),
        "params": dict(node.params),
        "share": node.share,
    }


def add_spec(graph: Graph, spec: dict) -> Node:
    """Add the node a spec describes (its inputs must already exist)."""
    return graph.add(spec["op"], spec["inputs"], name=spec["name"], attrs=spec["attrs"], params=spec["params"], share=spec["share"])


def extract(graph: Graph, names) -> list[dict]:
    """Specs of `names` in the graph's stable topological order (its insertion order unless edits fed a node from one
    added after it), so each spec's producers come before it; inputs from outside the selection become unconnected."""
    chosen = set(names)
    specs = []
    for name in graph.topo_order():
        if name not in chosen:
            continue
        spec = node_spec(graph.nodes[name])
        spec["inputs"] = [ref if ref is not None and parse_ref(ref)[0] in chosen else None for ref in spec["inputs"]]
        specs.append(spec)
    return specs


def enclosed_groups(groups: dict[str, Group], names) -> dict[str, Group]:
    """Copies of the groups whose members all lie in `names` (what a copy of those nodes carries), in design order;
    a parent that does not come along becomes None, so a copied group nests only in copied groups."""
    chosen = set(names)
    inside = {name for name in groups if (held := members(groups, name)) and chosen.issuperset(held)}
    return {name: Group(name, list(g.nodes), g.parent if g.parent in inside else None, g.collapsed) for name, g in groups.items() if name in inside}


def with_fresh_names(graph: Graph, specs: list[dict]) -> list[dict]:
    """Copies of `specs` renamed so no name clashes with `graph` or each other; edges follow."""
    taken = set(graph.nodes)
    mapping = {}
    for spec in specs:
        base = spec["name"]
        new = base
        i = 1
        while new in taken:
            new = f"{base}_{i}"
            i += 1
        taken.add(new)
        mapping[base] = new
    out = []
    for spec in specs:
        inputs = []
        for ref in spec["inputs"]:
            if ref is None:
                inputs.append(None)
            else:
                src, k = parse_ref(ref)
                inputs.append(make_ref(mapping[src], k) if src in mapping else None)
        out.append({**spec, "name": mapping[spec["name"]], "inputs": inputs, "attrs": dict(spec["attrs"])})
    return out
