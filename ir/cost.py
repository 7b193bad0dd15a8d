"""Cost analysis: params, MACs, FLOPs, activation bytes per node; totals and peak activation memory.

Conventions (docs/cost.md):
- ``torchvision``: the reported ``flops`` equal MACs of conv/linear layers (torchvision's "GFLOPS").
- ``fvcore``: what fvcore's FlopCountAnalysis counts (conv/linear MACs, eval BN, adaptive pools, upsampling).
- ``flops``: all arithmetic, 2 per MAC plus bias, normalization, activations, pooling, elementwise.

Counts are per sample unless a batch size is given. ``Analyzer`` keeps per-node results and
recomputes only what an edit affects.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, parse_ref, paused_gc
from convstudio.ir.latency import LatencyTable, dependents, fused
from convstudio.ir.ops.registry import OpCost, numel
from convstudio.ir.shapes import infer_with_inputs, input_shapes_of, share_error, shared_param_errors

CONVENTIONS = ("flops", "torchvision", "fvcore")
LATENCY = "latency"  # full FLOPs plus latency_ms predicted from a calibrated table (ir.latency); needs that table
BYTES_PER_ELEMENT = 4  # float32 activations
EXACT_FLOAT = 2**53  # float64 sums of whole numbers below this are exact
MEMO_SIZE = 65536  # distinct node signatures the analyzer remembers before it starts over


@dataclass(slots=True)
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
    latency_ms: float | None = None  # predicted at the report's batch (latency convention only)

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
            **({"latency_ms": self.latency_ms} if self.latency_ms is not None else {}),
        }


@dataclass
class Totals:
    params: int = 0
    macs: int = 0
    flops: int = 0
    activation_bytes: int = 0
    peak_activation_bytes: int | None = 0  # None: not planned (an analysis with memory=False)
    latency_ms: float | None = None

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            **({"latency_ms": self.latency_ms} if self.latency_ms is not None else {}),
        }


EXACT_ONE = 1 << 1074  # 2**-1074 is the finest step of a float: every float is a whole number of them


def exact(x: float) -> int:
    """`x` as a whole number of 2**-1074 steps. Sums of these are exact, in any order, and a sum divided by EXACT_ONE
    rounds once (int / int is correctly rounded): running latency totals updated by deltas never drift."""
    num, den = x.as_integer_ratio()
    return num * (EXACT_ONE // den)


class NodeCosts(Sequence):
    """The per-node costs of one refresh in schedule order, scaled by the batch as they are read.

    A view of the analyzer's results, not a copy: a refresh costs the same whatever the graph's size.
    It stays valid until the analyzer refreshes again; reading it after that raises RuntimeError. It holds
    its analyzer weakly (the analyzer keeps its latest report, and a cycle would keep a whole analysis alive
    until a full garbage collection); once the analyzer is gone the view can no longer go out of date.
    """

    def __init__(self, analyzer: Analyzer, scale: int):
        self._analyzer = weakref.ref(analyzer)
        self._generation = analyzer.generation
        self._order = analyzer._order  # None after a refresh that kept the order: read from the graph when first needed
        self._graph = analyzer.graph
        self._costs = analyzer.costs
        self._scale = scale

    @property
    def _names(self) -> list[str]:
        if self._order is None:
            analyzer = self._analyzer()
            self._order = analyzer.order if analyzer is not None else self._graph.topo_order()
        return self._order

    def _check_current(self) -> None:
        analyzer = self._analyzer()
        if analyzer is not None and analyzer.generation != self._generation:
            raise RuntimeError("this cost report is out of date: its analyzer has refreshed since; use the latest report")

    def __len__(self) -> int:
        return len(self._costs) if self._order is None else len(self._order)

    def __getitem__(self, index):
        self._check_current()
        if isinstance(index, slice):
            return [_scaled(self._costs[name], self._scale) for name in self._names[index]]
        return _scaled(self._costs[self._names[index]], self._scale)

    def __iter__(self):
        self._check_current()
        costs = map(self._costs.__getitem__, self._names)
        return costs if self._scale == 1 else (_scaled(c, self._scale) for c in costs)

    def get(self, name: str) -> NodeCost | None:
        """The cost of node `name`, or None when the graph has no such node."""
        self._check_current()
        cost = self._costs.get(name)
        return None if cost is None else _scaled(cost, self._scale)


def _scaled(c: NodeCost, scale: int) -> NodeCost:
    """`c` for `scale` samples (parameters do not scale)."""
    if scale == 1:
        return c
    formula = f"{scale}·({c.formula})" if c.flops else c.formula
    return NodeCost(c.name, c.op, c.shapes, c.params, c.macs * scale, c.flops * scale, c.activation_bytes * scale, formula, c.error, c.latency_ms)


@dataclass
class CostReport:
    """Totals, per-node costs in schedule order (`nodes`, a sequence) and the error lines of one analysis."""

    convention: str
    batch: int | None
    input_shapes: dict[str, list]
    nodes: Sequence[NodeCost]
    total: Totals
    errors: list[str] = field(default_factory=list)
    share_errors: list[str] = field(default_factory=list)  # members of sharing groups that cannot use the owner's parameters

    def by_name(self) -> dict[str, NodeCost]:
        return {n.name: n for n in self.nodes}

    def as_dict(self, top: int | None = None) -> dict:
        """The report as JSON data: every node in schedule order, or with `top` the `top` nodes with the most
        FLOPs (then MACs, then parameters; ties in schedule order)."""
        lead = self.batch if self.batch is not None else "N"
        nodes = self.nodes
        if top is not None:
            nodes = list(nodes)
            if len(nodes) > top:  # only nodes with at least the top-th most FLOPs can be among the top: sort those alone
                floor = heapq.nlargest(top, map(operator.attrgetter("flops"), nodes))[-1]
                nodes = [n for n in nodes if n.flops >= floor]
            nodes = heapq.nlargest(top, nodes, key=operator.attrgetter("flops", "macs", "params"))  # stable: ties keep schedule order
        return {
            "convention": self.convention,
            "input_shapes": {k: [lead, *v] for k, v in self.input_shapes.items()},
            "total": self.total.as_dict(),
            "nodes": [n.as_dict(self.batch) for n in nodes],
        }


def node_cost(graph: Graph, name: str, shapes: dict, convention: str, owner: bool, ins: list | None = None) -> NodeCost:
    """Per-sample cost of one node whose input and output shapes are known (`ins`: its input shapes, when at hand)."""
    node = graph.nodes[name]
    outs = shapes.get(name)
    if outs is None:
        return NodeCost(name, node.op, None, error=node.meta.get("error"))
    if ins is None:
        ins = input_shapes_of(graph, node, shapes)
    return _priced(node, outs, *cost_terms(node, ins, outs), convention, owner)


def cost_terms(node: Node, ins: list, outs: list) -> tuple[OpCost, int]:
    """A node's cost terms and parameter count: all of its cost that its op, attributes and input shapes decide."""
    opdef = node.opdef
    a = node.resolved
    return opdef.cost(a, ins, outs), sum(map(numel, opdef.params(a, ins).values()))


