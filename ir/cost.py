"""Cost analysis: params, MACs, FLOPs, activation bytes per node; totals and peak activation memory.

Conventions (docs/cost.md):
- ``torchvision``: the reported ``flops`` equal MACs of conv/linear layers (torchvision's "GFLOPS").
- ``fvcore``: what fvcore's FlopCountAnalysis counts (conv/linear MACs, eval BN, adaptive pools, upsampling).
- ``flops``: all arithmetic, 2 per MAC plus bias, normalization, activations, pooling, elementwise.

Counts are per sample unless a batch size is given. ``Analyzer`` keeps per-node results and
recomputes only what an edit affects.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ir.errors import DesignError
from ir.graph import Graph, parse_ref
from ir.shapes import infer_one

CONVENTIONS = ("flops", "torchvision", "fvcore")
BYTES_PER_ELEMENT = 4  # float32 activations


@dataclass
class NodeCost:
    """One node's cost. `flops` is under the report's convention; `formula` is the one it used."""

    name: str
    op: str
    shapes: list | None
    params: int = 0
    macs: int = 0
    flops: int = 0
    activation_bytes: int = 0
    formula: str = ""
    error: str | None = None

    def as_dict(self, batch: int | None) -> dict:
        shape = None
        if self.shapes:
            lead = batch if batch is not None else "N"
            shape = [lead, *self.shapes[0]] if len(self.shapes) == 1 else [[lead, *s] for s in self.shapes]
        return {
            "name": self.name,
            "op": self.op,
            "output_shape": shape,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "formula": self.formula,
        }


@dataclass
class Totals:
    params: int = 0
    macs: int = 0
    flops: int = 0
    activation_bytes: int = 0
    peak_activation_bytes: int = 0

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
        }


@dataclass
class CostReport:
    convention: str
    batch: int | None
    input_shapes: dict[str, list]
    nodes: list[NodeCost]
    total: Totals
    errors: list[str] = field(default_factory=list)

    def by_name(self) -> dict[str, NodeCost]:
        return {n.name: n for n in self.nodes}

    def as_dict(self) -> dict:
        lead = self.batch if self.batch is not None else "N"
        return {
            "convention": self.convention,
            "input_shapes": {k: [lead, *v] for k, v in self.input_shapes.items()},
            "total": self.total.as_dict(),
            "nodes": [n.as_dict(self.batch) for n in self.nodes],
        }


def node_cost(graph: Graph, name: str, shapes: dict, convention: str, owner: bool) -> NodeCost:
    """Per-sample cost of one node whose input and output shapes are known."""
    node = graph.nodes[name]
    outs = shapes.get(name)
    if outs is None:
        return NodeCost(name, node.op, None, error=node.meta.get("error"))
    ins = [shapes[parse_ref(r)[0]][parse_ref(r)[1]] for r in node.inputs]
    opdef = node.opdef
    a = node.resolved
    terms = opdef.cost(a, ins, outs)
    params = sum(_numel(s) for s in opdef.params(a, ins).values()) if owner else 0
    act = 0 if opdef.alias else sum(_numel(s) for s in outs) * BYTES_PER_ELEMENT
    key = "macs" if convention == "torchvision" else convention
    value = {"torchvision": terms.macs, "fvcore": terms.fvcore, "flops": terms.flops}[convention]
    return NodeCost(name, node.op, outs, params, terms.macs, value, act, terms.formulas.get(key, ""))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def peak_activation_bytes(graph: Graph, order: list[str], costs: dict[str, NodeCost]) -> int:
    """Peak of live activation bytes over the schedule `order`, freeing each buffer after its last use.

    Alias ops (views: Identity, Flatten, Dropout, ChannelSplit, Output) share their input's buffer;
    buffers read by Output nodes stay live to the end.
    """
    storage: dict[tuple[str, int], int] = {}
    sizes: list[int] = []
    last_use: list[int] = []
    end = len(order)
    for step, name in enumerate(order):
        node = graph.nodes[name]
        c = costs.get(name)
        if c is None or c.shapes is None:
            continue
        ids = []
        for ref in node.inputs:
            sid = storage.get(parse_ref(ref)) if ref is not None else None
            if sid is not None:
                last_use[sid] = end if node.op == "Output" else max(last_use[sid], step)
                ids.append(sid)
        if node.opdef.alias and ids:
            for k in range(len(c.shapes)):
                storage[(name, k)] = ids[0]
        else:
            for k, s in enumerate(c.shapes):
                storage[(name, k)] = len(sizes)
                sizes.append(_numel(s) * BYTES_PER_ELEMENT)
                last_use.append(step)
    frees: dict[int, int] = {}
    for sid, step in enumerate(last_use):
        frees[step] = frees.get(step, 0) + sizes[sid]
    allocs: dict[int, int] = {}
    first = {}
    for (name, _), sid in storage.items():
        first.setdefault(sid, name)
    index = {name: i for i, name in enumerate(order)}
    for sid, name in first.items():
        allocs[index[name]] = allocs.get(index[name], 0) + sizes[sid]
    live = peak = 0
    for step in range(end):
        live += allocs.get(step, 0)
        peak = max(peak, live)
        live -= frees.get(step, 0)
    return peak


class Analyzer:
    """Shapes and cost of a graph, kept up to date incrementally.

    It listens to the graph's edit events; `refresh()` recomputes only the nodes whose attributes or
    inputs changed and the consumers whose input shapes changed as a result.
    """

    def __init__(self, graph: Graph, convention: str = "flops", batch: int | None = None):
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
        self.graph = graph
        self.convention = convention
        self.batch = batch
        self.shapes: dict[str, list | None] = {}
        self.costs: dict[str, NodeCost] = {}
        self.errors: dict[str, DesignError] = {}
        self._dirty: set[str] = set()
        self._full = True
        self._structure = True
        self._order: list[str] = []
        self.report: CostReport | None = None
        self.recomputed: list[str] = []
        graph.subscribe(self._on_event)

    def close(self) -> None:
        self.graph.unsubscribe(self._on_event)

    def _on_event(self, event: str, info: dict) -> None:
        if event in ("attr", "add"):
            self._dirty.add(info["name"])
            self._structure = self._structure or event == "add" or info.get("key") == "share"
        elif event == "input":
            self._dirty.add(info["name"])
            self._structure = True
        elif event == "erase":
            self.shapes.pop(info["name"], None)
            self.costs.pop(info["name"], None)
            self.errors.pop(info["name"], None)
            self._structure = True
        elif event == "rename":
            self._full = True

    def set_convention(self, convention: str, batch: int | None = None) -> CostReport:
        self.convention = convention
        self.batch = batch
        self._full = True
        return self.refresh()

    def invalidate(self) -> None:
        self._full = True

    def refresh(self) -> CostReport:
        """Bring shapes and costs up to date and return the report."""
        graph = self.graph
        if self._structure or self._full:
            self._order = graph.topo_order()
            self._structure = False
        if self._full:
            todo = list(self._order)
            self.shapes.clear()
            self.costs.clear()
            self.errors.clear()
            propagate = False
        else:
            position = {n: i for i, n in enumerate(self._order)}
            todo = sorted((n for n in self._dirty if n in graph.nodes), key=position.__getitem__)
            propagate = True
        self._full = False
        self._dirty.clear()
        owners = self._owners()
        recomputed = []
        if propagate:
            position = {n: i for i, n in enumerate(self._order)}
            heap = [(position[n], n) for n in todo]
            heapq.heapify(heap)
            seen = set(todo)
            while heap:
                _, name = heapq.heappop(heap)
                old = self.shapes.get(name)
                old_error = graph.nodes[name].meta.get("error")
                self._compute(name, owners)
                recomputed.append(name)
                if self.shapes.get(name) != old or graph.nodes[name].meta.get("error") != old_error or old is None:
                    for consumer, _ in graph.users(name):
                        if consumer not in seen:
                            seen.add(consumer)
                            heapq.heappush(heap, (position[consumer], consumer))
            for members in graph.share_groups().values():
                for m in members:
                    if m not in seen and self.costs.get(m) and (self.costs[m].params != 0) != (owners[m]):
                        self._compute(m, owners)
        else:
            for name in todo:
                self._compute(name, owners)
                recomputed.append(name)
        self.recomputed = recomputed
        self.report = self._report()
        return self.report

    def _owners(self) -> dict[str, bool]:
        owners = {}
        seen_groups = set()
        for name, node in self.graph.nodes.items():
            if node.share:
                owners[name] = node.share not in seen_groups
                seen_groups.add(node.share)
            else:
                owners[name] = True
        return owners

    def _compute(self, name: str, owners: dict[str, bool]) -> None:
        node = self.graph.nodes[name]
        result, error = infer_one(self.graph, node, self.shapes)
        self.shapes[name] = result
        node.meta["shapes"] = result
        node.meta["error"] = error.line() if error else None
        if error is None:
            self.errors.pop(name, None)
        else:
            self.errors[name] = error
        cost = node_cost(self.graph, name, self.shapes, self.convention, owners[name])
        node.meta["cost"] = cost
        self.costs[name] = cost

    def _report(self) -> CostReport:
        scale = self.batch or 1
        nodes = []
        total = Totals()
        errors = []
        for name in self._order:
            c = self.costs[name]
            if scale != 1:
                c = NodeCost(c.name, c.op, c.shapes, c.params, c.macs * scale, c.flops * scale, c.activation_bytes * scale, c.formula, c.error)
            nodes.append(c)
            total.params += c.params
            total.macs += c.macs
            total.flops += c.flops
            total.activation_bytes += c.activation_bytes
            if c.error:
                errors.append(c.error)
        total.peak_activation_bytes = peak_activation_bytes(self.graph, self._order, self.costs) * scale
        inputs = {n: list(self.shapes[n][0]) for n in self.graph.inputs if self.shapes.get(n)}
        return CostReport(self.convention, self.batch, inputs, nodes, total, errors)


def analyze(graph: Graph, convention: str = "flops", batch: int | None = None, strict: bool = True) -> CostReport:
    """Shapes and cost of every node. Strict mode raises the first shape error in schedule order."""
    analyzer = Analyzer(graph, convention, batch)
    try:
        report = analyzer.refresh()
    finally:
        analyzer.close()
    if strict and analyzer.errors:
        first = next(n for n in analyzer._order if n in analyzer.errors)
        raise analyzer.errors[first]
    return report
