"""Groups: named, nestable sets of nodes (a template's stages and blocks, or a user's selection).

A group lists the nodes it holds directly and names its parent group; its members are its own nodes
plus those of its child groups. Rules:
- a node sits in at most one group, or in a group and some of that group's ancestors;
- parents exist and never form a cycle;
- a group that loses its last node and child is dropped (an edit or pass removed its nodes).
The graph keeps groups in step with renames and erasures; passes that replace a node put the new
nodes in the replaced node's group (`adopt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from convstudio.ir.errors import DesignError

GROUP_FIELDS = frozenset(("name", "nodes", "parent", "collapsed"))


@dataclass
class Group:
    """One group: its own nodes, its parent group's name and whether the designer shows it folded."""

    name: str
    nodes: list[str] = field(default_factory=list)
    parent: str | None = None
    collapsed: bool = False

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"name": self.name, "nodes": list(self.nodes)}
        if self.parent:
            data["parent"] = self.parent
        if self.collapsed:
            data["collapsed"] = True
        return data


def copy_groups(groups: dict[str, Group]) -> dict[str, Group]:
    return {k: Group(g.name, list(g.nodes), g.parent, g.collapsed) for k, g in groups.items()}


def children(groups: dict[str, Group], name: str | None) -> list[str]:
    """Groups whose parent is `name` (None: the top-level groups), in order."""
    return [g.name for g in groups.values() if g.parent == name]


def ancestors(groups: dict[str, Group], name: str) -> list[str]:
    """`name`'s parent, grandparent, ... (nearest first)."""
    out = []
    parent = groups[name].parent
    while parent is not None and parent not in out:
        out.append(parent)
        parent = groups[parent].parent if parent in groups else None
    return out


def depth(groups: dict[str, Group], name: str) -> int:
    return len(ancestors(groups, name))


def members(groups: dict[str, Group], name: str) -> list[str]:
    """Every node of group `name` and of its descendants, each once, in group order."""
    out: dict[str, None] = {}
    stack = [name]
    while stack:
        current = stack.pop(0)
        out.update(dict.fromkeys(groups[current].nodes))
        stack.extend(children(groups, current))
    return list(out)


def group_of(groups: dict[str, Group], node: str) -> str | None:
    """The innermost group holding `node`, or None."""
    best, best_depth = None, -1
    for g in groups.values():
        if node in g.nodes:
            d = depth(groups, g.name)
            if d > best_depth:
                best, best_depth = g.name, d
    return best


def owner_map(groups: dict[str, Group]) -> dict[str, str]:
    """node -> innermost group, for every grouped node."""
    depths = {name: depth(groups, name) for name in groups}
    out: dict[str, str] = {}
    for g in groups.values():
        for node in g.nodes:
            if node not in out or depths[g.name] > depths[out[node]]:
                out[node] = g.name
    return out


def visible_owner(groups: dict[str, Group], node: str, owners: dict[str, str] | None = None) -> str | None:
    """The outermost collapsed group holding `node` (what the designer draws in its place), or None."""
    owners = owner_map(groups) if owners is None else owners
    group = owners.get(node)
    if group is None:
        return None
    chain = [group, *ancestors(groups, group)]
    folded = [g for g in chain if groups[g].collapsed]
    return folded[-1] if folded else None


def rename_node(groups: dict[str, Group], old: str, new: str) -> None:
    for g in groups.values():
        if old in g.nodes:
            g.nodes[g.nodes.index(old)] = new


def drop_node(groups: dict[str, Group], node: str) -> None:
    """Take `node` out of every group, then drop groups left with no nodes and no children."""
    touched = [g for g in groups.values() if node in g.nodes]
    for g in touched:
        g.nodes.remove(node)
    for g in touched:
        prune_empty(groups, g.name)


def prune_empty(groups: dict[str, Group], name: str | None) -> None:
    """Drop group `name` when it is empty, and then its ancestors that became empty."""
    while name is not None and name in groups and not groups[name].nodes and not children(groups, name):
        parent = groups[name].parent
        del groups[name]
        name = parent


def adopt(groups: dict[str, Group], new_nodes: list[str], home: str | None) -> None:
    """Put those of `new_nodes` in no group yet into group `home` (the group of the node they replace or extend)."""
    if home is None or home not in groups:
        return
    grouped = owner_map(groups)
    groups[home].nodes.extend(n for n in new_nodes if n not in grouped)


def check_groups(data: Any, node_names, where: str = "field groups") -> dict[str, Group]:
    """Validate a design file's `groups` list and build the groups; errors name the group."""
    if not isinstance(data, list):
        raise DesignError("groups must be a list of objects {name, nodes, parent, collapsed}", where)
    groups: dict[str, Group] = {}
    for i, entry in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise DesignError("each group must be an object", at)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DesignError("group needs a non-empty string name", f"{at}.name")
        at = f"group '{name}' ({where}[{i}])"
        for key in entry:
            if key not in GROUP_FIELDS:
                raise DesignError(f"unknown group field '{key}'", at)
        if name in groups:
            raise DesignError(f"two groups are named '{name}'", at)
        nodes = entry.get("nodes", [])
        if not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)):
            raise DesignError("nodes must be a list of node names", at)
        for n in nodes:
            if n not in node_names:
                raise DesignError(f"group names unknown node '{n}'", at)
        if len(set(nodes)) != len(nodes):
            raise DesignError("group lists a node twice", at)
        parent = entry.get("parent")
        if not (parent is None or isinstance(parent, str)):
            raise DesignError("parent must be a group name", at)
        collapsed = entry.get("collapsed", False)
        if not isinstance(collapsed, bool):
            raise DesignError("collapsed must be true or false", at)
        groups[name] = Group(name, list(nodes), parent, collapsed)
    check_structure(groups)
    return groups