def _priced(node: Node, outs: list, terms: OpCost, params: int, convention: str, owner: bool) -> NodeCost:
    """The NodeCost of `node` from its cost terms, under `convention`; parameters count for the owner of a sharing group only."""
    act = 0 if node.opdef.alias else sum(map(numel, outs)) * BYTES_PER_ELEMENT
    if convention in ("flops", LATENCY):
        value, key = terms.flops, "flops"
    elif convention == "fvcore":
        value, key = terms.fvcore, "fvcore"
    else:
        value, key = terms.macs, "macs"
    return NodeCost(node.name, node.op, outs, params if owner else 0, terms.macs, value, act, terms.formulas.get(key, ""))


def _fields(c: NodeCost) -> tuple[int, int, int, int, str]:
    """The fields of a priced NodeCost after its name, op and shapes."""
    return c.params, c.macs, c.flops, c.activation_bytes, c.formula


def _bytes(shape) -> int:
    """Size of one float32 activation of `shape`."""
    return numel(shape) * BYTES_PER_ELEMENT


class LiveBytes:
    """Bytes live at each step of a schedule, kept as a max segment tree.

    Adding to a range of steps and reading the peak are O(log steps): tree[i] is the maximum over the steps
    below node i, including the additions pending at i and below it. Live bytes are never negative, so the
    padding steps up to a power of two hold 0. The tree is built on the first `add` (or read of `tree`): an
    analysis that is never edited reads the peak alone, which needs no tree.
    """

    def __init__(self, live: list[int] | np.ndarray):
        size = 1
        while size < len(live):
            size *= 2
        self.size = size
        self._live = live
        self._tree: list[int] | None = None
        self._pending: list[int] = []
        top = (int(live.max()) if isinstance(live, np.ndarray) else max(live)) if len(live) else 0
        self._peak = max(top, 0) if len(live) < size else top  # the root of the tree, padding steps included

    @property
    def tree(self) -> list[int]:
        if self._tree is None:
            self._build()
        return self._tree

    def _build(self) -> None:
        size, live = self.size, self._live
        half = size // 2
        if isinstance(live, np.ndarray):  # int64 counts (`Buffers.tally` checked they fit): the levels in numpy
            levels = np.zeros(2 * size, dtype=np.int64)
            levels[size:size + len(live)] = live
            while half:
                np.maximum(levels[2 * half:4 * half:2], levels[2 * half + 1:4 * half:2], out=levels[half:2 * half])
                half //= 2
            tree = levels.tolist()
        else:
            tree = [0] * size + live + [0] * (size - len(live))
            while half:
                tree[half:2 * half] = map(max, tree[2 * half:4 * half:2], tree[2 * half + 1:4 * half:2])
                half //= 2
        self._tree = tree
        self._pending = [0] * size
        self._live = None

    def add(self, first: int, last: int, delta: int) -> None:
        """Add `delta` bytes to steps `first`..`last` (inclusive)."""
        tree, pending, size = self.tree, self._pending, self.size
        left, right = first + size, last + size + 1
        while left < right:
            if left & 1:
                tree[left] += delta
                if left < size:
                    pending[left] += delta
                left += 1
            if right & 1:
                right -= 1
                tree[right] += delta
                if right < size:
                    pending[right] += delta
            left >>= 1
            right >>= 1
        for leaf in (first + size, last + size):
            node = leaf >> 1
            while node:
                tree[node] = max(tree[2 * node], tree[2 * node + 1]) + pending[node]
                node >>= 1

    def peak(self) -> int:
        return self._peak if self._tree is None else self._tree[1]


@dataclass
class Buffers:
    """Activation buffers of a schedule: size, first step and last step each is live."""

    values: dict[str, int]  # node -> id of the buffer of its output 0; output k has the id + k, or the same id for a view
    views: set[str]  # nodes that allocate nothing: views of their input's buffer
    sizes: list[int]
    born: list[int]
    last_use: list[int]
    steps: int
    live: LiveBytes | None = None  # bytes live at each step, after its allocations

    def per_step(self) -> tuple[np.ndarray | list[int], np.ndarray | list[int]]:
        """Bytes allocated at each step and bytes freed after it, for steps 0..steps (the last: buffers kept to the end).
        float64 arrays counted in numpy while every partial sum is exact in float64, else lists of Python integers."""
        steps = self.steps
        if sum(self.sizes) < EXACT_FLOAT:
            sizes = np.asarray(self.sizes, dtype=np.float64)
            return (np.bincount(np.asarray(self.born, dtype=np.intp), sizes, steps + 1),
                    np.bincount(np.asarray(self.last_use, dtype=np.intp), sizes, steps + 1))
        allocs = [0] * (steps + 1)
        frees = [0] * (steps + 1)
        for size, start, stop in zip(self.sizes, self.born, self.last_use):
            allocs[start] += size
            frees[stop] += size
        return allocs, frees

    def tally(self) -> None:
        steps = self.steps
        allocs, frees = self.per_step()
        if isinstance(allocs, np.ndarray):  # every partial sum below is exact in float64
            live = np.cumsum(allocs[:steps])
            live[1:] -= np.cumsum(frees[:steps - 1])
            self.live = LiveBytes(live.astype(np.int64))
            return
        freed_before = accumulate(frees[:steps - 1], initial=0) if steps else ()
        self.live = LiveBytes(list(map(operator.sub, accumulate(allocs[:steps]), freed_before)))

    def resize(self, sid: int, size: int) -> None:
        """Change one buffer's size, updating the steps where it is live."""
        delta = size - self.sizes[sid]
        self.sizes[sid] = size
        if delta:
            self.live.add(self.born[sid], min(self.last_use[sid], self.steps - 1), delta)

    def peak(self) -> int:
        return self.live.peak()

    def allocated(self, name: str) -> int | None:
        """Id of the first buffer `name` allocates, one per output in order; None when it allocates none."""
        return None if name in self.views else self.values.get(name)


