"""Design comparison: totals side by side, a breakdown by op category, deltas against the first design."""

from __future__ import annotations

from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, parse_ref

CATEGORIES = ("conv", "depthwise", "pointwise", "linear", "normalization", "activation", "pooling", "elementwise", "other")
METRICS = ("nodes", "params", "macs", "flops", "activation_bytes", "peak_activation_bytes")
BREAKDOWN_METRICS = ("params", "macs", "flops")
PLAIN_CATEGORIES = ("linear", "normalization", "activation", "pooling", "elementwise")


def compare_category(graph: Graph, node: Node) -> str:
    """The comparison category of a node whose shapes are inferred (depthwise and 1x1 split out of conv)."""
    category = node.opdef.category
    if node.op == "Conv2d":
        a = node.resolved
        src, idx = parse_ref(node.inputs[0])
        in_channels = graph.nodes[src].meta["shapes"][idx][0]
        if a["groups"] > 1 and a["groups"] == in_channels:
            return "depthwise"
        if a["kernel_size"] == (1, 1):
            return "pointwise"
        return "conv"
    if category == "conv":
        return "conv"
    return category if category in PLAIN_CATEGORIES else "other"


def summarize(graph: Graph, convention: str = "flops") -> dict:
    """Totals and the per-category breakdown of one graph (its shapes must infer)."""
    report = analyze(graph, convention)
    breakdown = {c: dict.fromkeys(BREAKDOWN_METRICS, 0) for c in CATEGORIES}
    for cost in report.nodes:
        row = breakdown[compare_category(graph, graph.nodes[cost.name])]
        row["params"] += cost.params
        row["macs"] += cost.macs
        row["flops"] += cost.flops
    totals = {"nodes": graph.layer_count(), **report.total.as_dict()}
    return {"totals": totals, "breakdown": breakdown}


def delta(base: float, value: float) -> dict:
    """Absolute and relative (%) change from `base` to `value`; pct is None when base is 0."""
    return {"abs": value - base, "pct": (value - base) / base * 100 if base else None}


def compare(graphs: dict[str, Graph], convention: str = "flops") -> dict:
    """Totals side by side, category breakdown and deltas (absolute and %) against the first graph."""
    if not graphs:
        raise DesignError("nothing to compare", "designs")
    labels = list(graphs)
    summaries = {}
    for label, graph in graphs.items():
        try:
            summaries[label] = summarize(graph, convention)
        except DesignError as e:
            raise e.at(f"design '{label}'") from None
    first = summaries[labels[0]]
    deltas = {}
    for label in labels:
        s = summaries[label]
        deltas[label] = {
            "totals": {m: delta(first["totals"][m], s["totals"][m]) for m in METRICS},
            "breakdown": {
                c: {m: delta(first["breakdown"][c][m], s["breakdown"][c][m]) for m in BREAKDOWN_METRICS} for c in CATEGORIES
            },
        }
    return {
        "convention": convention,
        "labels": labels,
        "categories": list(CATEGORIES),
        "totals": {label: summaries[label]["totals"] for label in labels},
        "breakdown": {label: summaries[label]["breakdown"] for label in labels},
        "deltas": deltas,
    }


def before_after(before: Graph, after: Graph, convention: str = "flops") -> dict:
    """Totals of two versions of a design and the delta (absolute and %) of each metric."""
    first, second = summarize(before, convention)["totals"], summarize(after, convention)["totals"]
    return {
        "convention": convention,
        "before": first,
        "after": second,
        "delta": {m: delta(first[m], second[m]) for m in METRICS},
    }
