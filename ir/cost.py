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

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.ops.registry import numel
from convstudio.ir.shapes import infer_one, input_shapes_of

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
    ins = input_shapes_of(graph, node, shapes)
    opdef = node.opdef
    a = node.resolved
    terms = opdef.cost(a, ins, outs)
    params = sum(numel(s) for s in opdef.params(a, ins).values()) if owner else 0
    act = 0 if opdef.alias else sum(_bytes(s) for s in outs)
    key = "macs" if convention == "torchvision" else convention
    value = {"torchvision": terms.macs, "fvcore": terms.fvcore, "flops": terms.flops}[convention]
    return NodeCost(name, node.op, outs, params, terms.macs, value, act, terms.formulas.get(key, ""))


def _bytes(shape) -> int:
    """Size of one float32 activation of `shape`."""
    return numel(shape) * BYTES_PER_ELEMENT


@dataclass
class Buffers:
    """Activation buffers of a schedule: size, first step and last step each is live."""

    owner: dict[str, list[int]]  # node -> ids of the buffers it allocates (views allocate none)
    sizes: list[int]
    born: list[int]
    last_use: list[int]
    steps: int
    live: list[int] = field(default_factory=list)  # bytes live at each step, after its allocations

    def tally(self) -> None:
        allocs = [0] * (self.steps + 1)
        frees = [0] * (self.steps + 1)
        for size, start, stop in zip(self.sizes, self.born, self.last_use):
            allocs[start] += size
            frees[stop] += size
        self.live = []
        running = 0
        for step in range(self.steps):
            running += allocs[step]
            self.live.append(running)
            running -= frees[step]

    def resize(self, sid: int, size: int) -> None:
        """Change one buffer's size, updating the steps where it is live."""
        delta = size - self.sizes[sid]
        self.sizes[sid] = size
        live = self.live
        for step in range(self.born[sid], min(self.last_use[sid], self.steps - 1) + 1):
            live[step] += delta

    def peak(self) -> int:
        return max(self.live, default=0)


def schedule_buffers(graph: Graph, order: list[str], costs: dict[str, NodeCost]) -> Buffers:
    """Assign buffers over the schedule `order`; each is freed after its last use.

    Alias ops (views: Identity, Flatten, Dropout, ChannelSplit, Output) share their input's buffer;
    buffers read by Output nodes stay live to the end.
    """
    nodes = graph.nodes
    end = len(order)
    values: dict[str, list[int]] = {}  # node -> buffer id of each output
    buffers = Buffers({}, [], [], [], end)
    for step, name in enumerate(order):
        c = costs.get(name)
        if c is None or c.shapes is None:
            continue
        node = nodes[name]
        keep = end if node.op == "Output" else step
        first = None
        for ref in node.inputs:
            if ref is None:
                continue
            src, idx = parse_ref(ref)
            ids = values.get(src)
            if ids is None or idx >= len(ids):
                continue
            sid = ids[idx]
            if first is None:
                first = sid
            if buffers.last_use[sid] < keep:
                buffers.last_use[sid] = keep
        if first is not None and node.opdef.alias:
            values[name] = [first] * len(c.shapes)
            continue
        ids = []
        for shape in c.shapes:
            ids.append(len(buffers.sizes))
            buffers.sizes.append(_bytes(shape))
            buffers.born.append(step)
            buffers.last_use.append(step)
        values[name] = buffers.owner[name] = ids
    buffers.tally()
    return buffers


def peak_activation_bytes(graph: Graph, order: list[str], costs: dict[str, NodeCost]) -> int:
    """Peak of live activation bytes over the schedule `order` (see `schedule_buffers`)."""
    return schedule_buffers(graph, order, costs).peak()