class BufferPlanner:
    """Builds the buffer plan of a schedule one node at a time, in schedule order (see `schedule_buffers`).

    The analyzer's full pass places each node right after computing it, while its inputs are still in the CPU's cache.
    """

    __slots__ = ("steps", "costs", "shapes", "values", "views", "sizes", "born", "last_use", "alias")

    def __init__(self, steps: int, costs: dict[str, NodeCost], shapes: dict[str, list | None] | None = None):
        self.steps = steps
        # node -> its NodeCost, or its output shapes when `shapes` is given: the output count of a producer whose output k > 0 is read
        self.costs = costs
        self.shapes = shapes
        # ints, not a list per node: a plan for a large graph then adds no objects for the garbage collector to scan
        self.values: dict[str, int] = {}  # node -> buffer id of its output 0; output k has the id + k, or the same id for a view
        self.views: set[str] = set()
        self.sizes: list[int] = []
        self.born: list[int] = []
        self.last_use: list[int] = []
        self.alias: dict[str, bool] = {}  # op -> whether it is a view

    def place(self, step: int, name: str, node: Node, shapes: list, activation_bytes: int) -> None:
        """Plan the buffers of `node`, at `step` of the schedule, whose output shapes are `shapes`."""
        values, views, last_use = self.values, self.views, self.last_use
        op = node.op
        keep = self.steps if op == "Output" else step
        first = None
        for ref in node.inputs:
            if ref is None:
                continue
            if ":" in ref:
                src, idx = parse_ref(ref)
                sid = values.get(src)
                if sid is None or idx >= len(self.costs[src].shapes if self.shapes is None else self.shapes[src]):
                    continue
                if idx and src not in views:
                    sid += idx
            else:  # output 0, the common case; a producer with no outputs has no entry in `values`
                sid = values.get(ref)
                if sid is None:
                    continue
            if first is None:
                first = sid
            if last_use[sid] < keep:
                last_use[sid] = keep
        is_view = self.alias.get(op)
        if is_view is None:
            is_view = self.alias[op] = node.opdef.alias
        if first is not None and is_view:
            values[name] = first
            views.add(name)
            return
        sizes = self.sizes
        if len(shapes) == 1:  # most nodes: one buffer, as large as the node's activation bytes unless it is a view
            values[name] = len(sizes)
            sizes.append(_bytes(shapes[0]) if is_view else activation_bytes)
            self.born.append(step)
            last_use.append(step)
            return
        if shapes:
            values[name] = len(sizes)
        sizes.extend(map(_bytes, shapes))
        self.born.extend([step] * len(shapes))
        last_use.extend([step] * len(shapes))

    def buffers(self) -> Buffers:
        """The plan of the nodes placed, with its live bytes counted."""
        buffers = Buffers(self.values, self.views, self.sizes, self.born, self.last_use, self.steps)
        buffers.tally()
        return buffers


def _joined(left: tuple[int, int], right: tuple[int, int]) -> tuple[int, int]:
    """The (bytes allocated less freed, largest rise at a step) of two neighbouring stretches of a schedule, one after the other."""
    return left[0] + right[0], max(left[1], left[0] + right[1])


