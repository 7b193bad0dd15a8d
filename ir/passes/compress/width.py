"""width: multiply the channel counts of convs and linears by `alpha`, keeping the network consistent.

Channel counts are tracked as sums of channel classes: a conv or linear starts a class, ops that keep
channels pass their input's class on, Add/Mul join the classes of their inputs (residuals keep equal
widths), Concat adds them up, ChannelSplit divides them. A class is scaled to round(alpha·C) rounded
to a multiple of the groups that divide it (grouped convs, channel shuffles, splits). Input channels
and the final classifier (a conv or linear with no conv or linear after it) keep their width; a
depthwise conv follows its input. With trained weights, a narrowed dependency group (see channel_groups) keeps
its most important channels (L1 of filters) and their weights; weights that still do not fit are dropped (fresh init later).
"""

from __future__ import annotations

import math
from fractions import Fraction

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, make_ref, parse_ref
from convstudio.ir.passes.base import PassResult
from convstudio.ir.passes.compress.channel_groups import ChannelGraph
from convstudio.ir.passes.compress.common import Strategy, check_params, finish, in_shape, params_fit, shapes_of
from convstudio.ir.shapes import infer_shapes

DEFAULTS = {"alpha": 0.5}
LAYERS = ("Conv2d", "ConvTranspose2d", "DeformConv2d", "Linear")
CHANNEL_ATTRS = {"Conv2d": "in_channels", "ConvTranspose2d": "in_channels", "DeformConv2d": "in_channels",
                 "Linear": "in_features", "BatchNorm2d": "num_features", "BatchNorm1d": "num_features"}


def _is_depthwise(graph: Graph, name: str) -> bool:
    node = graph.nodes[name]
    g = node.resolved.get("groups", 1)
    return node.op == "Conv2d" and g > 1 and g == in_shape(graph, name)[0]


def _is_classifier(graph: Graph, name: str) -> bool:
    return not any(graph.nodes[d].op in LAYERS for d in graph.descendants(name))


def applies(graph: Graph, name: str, **params) -> str | None:
    node = graph[name]
    if node.op not in LAYERS:
        return f"{name} is a {node.op}, not a conv or linear layer"
    if _is_classifier(graph, name):
        return f"{name} is the final classifier"
    if _is_depthwise(graph, name):
        return f"{name} is depthwise: it follows its input's width"
    return None


class _Classes:
    """Union-find over channel classes with a base width, a fixed flag and a required divisor."""

    def __init__(self):
        self.parent: list[int] = []
        self.base: list[int] = []
        self.fixed: list[bool] = []
        self.divisor: list[int] = []

    def new(self, base: int, fixed: bool, divisor: int = 1) -> dict:
        self.parent.append(len(self.parent))
        self.base.append(base)
        self.fixed.append(fixed)
        self.divisor.append(divisor)
        return {len(self.parent) - 1: Fraction(1)}

    def find(self, c: int) -> int:
        while self.parent[c] != c:
            self.parent[c] = self.parent[self.parent[c]]
            c = self.parent[c]
        return c

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b]
            self.divisor[a] = math.lcm(self.divisor[a], self.divisor[b])

    def require(self, expr: dict | None, divisor: int) -> None:
        for c in expr or {}:
            r = self.find(c)
            self.divisor[r] = math.lcm(self.divisor[r], divisor)

    def fix(self, expr: dict | None) -> None:
        for c in expr or {}:
            self.fixed[self.find(c)] = True

    def width(self, expr: dict, alpha: float) -> int:
        total = Fraction(0)
        for c, frac in expr.items():
            r = self.find(c)
            d = self.divisor[r]
            scaled = self.base[r] if self.fixed[r] else max(d, round(alpha * self.base[r] / d) * d)
            total += frac * scaled
        if total.denominator != 1:
            raise DesignError(f"a channel split leaves a fractional width ({float(total):g})")
        return int(total)


def _scaled(expr: dict | None, factor: Fraction) -> dict | None:
    return None if expr is None else {c: f * factor for c, f in expr.items()}


def _track(graph: Graph, scalable: set[str]) -> tuple[_Classes, dict, dict]:
    """Channel expressions of every value and of each layer's output."""
    classes = _Classes()
    exprs: dict[str, dict | None] = {}
    outs: dict[str, dict] = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        shapes = node.meta["shapes"]
        ins = [exprs.get(make_ref(*parse_ref(r))) for r in node.inputs]
        in_shapes = [shapes_of(graph, r) for r in node.inputs]
        first = ins[0] if ins else None
        a = node.resolved
        if node.op == "Input":
            out = classes.new(shapes[0][0], True) if shapes[0] else None
        elif node.op in LAYERS:
            channels = shapes[0][-1] if node.op == "Linear" else shapes[0][0]
            groups = a.get("groups", 1)
            if node.op == "Linear" and len(in_shapes[0]) > 1:
                classes.fix(first)
            if node.op == "Conv2d" and _is_depthwise(graph, name):
                out = _scaled(first, Fraction(channels, in_shapes[0][0]))
            else:
                if groups > 1:
                    classes.require(first, groups)
                out = classes.new(channels, name not in scalable, groups)
            outs[name] = out
            for extra in ins[1:]:
                classes.fix(extra)
        elif node.op in ("Add", "Mul"):
            joined = [e for e, s in zip(ins, in_shapes) if e is not None and s and s[0] != 1]
            single = [e for e in joined if len(e) == 1 and next(iter(e.values())) == 1]
            for e in single[1:]:
                classes.union(next(iter(single[0])), next(iter(e)))
            out = joined[0] if joined else first
        elif node.op == "Concat":
            dim = a["dim"] + len(shapes[0]) + 1 if a["dim"] < 0 else a["dim"]
            if dim == 1 and all(e is not None for e in ins):
                out = {}
                for e in ins:
                    for c, f in e.items():
                        out[c] = out.get(c, Fraction(0)) + f
            else:
                out = first
        elif node.op == "ChannelSplit":
            if a["sections"]:
                classes.fix(first)
                for k, s in enumerate(shapes):
                    exprs[make_ref(name, k)] = classes.new(s[0], True)
                continue
            classes.require(first, a["parts"])
            for k in range(len(shapes)):
                exprs[make_ref(name, k)] = _scaled(first, Fraction(1, a["parts"]))
            continue
        elif node.op == "ChannelShuffle":
            classes.require(first, a["groups"])
            out = first
        elif node.op == "Flatten":
            out = None
        elif len(node.inputs) == 1 and len(shapes) == 1 and shapes[0] and in_shapes[0] and shapes[0][0] == in_shapes[0][0]:
            out = first
        else:
            for e in ins:
                classes.fix(e)
            for k, s in enumerate(shapes):
                exprs[make_ref(name, k)] = classes.new(s[0], True) if s else None
            continue
        exprs[name] = out
    return classes, exprs, outs


