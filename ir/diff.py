"""Diff of two designs: which nodes were added, removed or changed, and what each change costs.

Matching, in order:
1. by name: a node of A and a node of B with the same name are one node;
2. by structure, for renamed nodes: an unmatched node of B whose inputs come from nodes matched to the
   producers of an unmatched node of A with the same op (same attributes preferred) is that node; then the
   same by consumers; repeated until nothing more matches.
A matched pair is changed when its op, attributes, inputs or sharing group differ (a rename alone counts too).
Per-node deltas are B minus A (an added node counts +B, a removed one -A), so they sum to the totals' difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convstudio.ir.cost import analyze
from convstudio.ir.graph import Graph, make_ref, parse_ref

METRICS = ("params", "macs", "flops")


@dataclass
class NodeDelta:
    """One node of the diff: its name in A and/or B, its status, what changed and the cost deltas (B - A)."""

    status: str  # "added", "removed", "changed" or "same"
    a: str | None
    b: str | None
    op: str
    changes: list[str] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    flops: int = 0

    @property
    def name(self) -> str:
        return self.b or self.a or ""

    def as_dict(self) -> dict:
        return {"status": self.status, "a": self.a, "b": self.b, "op": self.op, "changes": list(self.changes),
                "delta": {m: getattr(self, m) for m in METRICS}}


@dataclass
class DesignDiff:
    """Every node of A and B once, in B's order with removed nodes after the matched node before them in A."""

    nodes: list[NodeDelta]
    matched: dict[str, str]  # A name -> B name
    total_a: dict[str, int]
    total_b: dict[str, int]
    convention: str
    graph_a: Graph | None = field(default=None, repr=False)  # analysed copies: shapes and costs in each node's meta
    graph_b: Graph | None = field(default=None, repr=False)

    def of(self, status: str) -> list[NodeDelta]:
        return [d for d in self.nodes if d.status == status]

    @property
    def delta(self) -> dict[str, int]:
        return {m: self.total_b[m] - self.total_a[m] for m in METRICS}

    def counts(self) -> dict[str, int]:
        return {s: len(self.of(s)) for s in ("added", "removed", "changed", "same")}

    def as_dict(self, include_same: bool = False) -> dict:
        return {
            "convention": self.convention,
            "counts": self.counts(),
            "total_a": dict(self.total_a),
            "total_b": dict(self.total_b),
            "delta": self.delta,
            "nodes": [d.as_dict() for d in self.nodes if include_same or d.status != "same"],
        }


def match_nodes(a: Graph, b: Graph) -> dict[str, str]:
    """A name -> B name for the nodes that are one node in both designs (see the module docstring)."""
    matched = {name: name for name in a.nodes if name in b.nodes}
    back = {v: k for k, v in matched.items()}
    progress = True
    while progress:
        progress = False
        for forward in (True, False):
            for name_b in b.topo_order() if forward else reversed(b.topo_order()):
                if name_b in back:
                    continue
                node_b = b.nodes[name_b]
                key_b = _producers(b, name_b) if forward else _consumers(b, name_b)
                if not key_b or any(n not in back for n, _ in key_b):
                    continue
                wanted = {(back[n], k) for n, k in key_b}
                found = [
                    name_a for name_a, node_a in a.nodes.items()
                    if name_a not in matched and node_a.op == node_b.op
                    and (_producers(a, name_a) if forward else _consumers(a, name_a)) == wanted
                ]
                if not found:
                    continue
                same = [n for n in found if a.nodes[n].resolved == node_b.resolved]
                name_a = (same or found)[0]
                matched[name_a] = name_b
                back[name_b] = name_a
                progress = True
    return matched


def _producers(g: Graph, name: str) -> set[tuple[str, int]]:
    """(producer, input index) of every connected input."""
    return {(parse_ref(ref)[0], i) for i, ref in enumerate(g.nodes[name].inputs) if ref is not None}


def _consumers(g: Graph, name: str) -> set[tuple[str, int]]:
    return set(g.users(name))


def _changes(a: Graph, b: Graph, name_a: str, name_b: str, matched: dict[str, str]) -> list[str]:
    """What differs between two matched nodes, one short phrase each."""
    node_a, node_b = a.nodes[name_a], b.nodes[name_b]
    out = []
    if name_a != name_b:
        out.append(f"renamed from {name_a}")
    if node_a.op != node_b.op:
        out.append(f"op {node_a.op} -> {node_b.op}")
    else:
        ra, rb = node_a.resolved, node_b.resolved
        for key in sorted(set(ra) | set(rb)):
            if ra.get(key) != rb.get(key):
                out.append(f"{key} {_text(ra.get(key))} -> {_text(rb.get(key))}")
    mapped = [None if r is None else _map_ref(r, matched) for r in node_a.inputs]
    if mapped != list(node_b.inputs):
        out.append("inputs " + ", ".join(map(str, node_a.inputs)) + " -> " + ", ".join(map(str, node_b.inputs)))
    if node_a.share != node_b.share:
        out.append(f"share {node_a.share} -> {node_b.share}")
    return out


def _map_ref(ref: str, matched: dict[str, str]) -> str | None:
    name, k = parse_ref(ref)
    return make_ref(matched[name], k) if name in matched else None


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return str(value)


def diff(a: Graph, b: Graph, convention: str = "flops") -> DesignDiff:
    """The diff from design A to design B, with per-node and total cost deltas under `convention`."""
    matched = match_nodes(a, b)
    back = {v: k for k, v in matched.items()}
    copy_a, copy_b = a.copy(), b.copy()
    cost_a = analyze(copy_a, convention, strict=False)
    cost_b = analyze(copy_b, convention, strict=False)
    by_a, by_b = cost_a.by_name(), cost_b.by_name()

    def cost(costs: dict, name: str | None) -> dict[str, int]:
        c = costs.get(name) if name else None
        return {m: (getattr(c, m) if c is not None and not c.error else 0) for m in METRICS}

    def entry(status: str, name_a: str | None, name_b: str | None, changes: list[str]) -> NodeDelta:
        ca, cb = cost(by_a, name_a), cost(by_b, name_b)
        op = b.nodes[name_b].op if name_b else a.nodes[name_a].op
        return NodeDelta(status, name_a, name_b, op, changes, **{m: cb[m] - ca[m] for m in METRICS})

    removed_after: dict[str | None, list[str]] = {}
    anchor = None
    for name_a in a.topo_order():
        if name_a in matched:
            anchor = matched[name_a]
        else:
            removed_after.setdefault(anchor, []).append(name_a)
    nodes = [entry("removed", n, None, []) for n in removed_after.get(None, [])]
    for name_b in b.topo_order():
        if name_b in back:
            changes = _changes(a, b, back[name_b], name_b, matched)
            nodes.append(entry("changed" if changes else "same", back[name_b], name_b, changes))
        else:
            nodes.append(entry("added", None, name_b, []))
        nodes.extend(entry("removed", n, None, []) for n in removed_after.get(name_b, []))

    def totals(report) -> dict[str, int]:
        return {m: getattr(report.total, m) for m in METRICS}

    return DesignDiff(nodes, matched, totals(cost_a), totals(cost_b), convention, copy_a, copy_b)