class LivePlan:
    """A buffer plan kept up to date by edits, structural ones included, at the cost of the nodes they touch.

    Made from a `Buffers` plan (whose tables it takes over) and the schedule it was made on, it holds, per node, the bytes it allocates and the bytes
    freed after it, keyed by name: a node that moves in the schedule takes its own with it. The peak is read along the
    graph's order in blocks (`Graph.order_blocks`), each block summed once per change: the live bytes before a block plus
    the largest rise within it. A buffer is freed after its last reader, found by walking its producer's consumers (and a
    view's, for the buffers it passes on), so an edit recomputes only the buffers its nodes allocate or read.
    """

    def __init__(self, graph: Graph, buffers: Buffers, order: list[str], shapes: dict[str, list | None], costs: dict[str, NodeCost]):
        self.graph = graph
        self.shapes = shapes
        self.costs = costs
        self.sid_of = buffers.values  # node -> buffer of its output 0, as in `Buffers.values`
        self.views = buffers.views
        self.sizes = buffers.sizes
        # the node that allocates each buffer (None: a buffer no longer used; a node's buffers are consecutive) and the one
        # after which it is freed (None: kept to the end)
        self.owner: list[str | None] = list(map(order.__getitem__, buffers.born))
        self.last: list[str | None] = list(map([*order, None].__getitem__, buffers.last_use))
        allocated, freed = buffers.per_step()  # per step of `order`, and one more for what is kept to the end (zip drops it)
        if isinstance(allocated, np.ndarray):
            allocated, freed = allocated.astype(np.int64).tolist(), freed.astype(np.int64).tolist()
        self.alloc: dict[str, int] = dict(zip(order, allocated))
        self.free: dict[str, int] = dict(zip(order, freed))
        self.sums: dict[int, tuple[int, int]] = {}  # block serial -> (bytes allocated less freed, largest rise at a step)
        self.changed: set[str] = set()  # nodes whose bytes changed since the last peak
        self.serials: list[int] = []  # the blocks' serials at the last peak
        self.tree: list[tuple[int, int]] = []  # the blocks' sums combined pairwise in a segment tree (root at 1)

    # ---- buffers of values ---------------------------------------------------------------
    def _owned(self, name: str) -> range:
        """The buffers `name` allocates."""
        sid = self.sid_of.get(name)
        if sid is None or name in self.views:
            return range(0)
        owner, end = self.owner, sid + 1
        while end < len(owner) and owner[end] == name:
            end += 1
        return range(sid, end)

    def _value(self, ref: str) -> int | None:
        """The buffer that value `ref` lives in, if it has one."""
        src, idx = (ref, 0) if ":" not in ref else parse_ref(ref)
        sid = self.sid_of.get(src)
        if sid is None:
            return None
        if idx and (self.shapes.get(src) is None or idx >= len(self.shapes[src])):
            return None
        return sid if src in self.views else sid + idx

    def _holding(self, name: str) -> tuple[int | None, bool, int]:
        """Which buffers `name`'s outputs live in: the first, whether it is a view, how many it allocates."""
        return self.sid_of.get(name), name in self.views, len(self._owned(name))

    def _buffers_of(self, name: str) -> set[int]:
        """Every buffer `name`'s outputs live in."""
        sid = self.sid_of.get(name)
        if sid is None:
            return set()
        return {sid} if name in self.views else set(self._owned(name))

    def _add(self, table: dict[str, int], name: str, delta: int) -> None:
        if delta:
            table[name] = table.get(name, 0) + delta
            self.changed.add(name)

    def _kill(self, sid: int) -> None:
        """Drop a buffer from the plan: nothing allocates or frees it any more."""
        owner, last, size = self.owner[sid], self.last[sid], self.sizes[sid]
        if owner is not None:
            self._add(self.alloc, owner, -size)
            if last is not None:
                self._add(self.free, last, -size)
        self.owner[sid] = self.last[sid] = None
        self.sizes[sid] = 0

    def _last_reader(self, sid: int) -> str | None:
        """The reader of buffer `sid` last in the order (its owner when none reads it), or None when an Output keeps it."""
        graph, nodes, keys = self.graph, self.graph.nodes, self.graph.order_keys()
        owner = self.owner[sid]
        last, last_key = owner, keys[owner]
        walk, seen = [owner], {owner}
        while walk:
            for consumer, index in graph.users(walk.pop()):
                if self.shapes.get(consumer) is None or self._value(nodes[consumer].inputs[index]) != sid:
                    continue
                if nodes[consumer].op == "Output":
                    return None
                if keys[consumer] > last_key:
                    last, last_key = consumer, keys[consumer]
                if consumer in self.views and self.sid_of[consumer] == sid and consumer not in seen:
                    seen.add(consumer)
                    walk.append(consumer)
        return last

    # ---- edits ---------------------------------------------------------------------------
    def rename(self, old: str, new: str) -> None:
        """Node `old` is called `new` now (no node of the plan was called `new`): its bytes, buffers and the buffers it
        frees go with it."""
        for sid in self._owned(old):
            self.owner[sid] = new
        for table in (self.sid_of, self.alloc, self.free):
            if old in table:
                table[new] = table.pop(old)
        for names in (self.views, self.changed):
            if old in names:
                names.discard(old)
                names.add(new)
        last, at = self.last, -1  # which buffers it frees is written nowhere else: found by a scan (in C)
        try:
            while True:
                at = last.index(old, at + 1)
                last[at] = new
        except ValueError:
            pass

    def update(self, touched: set[str], gone: set[str], producers: set[str]) -> None:
        """Bring the plan up to date: `touched` nodes were added, moved, rewired or got new shapes; `gone` nodes were erased;
        `producers` are nodes some of them read before the edits."""
        graph, nodes, keys = self.graph, self.graph.nodes, self.graph.order_keys()
        stale: set[int] = set()  # buffers whose last reader may have changed
        for name in gone:
            for sid in self._buffers_of(name):
                if name not in self.views:
                    self._kill(sid)
                else:
                    stale.add(sid)
            self.sid_of.pop(name, None)
            self.views.discard(name)
        for name in producers:
            if name in nodes:
                stale |= self._buffers_of(name)
        work = [(keys[n], n) for n in touched if n in nodes]
        heapq.heapify(work)
        queued = {n for _, n in work}
        while work:
            _, name = heapq.heappop(work)
            node = nodes[name]
            stale |= self._buffers_of(name)
            for ref in node.inputs:  # what it reads
                if ref is not None:
                    src = ref if ":" not in ref else parse_ref(ref)[0]
                    stale |= self._buffers_of(src)
            before = self._holding(name)
            self._place(name, node)
            after = self._holding(name)
            if after != before:  # other buffers: its readers read them now, and views of it pass them on (resized ones were updated)
                stale |= self._buffers_of(name)
                for consumer, _ in graph.users(name):
                    if consumer not in queued and consumer in nodes:
                        queued.add(consumer)
                        heapq.heappush(work, (keys[consumer], consumer))
        for sid in stale:
            owner = self.owner[sid]
            if owner is None:
                continue
            last = self._last_reader(sid)
            if last != self.last[sid]:
                if self.last[sid] is not None:
                    self._add(self.free, self.last[sid], -self.sizes[sid])
                if last is not None:
                    self._add(self.free, last, self.sizes[sid])
                self.last[sid] = last

    def _place(self, name: str, node: Node) -> None:
        """Give `name` its buffers as `BufferPlanner.place` does: a view of its first input's buffer, or buffers of its own
        (kept when their number is the same, resized to its shapes)."""
        shapes = self.shapes.get(name)
        first = None
        if shapes is not None:
            for ref in node.inputs:
                if ref is not None and (first := self._value(ref)) is not None:
                    break
        is_view = node.opdef.alias
        owned = self._owned(name)
        if first is not None and is_view:
            for sid in owned:
                self._kill(sid)
            self.sid_of[name] = first
            self.views.add(name)
            return
        if name in self.views:
            self.views.discard(name)
            self.sid_of.pop(name)
        if not shapes:
            for sid in owned:
                self._kill(sid)
            self.sid_of.pop(name, None)
            return
        if len(shapes) == 1:
            sizes = [_bytes(shapes[0]) if is_view or name not in self.costs else self.costs[name].activation_bytes]
        else:
            sizes = [_bytes(shape) for shape in shapes]
        if len(owned) != len(sizes):
            for sid in owned:
                self._kill(sid)
            start = len(self.sizes)
            self.sid_of[name] = start
            self.sizes.extend([0] * len(sizes))
            self.owner.extend([name] * len(sizes))
            self.last.extend([name] * len(sizes))
            owned = range(start, start + len(sizes))
        for sid, size in zip(owned, sizes):
            delta = size - self.sizes[sid]
            if delta:
                self.sizes[sid] = size
                self._add(self.alloc, name, delta)
                if self.last[sid] is not None:
                    self._add(self.free, self.last[sid], delta)

    # ---- the peak ------------------------------------------------------------------------
    def _block_sums(self, names: list[str]) -> tuple[int, int]:
        """(bytes allocated less bytes freed, most bytes live at one step over the live bytes before) of a block."""
        alloc, free = self.alloc, self.free
        total, rise = 0, 0
        for name in names:
            here = alloc.get(name, 0)
            if total + here > rise:
                rise = total + here
            total += here - free.get(name, 0)
        return total, rise

    def _every_block_sums(self, blocks: list[list[str]]) -> list[tuple[int, int]]:
        """`_block_sums` of every block at once, in numpy: the bytes live at each step from a running sum of the order."""
        names = list(itertools.chain.from_iterable(blocks))
        try:
            allocated = np.fromiter(map(self.alloc.get, names, itertools.repeat(0)), np.int64, len(names))
            net = allocated - np.fromiter(map(self.free.get, names, itertools.repeat(0)), np.int64, len(names))
        except OverflowError:  # sizes past 64 bits: one block at a time, in Python's integers
            return [self._block_sums(names) for names in blocks]
        after = np.cumsum(net)  # bytes live after each step's frees
        before = after - net
        lengths = np.fromiter(map(len, blocks), np.intp, len(blocks))
        ends = np.cumsum(lengths) - 1
        starts = ends - lengths + 1
        rises = np.maximum.reduceat(before + allocated, starts) - before[starts]
        totals = after[ends] - before[starts]
        return list(zip(totals.tolist(), rises.tolist()))

    def peak(self) -> int:
        """The most bytes live at one step of the schedule: the root of a segment tree over the blocks of the order, where
        two neighbours combine as (a + b, max(rise a, a + rise b)). Only blocks that changed are summed again."""
        order = self.graph.order_blocks()
        serials, keys = order.serials, order.keys
        redo = {order.block_of_key(keys[name]) for name in self.changed if name in keys}
        self.changed.clear()
        sums = self.sums
        if len(serials) != len(self.serials):  # blocks split or dropped: every leaf again, each block's sums from its serial
            size = 1
            while size < len(serials):
                size *= 2
            if sums:
                sums = {serial: (sums.get(serial) if b not in redo else None) or self._block_sums(names)
                        for b, (names, serial) in enumerate(zip(order.blocks, serials))}
            else:  # the first peak: every block
                sums = dict(zip(serials, self._every_block_sums(order.blocks))) if serials else {}
            self.sums = sums
            tree = self.tree = [(0, 0)] * size + [sums[serial] for serial in serials] + [(0, 0)] * (size - len(serials))
            for node in range(size - 1, 0, -1):
                tree[node] = _joined(tree[2 * node], tree[2 * node + 1])
        else:
            redo.update(itertools.compress(range(len(serials)), map(operator.ne, serials, self.serials)))
            tree = self.tree
            size = len(tree) // 2
            for b in redo:
                found = sums[serials[b]] = self._block_sums(order.blocks[b])
                node = b + size
                tree[node] = found
                node >>= 1
                while node:
                    tree[node] = _joined(tree[2 * node], tree[2 * node + 1])
                    node >>= 1
        self.serials = list(serials)
        if len(sums) > 2 * len(serials) + 64:  # sums of blocks that changed since: keep the current ones
            self.sums = {serial: sums[serial] for serial in serials}
        return self.tree[1][1]