def apply(graph: Graph, nodes: list[str] | None = None, **given) -> PassResult:
    """Scale the chosen layers (None = every conv/linear where it applies) by alpha."""
    alpha = check_params("width", DEFAULTS, given)["alpha"]
    if not (alpha > 0 and math.isfinite(alpha)):
        raise DesignError(f"alpha must be a positive number, got {alpha}", "--param alpha")
    g = graph.copy()
    infer_shapes(g, strict=True)
    declined, report = [], []
    candidates = [n for n in g.topo_order() if g.nodes[n].op in LAYERS] if nodes is None else list(nodes)
    scalable = set()
    for name in candidates:
        reason = applies(g, name)
        if reason:
            declined.append({"node": name, "reason": reason})
            report.append(f"declined {name}: {reason}")
        else:
            scalable.add(name)
    classes, exprs, outs = _track(g, scalable)
    old = {n: g.nodes[n].meta["shapes"] for n in g.nodes}
    explicit = {n: CHANNEL_ATTRS[g.nodes[n].op] for n in g.nodes
                if g.nodes[n].op in CHANNEL_ATTRS and g.nodes[n].attrs.get(CHANNEL_ATTRS[g.nodes[n].op]) is not None}
    try:
        for name, expr in outs.items():
            node = g.nodes[name]
            width = classes.width(expr, alpha)
            key = "out_features" if node.op == "Linear" else "out_channels"
            attrs = dict(node.attrs, **{key: width})
            if node.op == "Conv2d" and _is_depthwise(g, name):
                attrs["groups"] = classes.width(exprs[node.inputs[0]], alpha)
            attrs.pop(explicit.get(name, ""), None)
            g.set_attrs(name, attrs)
        for name, key in explicit.items():
            g.set_attr(name, key, None)
        infer_shapes(g, strict=True)
    except DesignError as e:
        raise DesignError(f"width multiplier {alpha:g} cannot keep the shapes consistent: {e.what}", e.where) from None
    for name, key in explicit.items():
        src = g.nodes[name].inputs[0]
        g.set_attr(name, key, shapes_of(g, src)[-1 if key == "in_features" else 0])
    infer_shapes(g, strict=True)
    changed = [n for n in g.topo_order() if g.nodes[n].meta["shapes"] != old[n] and g.nodes[n].op in LAYERS]
    for name in changed:
        before, after = old[name][0], g.nodes[name].meta["shapes"][0]
        report.append(f"{name}: {before[0] if len(before) == 3 else before[-1]} -> {after[0] if len(after) == 3 else after[-1]} channels")
    carried = _carry_important_channels(graph, g)
    if carried:
        report.append(f"kept the most important channels' weights (L1) for {', '.join(carried)}")
    return finish(g, changed, declined, report)


def _carry_important_channels(original: Graph, scaled: Graph) -> list[str]:
    """Give the layers of `scaled` whose weights no longer fit the slices of their trained weights that keep each
    dependency group's most important channels (L1 of filters); returns the layers given them."""
    if not any(node.params for node in original.nodes.values()):
        return []
    work = original.copy()
    infer_shapes(work, strict=True)
    channels = ChannelGraph(work, "l1")
    removed: set[int] = set()
    for group in channels.groups():
        widths = {shapes_of(scaled, src)[0] for src in group.sources if work.nodes[src].op in LAYERS}
        if group.reason or len(widths) != 1 or (k := widths.pop()) >= len(group.channels):
            continue
        removed.update(group.removed(k))
    channels.remove(removed)
    infer_shapes(work, strict=False)
    carried = []
    for name, node in scaled.nodes.items():
        sliced = work.nodes[name].params if name in work.nodes else {}
        if sliced and not (node.params and params_fit(scaled, name, node.params)) and params_fit(scaled, name, sliced):
            node.params = dict(sliced)
            carried.append(name)
    return carried


STRATEGY = Strategy(
    "width",
    "channel multiplier alpha across the network (not the classifier), keeping residual and concat shapes consistent "
    "and the weights of the most important channels",
    DEFAULTS,
    applies,
    apply,
    keeps_weights=True,
)