class Analyzer:
    """Shapes and cost of a graph, kept up to date incrementally.

    It listens to the graph's edit events; `refresh()` recomputes only the nodes whose attributes or
    inputs changed and the consumers whose input shapes changed as a result. Totals are kept as running
    sums, and the buffer schedule for peak memory is rebuilt only when the structure changes or a node
    gains or loses its shapes; otherwise only the resized buffers are updated.
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
        self._position: dict[str, int] = {}
        self._owner_map: dict[str, bool] = {}
        self._inputs: list[str] = []
        self._sums = [0, 0, 0, 0]  # per-sample params, macs, flops, activation bytes
        self._buffers: Buffers | None = None
        self._peak = 0
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
            self._count(self.costs.pop(info["name"], None), -1)
            self.errors.pop(info["name"], None)
            self._structure = True
        elif event == "rename":
            self._full = True
        elif event == "reorder":
            self._structure = True

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
        structure = self._structure or self._full
        if structure:
            self._order = graph.topo_order()
            self._position = {n: i for i, n in enumerate(self._order)}
            self._owner_map = self._owners()
            self._inputs = graph.inputs
            self._structure = False
        owners = self._owner_map
        recomputed = []
        resized: list[str] = []
        if self._full:
            self.shapes.clear()
            self.costs.clear()
            self.errors.clear()
            self._sums = [0, 0, 0, 0]
            for name in self._order:
                self._compute(name, owners)
            recomputed = list(self._order)
        else:
            position = self._position
            heap = [(position[n], n) for n in self._dirty if n in graph.nodes]
            heapq.heapify(heap)
            seen = {n for _, n in heap}
            while heap:
                _, name = heapq.heappop(heap)
                old = self.shapes.get(name)
                old_error = graph.nodes[name].meta.get("error")
                self._compute(name, owners)
                recomputed.append(name)
                new = self.shapes.get(name)
                if new != old:
                    resized.append(name)
                    structure = structure or old is None or new is None or len(old) != len(new)
                if new != old or graph.nodes[name].meta.get("error") != old_error or old is None:
                    for consumer, _ in graph.users(name):
                        if consumer not in seen:
                            seen.add(consumer)
                            heapq.heappush(heap, (position[consumer], consumer))
            for members in graph.share_groups().values() if structure else ():
                for m in members:
                    if m not in seen and self.costs.get(m) and (self.costs[m].params != 0) != (owners[m]):
                        self._compute(m, owners)
        self._full = False
        self._dirty.clear()
        self.recomputed = recomputed
        if structure or self._buffers is None:
            self._buffers = schedule_buffers(graph, self._order, self.costs)
            self._peak = self._buffers.peak()
        elif resized:
            self._resize(resized)
            self._peak = self._buffers.peak()
        self.report = self._report()
        return self.report

    def _resize(self, names: list[str]) -> None:
        """Update the sizes of the buffers that `names` allocate (their shapes changed, the schedule did not)."""
        buffers = self._buffers
        for name in names:
            for sid, shape in zip(buffers.owner.get(name, ()), self.shapes[name]):
                buffers.resize(sid, _bytes(shape))

    def _owners(self) -> dict[str, bool]:
        """Whether each node counts its parameters: all but the later members of a sharing group."""
        owners = dict.fromkeys(self.graph.nodes, True)
        for members in self.graph.share_groups().values():
            owners.update(dict.fromkeys(members[1:], False))
        return owners

    def _count(self, cost: NodeCost | None, sign: int) -> None:
        if cost is not None:
            sums = self._sums
            sums[0] += sign * cost.params
            sums[1] += sign * cost.macs
            sums[2] += sign * cost.flops
            sums[3] += sign * cost.activation_bytes

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
        self._count(self.costs.get(name), -1)
        self._count(cost, 1)
        self.costs[name] = cost

    def _report(self) -> CostReport:
        scale = self.batch or 1
        costs = self.costs
        if scale == 1:
            nodes = [costs[name] for name in self._order]
        else:
            nodes = [
                NodeCost(c.name, c.op, c.shapes, c.params, c.macs * scale, c.flops * scale, c.activation_bytes * scale,
                         f"{scale}·({c.formula})" if c.flops else c.formula, c.error)
                for c in (costs[name] for name in self._order)
            ]
        params, macs, flops, act = self._sums
        total = Totals(params, macs * scale, flops * scale, act * scale, self._peak * scale)
        errors = [costs[name].error for name in self._order if name in self.errors] if self.errors else []
        inputs = {n: list(self.shapes[n][0]) for n in self._inputs if self.shapes.get(n)}
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