def schedule_buffers(graph: Graph, order: list[str], costs: dict[str, NodeCost]) -> Buffers:
    """Assign buffers over the schedule `order`; each is freed after its last use.

    Alias ops (views: Identity, Flatten, Dropout, ChannelSplit, Output) share their input's buffer;
    buffers read by Output nodes stay live to the end.
    """
    planner = BufferPlanner(len(order), costs)
    place = planner.place
    step = -1
    for name, node, c in zip(order, map(graph.nodes.__getitem__, order), map(costs.get, order)):  # the lookups run in C
        step += 1
        if c is not None and c.shapes is not None:
            place(step, name, node, c.shapes, c.activation_bytes)
    return planner.buffers()


def peak_activation_bytes(graph: Graph, order: list[str], costs: dict[str, NodeCost]) -> int:
    """Peak of live activation bytes over the schedule `order` (see `schedule_buffers`)."""
    return schedule_buffers(graph, order, costs).peak()


class Analyzer:
    """Shapes and cost of a graph, kept up to date incrementally.

    It listens to the graph's edit events; `refresh()` recomputes only the nodes whose attributes or
    inputs changed and the consumers whose input shapes changed as a result. An edit costs what it
    touches, not the graph's size: totals are running sums updated by deltas, resized buffers update the
    peak-memory tree, a sharing-group change re-elects that group's owner only, and the report is a view
    of the results rather than a copy. Structural edits (add, erase, connect) keep the graph's order by
    sorting where it changes (`ir.order`), and the buffer plan follows the nodes they touch (`LivePlan`), through
    renames too; a reorder, or an edit that moves more of the order than the local sort's budget, rebuilds
    the schedule and the plan, and still recomputes only the nodes it touches.
    """

    def __init__(self, graph: Graph, convention: str = "flops", batch: int | None = None, latency: LatencyTable | None = None,
                 memory: bool = True):
        if convention not in (*CONVENTIONS, LATENCY):
            raise ValueError(f"unknown convention {convention!r}; choose from {', '.join((*CONVENTIONS, LATENCY))}")
        if convention == LATENCY and latency is None:
            raise DesignError("the latency convention needs a latency model (run `convstudio profile --calibrate`)", "--convention latency")
        self.latency = latency
        self.memory = memory  # False: no buffer plan, and the report's peak memory is None (for callers that need shapes and counts only)
        self.graph = graph
        self.convention = convention
        self.batch = batch
        self.shapes: dict[str, list | None] = {}
        self.costs: dict[str, NodeCost] = {}
        self.errors: dict[str, DesignError] = {}
        # members of a sharing group that cannot use its owner's parameters (`ir.shapes.share_error`); their meta holds the line
        # as "share_error", and `share_changed` names the nodes whose line came, went or changed in the last refresh
        self.share_errors: dict[str, DesignError] = {}
        self.share_changed: set[str] = set()
        self._recheck_all = True  # check every sharing group at the next refresh (an election from scratch)
        self.generation = 0  # counts refreshes; a report is current while this is unchanged
        self._dirty: set[str] = set()
        self._regroup: set[str] = set()  # nodes whose sharing group changed
        self._pending: list[tuple[str, ...]] = []  # erasures and renames since the last refresh, in order
        self._full = True
        self._structure = True
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self._inserted: dict[str, int] | None = None
        self._groups: dict[str, list[str]] = {}  # sharing group -> members in insertion order (the first owns)
        self._share_of: dict[str, str] = {}
        self._sharers: set[str] = set()  # members of a sharing group after its first: they count no parameters
        self._inputs: list[str] = []
        self._sums = [0, 0, 0, 0, 0]  # per-sample params, macs, flops, activation bytes; latency ms at the batch (`exact` steps)
        self._buffers: Buffers | None = None
        self._plan: LivePlan | None = None  # the plan kept by structural edits, made from `_buffers` by the first one
        self._touched: set[str] = set()  # since the last refresh: nodes added, rewired or moved in the order (for the plan)
        self._gone: set[str] = set()  # nodes erased
        self._read_before: set[str] = set()  # producers that nodes read before their inputs changed or they were erased
        self._order_lost = False  # an edit since the last refresh made the graph sort its order again
        self._reelect = False  # a member of a sharing group came or went: elect every group's owner again
        self._peak = 0
        self._memo: dict[tuple, tuple] = {}  # signature -> (output shapes, cost terms, parameter count)
        self._plain_ops: dict[str, bool] = {}  # op -> whether its nodes' signatures are memo keys
        self.report: CostReport | None = None
        self.recomputed: list[str] = []
        self._fanout: set[str] = set()  # with a latency table: nodes whose consumers or inputs changed since the last refresh
        self._per_node = True  # False (`analyze(nodes=False)`, one refresh): no cost in the nodes' meta, nor NodeCosts on the fast path
        self._top: int | None = None  # with `_per_node` False (`analyze(nodes=K)`): the report keeps the K nodes with the most FLOPs
        self._picked: list[NodeCost] = []
        graph.subscribe(self._on_event)

    def close(self) -> None:
        self.graph.unsubscribe(self._on_event)

    def _on_event(self, event: str, info: dict) -> None:
        if event == "attr":
            self._dirty.add(info["name"])
            if info.get("key") == "share":
                self._regroup.add(info["name"])
        elif event in ("add", "input"):
            name = info["name"]
            self._dirty.add(name)
            self._structure = True
            self._touched.add(name)
            if event == "input":
                if info.get("moved") is None:
                    self._order_lost = True
                else:
                    self._touched |= info["moved"]
                if info["old"] is not None:
                    self._read_before.add(parse_ref(info["old"])[0])
            elif self.graph.nodes[name].share:
                self._reelect = True
        elif event == "erase":
            name = info["name"]
            self._dirty.discard(name)
            self._regroup.discard(name)
            self._pending.append(("erase", name))
            self._structure = True
            self._gone.add(name)
            self._read_before.update(info["producers"])
            if name in self._share_of:
                self._reelect = True
        elif event == "rename":
            old, new = info["old"], info["new"]
            if old in self._gone or new in self._gone:  # the plan would take the buffers of the node erased for the renamed one's
                self._order_lost = True
            if old in self._share_of:
                self._reelect = True
            for names in (self._dirty, self._regroup, self._touched, self._read_before):
                if old in names:
                    names.discard(old)
                    names.add(new)
            self._dirty.add(new)  # its results and error lines name it, as may its consumers' lines
            self._dirty.update(c for c, _ in self.graph.users(new))
            self._pending.append(("rename", old, new))
            self._structure = True
        elif event == "reorder":
            self._structure = True
            self._order_lost = True
        if self.latency is not None:
            self._track_fanout(event, info)

    def _track_fanout(self, event: str, info: dict) -> None:
        """Note whose consumers or inputs an edit changed: a runtime fuses a BN or activation into a conv only while it is
        the conv's sole reader, so the latency of nodes downstream of them may change (`ir.latency.dependents`)."""
        if event == "input":
            self._fanout.update(parse_ref(ref)[0] for ref in (info["old"], info["new"]) if ref is not None)
            self._fanout.add(info["name"])
        elif event == "add":
            self._fanout.update(self.graph.nodes[info["name"]].input_names())
        elif event == "erase":
            self._fanout.update(info["producers"])
        elif event == "rename":
            old, new = info["old"], info["new"]
            if old in self._fanout:
                self._fanout.discard(old)
                self._fanout.add(new)

    def set_convention(self, convention: str, batch: int | None = None) -> CostReport:
        self.convention = convention
        self.batch = batch
        self._full = True
        return self.refresh()

    def invalidate(self) -> None:
        self._full = True

    @property
    def order(self) -> list[str]:
        """The schedule: the graph's stable topological order as of the last refresh."""
        if self._order is None:
            self._order = self.graph.topo_order()
        return self._order

    @paused_gc()
    def refresh(self) -> CostReport:
        """Bring shapes and costs up to date and return the report."""
        graph = self.graph
        self.share_changed = set()
        structure = self._structure or self._full
        # the graph kept its order through these edits, which moved few nodes in it: the plan follows them (`LivePlan`)
        kept = (structure and not self._full and not self._order_lost and self.memory and graph._order_cache is not None
                and (self._plan is not None or self._buffers is not None))
        if kept and self._plan is None:  # on the schedule of the last refresh, whose results `_replay` has yet to update
            self._plan = LivePlan(graph, self._buffers, self._order, self.shapes, self.costs)
            self._buffers = None  # the plan has taken its tables over
        self._replay(self._plan if kept else None)
        if structure:
            self._order = None if kept else graph.topo_order()  # kept: read from the graph when asked for
            self._position = graph.order_keys()  # increasing along the order, which is all the heap and the error lines need
            self._inputs = graph.inputs
            if not kept:
                self._plan = None
                self._elect_all()
            elif self._reelect:
                self._elect_all()
            else:
                self._inserted = None  # insertion positions: nodes came or went
                if self._regroup:
                    self._elect(self._regroup)
            self._structure = False
        elif self._regroup:
            self._elect(self._regroup)
        self._regroup.clear()
        sharers = self._sharers
        if self._fanout and not self._full:
            for name in self._fanout:
                if name in graph.nodes:
                    self._dirty.update(dependents(graph, name))
        self._fanout.clear()
        recomputed = []
        resized: list[str] = []
        planned = None
        if self._full:
            self.shapes.clear()
            self.costs.clear()
            self.errors.clear()
            self._sums = [0, 0, 0, 0, 0]
            planned = self._compute_all(sharers)
            recomputed = list(self._order)
        else:
            position = self._position
            heap = [(position[n], n) for n in self._dirty if n in graph.nodes]
            heapq.heapify(heap)
            seen = {n for _, n in heap}
            while heap:
                _, name = heapq.heappop(heap)
                known = name in self.shapes
                old = self.shapes.get(name)
                old_error = graph.nodes[name].meta.get("error")
                self._compute(name, sharers)
                recomputed.append(name)
                new = self.shapes.get(name)
                if new != old:
                    resized.append(name)
                    structure = structure or old is None or new is None or len(old) != len(new)
                if new != old or graph.nodes[name].meta.get("error") != old_error or not known:
                    for consumer, _ in graph.users(name):
                        if consumer not in seen:
                            seen.add(consumer)
                            heapq.heappush(heap, (position[consumer], consumer))
        self._full = False
        self._dirty.clear()
        self.recomputed = recomputed
        if self.memory:
            if planned is not None:
                self._buffers = planned
            elif self._plan is not None:
                self._plan.update(self._touched | set(resized), self._gone, self._read_before)
            elif structure or self._buffers is None:
                self._buffers = schedule_buffers(graph, self.order, self.costs)
            else:
                self._resize(resized)
            self._peak = self._plan.peak() if self._plan is not None else self._buffers.peak()
        self._touched.clear()
        self._gone.clear()
        self._read_before.clear()
        self._order_lost = self._reelect = False
        self._check_shares(recomputed)
        self.generation += 1
        self.report = self._report()
        return self.report

    def _replay(self, plan: LivePlan | None) -> None:
        """Apply the erasures and renames since the last refresh to the stored results, in order, and the renames to `plan`
        (the plan kept through these edits, if any)."""
        if self._full:
            self._pending.clear()
        for event, *names in self._pending:
            if event == "erase":
                name = names[0]
                self.shapes.pop(name, None)
                self._count(self.costs.pop(name, None), -1)
                self.errors.pop(name, None)
                self.share_errors.pop(name, None)
            else:
                old, new = names
                for table in (self.shapes, self.costs, self.errors, self.share_errors):
                    if old in table:
                        table[new] = table.pop(old)
                if plan is not None:
                    plan.rename(old, new)
        self._pending.clear()

    def _resize(self, names: list[str]) -> None:
        """Update the sizes of the buffers that `names` allocate (their shapes changed, the schedule did not)."""
        buffers = self._buffers
        for name in names:
            first = buffers.allocated(name)
            if first is not None:
                for k, shape in enumerate(self.shapes[name]):
                    buffers.resize(first + k, _bytes(shape))

    def _elect_all(self) -> None:
        """Sharing groups and owners from scratch: each node counts its parameters unless an earlier member
        of its group does. Nodes whose role changed are recomputed."""
        graph = self.graph
        before = self._sharers
        self._inserted = None
        self._recheck_all = True
        self._groups = graph.share_groups()
        self._share_of = {m: group for group, members in self._groups.items() for m in members}
        sharers = {m for members in self._groups.values() for m in members[1:]}
        self._dirty.update(n for n in before - sharers if n in graph.nodes)
        self._dirty.update(sharers - before)
        self._sharers = sharers

    def _elect(self, names: set[str]) -> None:
        """Move `names` to their new sharing groups and re-elect the owners of the groups they left or joined."""
        nodes, groups, sharers = self.graph.nodes, self._groups, self._sharers
        touched = set()
        for name in names:
            old = self._share_of.pop(name, None)
            if old is not None:
                groups[old].remove(name)
                touched.add(old)
                self._set_share_error(name, None)  # checked again in the group it joins, if any
            new = nodes[name].share
            if new:
                if self._inserted is None:  # insertion positions, built once per election from scratch that a regroup follows
                    self._inserted = dict(zip(nodes, range(len(nodes))))
                bisect.insort(groups.setdefault(new, []), name, key=self._inserted.__getitem__)
                self._share_of[name] = new
                touched.add(new)
            elif name in sharers:
                sharers.discard(name)
                self._dirty.add(name)
        for group in touched:
            members = groups.get(group, [])
            for i, member in enumerate(members):
                if (member in sharers) != (i > 0):
                    if i:
                        sharers.add(member)
                    else:
                        sharers.discard(member)
                    self._dirty.add(member)
            if not members:
                del groups[group]

    def _check_shares(self, recomputed: list[str]) -> None:
        """Check again what this refresh may have changed: every sharing group after an election from scratch, else the
        recomputed nodes' groups (an owner's whole group, another member alone). A node that joins a group, or becomes its
        owner, is recomputed (`_elect`), so that covers every change of a group but a member leaving it, which `_elect` clears."""
        groups = self._groups
        if self._recheck_all:
            found = dict(shared_param_errors(self.graph, self.shapes, groups))
            for name in [n for n in self.share_errors if n not in found]:
                self._set_share_error(name, None)
            for name, node in self.graph.nodes.items():  # lines an earlier analysis of this graph left in the nodes' meta
                if "share_error" in node.meta and name not in found:
                    del node.meta["share_error"]
                    self.share_changed.add(name)
            for name, error in found.items():
                self._set_share_error(name, error)
        else:
            share_of, whole, alone = self._share_of, set(), []
            for name in recomputed if share_of else ():
                group = share_of.get(name)
                if group is not None:
                    if groups[group][0] == name:
                        whole.add(group)
                    else:
                        alone.append((group, name))
            for group in whole:
                members = groups[group]
                for i, member in enumerate(members):
                    self._set_share_error(member, share_error(self.graph, group, members[0], member, self.shapes) if i else None)
            for group, member in alone:
                if group not in whole:
                    self._set_share_error(member, share_error(self.graph, group, groups[group][0], member, self.shapes))
        self._recheck_all = False

    def _set_share_error(self, name: str, error: DesignError | None) -> None:
        """Record why `name` cannot use its sharing group's parameters (None: it can), in `share_errors` and its meta."""
        old = self.share_errors.get(name)
        if error is None and old is None:
            return
        meta = self.graph.nodes[name].meta
        if error is None:
            del self.share_errors[name]
            meta.pop("share_error", None)
        else:
            self.share_errors[name] = error
            meta["share_error"] = error.line()
        if old is None or error is None or old.line() != meta["share_error"]:
            self.share_changed.add(name)

    def _signature(self, node: Node, ins: list | None) -> tuple | None:
        """What a node's shapes and cost terms depend on (op, resolved attributes, input shapes), as a memo key.

        Designs repeat blocks, so most nodes of a large graph share one with an earlier node. None when the
        inputs have no shapes yet or the op has JSON attributes (lists are no keys, and 1 == True would mix).
        """
        if ins is None:
            return None
        plain = self._plain_ops.get(node.op)
        if plain is None:
            plain = self._plain_ops[node.op] = all(a.kind != "json" for a in node.opdef.attrs)
        return (node.op, *node.resolved.values(), *ins) if plain else None

    def _count(self, cost: NodeCost | None, sign: int) -> None:
        if cost is not None:
            sums = self._sums
            sums[0] += sign * cost.params
            sums[1] += sign * cost.macs
            sums[2] += sign * cost.flops
            sums[3] += sign * cost.activation_bytes
            if cost.latency_ms:
                sums[4] += sign * exact(cost.latency_ms)

    def _predict(self, node: Node, ins: list, outs: list, cost: NodeCost) -> None:
        """Set the predicted latency of a node whose shapes are known (with a latency table)."""
        cost.latency_ms = self.latency.node_ms(self.graph, node, ins, outs, self.batch or 1)

    def _compute_all(self, sharers: set[str]) -> Buffers | None:
        """`_compute` of every node in schedule order, into emptied results; with `memory`, the buffer plan too.

        The same results, with the common case inlined: a node whose signature an earlier node had reuses its shapes (one
        list for all of them: no one edits a node's shapes in place), its priced cost and, with a latency table, the latency
        of the earlier node that `fused` alike (`ir.latency.fused`: all that the prediction reads besides the signature and
        the batch), so a large graph of repeated blocks costs a few dictionary reads per node. Each node's buffers are placed
        right after it is computed, while what the plan reads of it is still in the CPU's cache (`BufferPlanner.place`, inlined
        for a node that reads one whole output and allocates one buffer). Without per-node costs it makes no NodeCost.
        """
        graph = self.graph
        nodes, shapes, costs, memo = graph.nodes, self.shapes, self.costs, self._memo
        get_shapes = shapes.get
        plain_ops = self._plain_ops
        convention = self.convention
        table, batch = self.latency, self.batch or 1
        order = self._order
        per_node, top = self._per_node, self._top
        planner = BufferPlanner(len(order), costs, shapes) if self.memory else None
        if planner is not None:
            place, buffer_of, sizes, born, last_use = planner.place, planner.values, planner.sizes, planner.born, planner.last_use
        # signature -> [output shapes, NodeCost fields after name, op and shapes: of an owner, of a sharer, {fused: [latency ms, `exact`
        # ms, uses]}, nodes that used the owner's fields, the sharer's, whether its nodes allocate one buffer of their own, and without
        # per-node costs the names of the nodes that used the owner's fields, the sharer's]; the totals add each entry's values times
        # their uses at the end
        priced: dict[tuple, list] = {}
        step = -1
        # a design kept in schedule order (as loaded, or built in order) walks its dict of nodes in place; else the lookups run in C
        walk = nodes.items() if order == list(nodes) else zip(order, map(nodes.__getitem__, order))
        for name, node in walk:
            step += 1
            ins: list | None = []
            for ref in node.inputs:
                produced = get_shapes(ref)
                if produced:  # output 0 of a producer with shapes, the common case
                    ins.append(produced[0])
                    continue
                if ref is None or ":" not in ref:
                    ins = None
                    break
                src, idx = parse_ref(ref)
                produced = get_shapes(src)
                if produced is None or idx >= len(produced):
                    ins = None
                    break
                ins.append(produced[idx])
            entry = None
            if ins is not None and plain_ops.get(node.op):
                key = (node.op, *(node._resolved if node._resolved is not None else node.resolved).values(), *ins)
                entry = priced.get(key)
                if entry is None:
                    known = memo.get(key)
                    if known is not None:
                        result = list(known[0])
                        entry = priced[key] = [result, *(_fields(_priced(node, result, known[1], known[2], convention, owns)) for owns in (True, False)),
                                               {}, 0, 0, len(result) == 1 and not node.opdef.alias and node.op != "Output", [], []]
            if entry is None:  # no shapes yet, JSON attributes, an op not met yet or a new signature: the general path
                self._compute(name, sharers)
                if planner is not None and shapes[name] is not None:
                    place(step, name, node, shapes[name], costs[name].activation_bytes)
                continue
            result = entry[0]
            if name in sharers:
                fields = entry[2]
                entry[5] += 1
            else:
                fields = entry[1]
                entry[4] += 1
            if table is not None:
                timed = entry[3]
                fuses = fused(graph, node)
                ms = timed.get(fuses)
                if ms is None:
                    ms = table.node_ms(graph, node, ins, result, batch)
                    ms = timed[fuses] = [ms, exact(ms), 0]
                ms[2] += 1
            shapes[name] = result
            meta = node.meta
            meta["shapes"] = result
            meta["error"] = None
            if per_node:
                cost = NodeCost(name, node.op, result, *fields)
                if table is not None:
                    cost.latency_ms = ms[0]
                meta["cost"] = cost
                costs[name] = cost
            else:
                if "cost" in meta:
                    del meta["cost"]
                if top is None:
                    continue
                (entry[7] if fields is entry[1] else entry[8]).append(name)
            if planner is not None:
                inputs = node.inputs
                if entry[6] and len(inputs) == 1 and (sid := buffer_of.get(inputs[0])) is not None:  # `place` inlined for the common case
                    if last_use[sid] < step:
                        last_use[sid] = step
                    buffer_of[name] = len(sizes)
                    sizes.append(fields[3])  # the activation bytes
                    born.append(step)
                    last_use.append(step)
                else:
                    place(step, name, node, result, fields[3])
        sums = self._sums
        for _, owner, sharer, timed, owned, shared, *_ in priced.values():
            for k in range(4):
                sums[k] += owner[k] * owned + sharer[k] * shared
            for _, steps, uses in timed.values():
                sums[4] += steps * uses
        if top is not None and not per_node:
            self._picked = self._pick_top(top, priced.values(), sharers)
        return planner.buffers() if planner is not None else None

    def _pick_top(self, k: int, entries, sharers: set[str]) -> list[NodeCost]:
        """The costs of the `k` nodes with the most FLOPs, then MACs, then parameters (ties: the first in schedule order), in
        schedule order, from a full pass without per-node costs: the nodes of one signature and role share one cost, so only
        the groups at or above the k-th largest are looked into, and costs are made for the nodes picked alone."""
        groups = [((c.flops, c.macs, c.params), [name]) for name, c in self.costs.items()]  # the nodes of the general path
        for entry in entries:
            for fields, names in ((entry[1], entry[7]), (entry[2], entry[8])):
                if names:
                    groups.append(((fields[2], fields[1], fields[0]), names))
        groups.sort(key=operator.itemgetter(0), reverse=True)
        counted, threshold = 0, None
        for key, names in groups:
            counted += len(names)
            if counted >= k:
                threshold = key
                break
        position = self._position
        above = [name for key, names in groups if threshold is None or key > threshold for name in names]
        tied = sorted((name for key, names in groups if key == threshold for name in names[:k - len(above)]), key=position.__getitem__)
        graph, shapes, costs, latency = self.graph, self.shapes, self.costs, self.latency
        picked = []
        for name in sorted(above + tied[:k - len(above)], key=position.__getitem__):
            cost = costs.get(name)
            if cost is None:  # a node of the fast path: its cost made again, as `_compute` makes it
                node = graph.nodes[name]
                ins = input_shapes_of(graph, node, shapes)
                cost = node_cost(graph, name, shapes, self.convention, name not in sharers, ins)
                if latency is not None:
                    self._predict(node, ins, shapes[name], cost)
            picked.append(cost)
        return picked

    def _compute(self, name: str, sharers: set[str]) -> None:
        graph = self.graph
        node = graph.nodes[name]
        ins = input_shapes_of(graph, node, self.shapes)
        key = self._signature(node, ins)
        known = self._memo.get(key) if key is not None else None
        if known is not None:
            result, error, (terms, params) = list(known[0]), None, known[1:]
        else:
            ins, result, error = infer_with_inputs(graph, node, self.shapes)
            if result is not None:
                terms, params = cost_terms(node, ins, result)
                if key is not None:
                    if len(self._memo) >= MEMO_SIZE:
                        self._memo.clear()
                    self._memo[key] = (tuple(result), terms, params)
        self.shapes[name] = result
        node.meta["shapes"] = result
        node.meta["error"] = error.line() if error else None
        if error is None:
            self.errors.pop(name, None)
        else:
            self.errors[name] = error
        if result is None:
            cost = NodeCost(name, node.op, None, error=node.meta["error"])
        else:
            cost = _priced(node, result, terms, params, self.convention, name not in sharers)
        if self.latency is not None and result is not None and error is None:
            self._predict(node, ins, result, cost)
        if self._per_node:
            node.meta["cost"] = cost
        else:
            node.meta.pop("cost", None)
        old = self.costs.get(name)
        if old is not None:
            self._count(old, -1)
        self._count(cost, 1)
        self.costs[name] = cost

    def _report(self) -> CostReport:
        """The report of this refresh: totals from the running sums, the nodes as a view, errors in schedule order."""
        scale = self.batch or 1
        params, macs, flops, act, latency = self._sums
        total = Totals(params, macs * scale, flops * scale, act * scale, self._peak * scale if self.memory else None)
        if self.latency is not None:
            total.latency_ms = latency / EXACT_ONE + self.latency.overhead_ms
        position = self._position
        errors = [self.costs[name].error for name in sorted(self.errors, key=position.__getitem__)]
        inputs = {n: list(self.shapes[n][0]) for n in self._inputs if self.shapes.get(n)}
        nodes = NodeCosts(self, scale) if self._per_node else [_scaled(c, scale) for c in self._picked]
        shared = [self.share_errors[name].line() for name in sorted(self.share_errors, key=position.__getitem__)]
        return CostReport(self.convention, self.batch, inputs, nodes, total, errors, shared)