def check_structure(groups: dict[str, Group]) -> None:
    """Parents exist and form no cycle; no node sits in two groups unless one is the other's ancestor."""
    for g in groups.values():
        if g.parent is not None and g.parent not in groups:
            raise DesignError(f"parent '{g.parent}' is no group", f"group '{g.name}'")
    for g in groups.values():
        seen = {g.name}
        parent = g.parent
        while parent is not None:
            if parent in seen:
                raise DesignError(f"groups form a cycle through '{parent}'", f"group '{g.name}'")
            seen.add(parent)
            parent = groups[parent].parent
    holder: dict[str, str] = {}
    for g in groups.values():
        for n in g.nodes:
            other = holder.get(n)
            if other is None:
                holder[n] = g.name
            elif other not in ancestors(groups, g.name) and g.name not in ancestors(groups, other):
                raise DesignError(f"node '{n}' is also in group '{other}', which is neither inside nor around this one", f"group '{g.name}'")
            elif other in ancestors(groups, g.name):
                holder[n] = g.name


@dataclass
class GroupSummary:
    """What a folded group shows: its layer count, the shapes entering and leaving it, and its summed cost."""

    name: str
    layers: int
    in_shapes: list
    out_shapes: list
    params: int = 0
    macs: int = 0
    flops: int = 0
    activation_bytes: int = 0
    latency_ms: float | None = None  # summed where every member has a latency, else None
    errors: int = 0


def _split(ref: str) -> tuple[str, int]:
    """'node:k' -> ('node', k); a bare name is output 0 (graph.parse_ref without the import cycle)."""
    name, sep, index = ref.rpartition(":")
    return (name, int(index)) if sep else (ref, 0)


def _shape(graph, ref: str):
    name, k = _split(ref)
    shapes = graph.nodes[name].meta.get("shapes") if name in graph.nodes else None
    return list(shapes[k]) if shapes and k < len(shapes) else None


def summarize(graph, groups: dict[str, Group], name: str, costs) -> GroupSummary:
    """Group `name`'s summary from `costs` (node name -> NodeCost) and the shapes in the nodes' meta."""
    inside = set(members(groups, name))
    ins: dict[str, None] = {}
    outs: dict[str, None] = {}
    for m in inside:
        node = graph.nodes[m]
        for ref in node.inputs:
            if ref is not None and _split(ref)[0] not in inside:
                ins[ref] = None
        for consumer, index in graph.users(m):
            if consumer not in inside:
                outs[graph.nodes[consumer].inputs[index]] = None
    s = GroupSummary(name, sum(1 for m in inside if graph.nodes[m].op not in ("Input", "Output")),
                     [_shape(graph, r) for r in ins], [_shape(graph, r) for r in outs])
    latencies = []
    for m in inside:
        c = costs.get(m)
        if c is None or c.error:
            s.errors += 1
            continue
        s.params += c.params
        s.macs += c.macs
        s.flops += c.flops
        s.activation_bytes += c.activation_bytes
        latencies.append(c.latency_ms)
    if latencies and all(ms is not None for ms in latencies):
        s.latency_ms = sum(latencies)
    return s


def outermost(groups: dict[str, Group], node: str, owners: dict[str, str] | None = None) -> str | None:
    """The top-level group holding `node`, or None."""
    owners = owner_map(groups) if owners is None else owners
    group = owners.get(node)
    return None if group is None else ([group, *ancestors(groups, group)])[-1]


def rollup(graph, groups: dict[str, Group], rows: list) -> list:
    """Per-node cost rows (NodeCost, in schedule order) with each top-level group's rows folded into one row,
    placed where its first member was; rows of ungrouped nodes stay as they are."""
    owners = owner_map(groups)
    costs = {c.name: c for c in rows}
    out, done = [], set()
    for c in rows:
        top = outermost(groups, c.name, owners)
        if top is None:
            out.append(c)
        elif top not in done:
            done.add(top)
            s = summarize(graph, groups, top, costs)
            shapes = [sh for sh in s.out_shapes if sh is not None] or None
            out.append(replace(c, name=top, op=f"group of {s.layers}", shapes=shapes, params=s.params, macs=s.macs, flops=s.flops,
                               activation_bytes=s.activation_bytes, formula=f"sum over the {s.layers} layers of group {top}",
                               error=f"{s.errors} layer(s) without shapes" if s.errors else None, latency_ms=s.latency_ms))
    return out