def analyze(graph: Graph, convention: str = "flops", batch: int | None = None, strict: bool = True, latency: LatencyTable | None = None,
            memory: bool = True, nodes: bool | int = True) -> CostReport:
    """Shapes and cost of every node. Strict mode raises the first shape error in schedule order, then
    the first sharing group whose members need parameters of different shapes. `memory=False` skips planning
    activation buffers: the report's peak memory is then None. `nodes=False` (with `memory=False`) keeps no per-node
    costs, for callers that read only the shapes, totals and errors: the report's `nodes` is empty and the nodes' meta
    gets shapes and errors but no cost. `nodes=K` (a whole number) is the same, but the report's `nodes` holds the K nodes
    with the most FLOPs (then MACs, then parameters; ties in schedule order), in schedule order: what `as_dict(top=K)` picks
    from a full report."""
    top = None
    if type(nodes) is int:
        if nodes < 1:
            raise ValueError(f"nodes=K needs K >= 1, got {nodes}")
        top, nodes = nodes, False
    elif memory and not nodes:
        raise ValueError("a memory plan needs the per-node costs: nodes=False needs memory=False")
    analyzer = Analyzer(graph, convention, batch, latency, memory)
    analyzer._per_node = nodes
    analyzer._top = top
    try:
        report = analyzer.refresh()
    finally:
        analyzer.close()
    if strict and analyzer.errors:
        first = next(n for n in analyzer.order if n in analyzer.errors)
        raise analyzer.errors[first]
    if strict and analyzer.share_errors:
        raise analyzer.share_errors[min(analyzer.share_errors, key=analyzer._position.__getitem__)]
    return report
