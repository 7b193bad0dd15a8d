"""Layered auto-layout (top to bottom, wrapped into columns) from the graph's generations; no Qt.

Rules:
- each node sits in the layer of its networkx topological generation;
- an edge that spans several layers gets a thin lane slot in every layer it crosses, so long
  edges (skip connections) run beside the nodes instead of through them;
- within a layer, nodes are ordered by the mean x of their producers (real nodes before lanes)
  and pushed apart to the minimum spacing, then the layer is shifted so real nodes sit on their
  producers' mean x;
- a deep graph is cut into columns of consecutive layers so the whole layout is about as wide as
  tall (ASPECT); an edge from one column to the next drops into the gutter below its column, runs
  up the gap between the columns and enters the next column from above;
- edges crossing the same gap each get a track of their own (TRACK apart), nested so that edges
  whose ends keep their left-to-right order never cross: the leftmost producer's edge runs lowest
  in the gutter, rightmost in the gap and lowest above the next column.

After a structural edit, `incremental_layout` places only what changed (rules in its docstring),
`free_offset` moves a pasted block to free space, and `Obstacles` + `orthogonal_route` route an
edge around the node rectangles its curve would cross.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from convstudio.ir.graph import Graph, parse_ref

NODE_WIDTH = 190.0
NODE_HEIGHT = 70.0
LANE_WIDTH = 16.0
H_GAP = 28.0
V_GAP = 46.0
ROW = NODE_HEIGHT + V_GAP
COLUMN_GAP = 120.0
ASPECT = 1.6
TRACK = 8.0
ROUTE_TRIES = 40


@dataclass
class Layout:
    """Top-left corner of each node, and waypoints of edges that need routing, keyed (consumer, input)."""

    positions: dict[str, tuple[float, float]]
    routes: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)


def layered_layout(graph: Graph) -> Layout:
    """Positions for every node of `graph` and routes for its long and column-crossing edges."""
    sources = {name: [(index, parse_ref(ref)[0]) for index, ref in enumerate(node.inputs) if ref is not None] for name, node in graph.nodes.items()}
    layer_of = _generation_of(graph, sources)
    layers: list[list[object]] = [[] for _ in range(max(layer_of.values(), default=-1) + 1)]
    for name in graph.nodes:
        layers[layer_of[name]].append(name)  # each generation in insertion order
    preds: dict[object, list[object]] = {}
    chains: dict[tuple[str, int], list[object]] = {}
    for name, inputs in sources.items():
        own = preds[name] = []
        for index, src in inputs:
            chain: list[object] = [src]
            for k in range(layer_of[src] + 1, layer_of[name]):
                lane = ("lane", name, index, k)
                layers[k].append(lane)
                preds[lane] = [chain[-1]]
                chain.append(lane)
            own.append(chain[-1])
            chain.append(name)
            chains[(name, index)] = chain
    x: dict[object, float] = {}
    for k, layer in enumerate(layers):
        _place_layer(layer, preds, x, first=k == 0)
    grid = _Columns(layers, x)
    positions = {}
    shift, per_column, half = grid.shift, grid.per_column, NODE_WIDTH / 2
    for k, layer in enumerate(layers):
        dx, top = shift[k // per_column], round((k % per_column) * ROW, 2)  # grid.place, for every node of the layer
        for item in layer:
            if item.__class__ is str:
                positions[item] = (round(x[item] + dx - half, 2), top)
    column = grid.column
    long = {}  # the chains that need waypoints: through lanes, or into the next column
    for key, chain in chains.items():
        first = layer_of[chain[0]]
        if len(chain) > 2 or column(first) != column(first + 1):
            long[key] = (chain, list(range(first, first + len(chain))))
    grid.assign_tracks(long)
    routes = {}
    for key, (chain, chain_layers) in long.items():
        points = grid.route(key, chain, chain_layers)
        if points:
            routes[key] = points
    return Layout(positions, routes)


def _generation_of(graph: Graph, sources: dict) -> dict[str, int]:
    """Each node's topological generation (as networkx counts them): one past the deepest of its producers."""
    layer_of: dict[str, int] = {}
    for name in graph.topo_order():
        layer_of[name] = max([layer_of[src] for _, src in sources[name]], default=-1) + 1
    return layer_of


class _Columns:
    """Maps (x within the layered drawing, layer) to the wrapped drawing, and routes edges through it."""

    def __init__(self, layers: list[list], x: dict):
        self.x = x
        spans = []
        for layer in layers:
            if layer:
                xs = [x[i] for i in layer]
                spans.append(max(xs) - min(xs) + NODE_WIDTH)
        width = sum(spans) / len(spans) if spans else NODE_WIDTH
        count = len(layers)
        columns = max(1, round(math.sqrt(ASPECT * count * ROW / (width + COLUMN_GAP))))
        self.per_column = max(1, math.ceil(count / columns))
        self.shift: list[float] = []
        self.right: list[float] = []
        self.tracks: dict[tuple, tuple[int, int]] = {}
        edge = 0.0
        for start in range(0, count, self.per_column):
            halves = [(x[i], _width(i) / 2) for layer in layers[start : start + self.per_column] for i in layer]
            lo = min([c - half for c, half in halves], default=0.0)
            hi = max([c + half for c, half in halves], default=0.0)
            self.shift.append(edge - lo)
            self.right.append(edge + hi - lo)
            edge += hi - lo + COLUMN_GAP

    def column(self, layer: int) -> int:
        return layer // self.per_column

    def place(self, item, layer: int) -> tuple[float, float]:
        """Centre x and top y of `item` in layer `layer`."""
        return self.x[item] + self.shift[self.column(layer)], (layer % self.per_column) * ROW

    def _crossing(self, chain: list, chain_layers: list[int]) -> int | None:
        """The step of `chain` that leaves one column for the next (None when it stays in one)."""
        for i in range(1, len(chain)):
            if self.column(chain_layers[i - 1]) != self.column(chain_layers[i]):
                return i
        return None

    def assign_tracks(self, chains: dict) -> None:
        """Give every edge crossing a gap its track number there and the number of tracks in that gap
        (`chains`: key -> (its chain, the layer of each step))."""
        by_gap: dict[int, list] = {}
        for key, (chain, chain_layers) in chains.items():
            i = self._crossing(chain, chain_layers)
            if i is not None:
                src_x = self.place(chain[i - 1], chain_layers[i - 1])[0]
                dst_x = self.place(chain[i], chain_layers[i])[0]
                by_gap.setdefault(self.column(chain_layers[i - 1]), []).append((src_x, dst_x, key))
        for crossing in by_gap.values():
            crossing.sort(key=lambda c: (c[0], c[1]))
            count = len(crossing)
            for rank, (_, _, key) in enumerate(crossing):
                self.tracks[key] = (count - 1 - rank, count)

    def route(self, key, chain: list, chain_layers: list[int]) -> list[tuple[float, float]]:
        """Waypoints from the producer (chain[0]) through lane slots to the consumer (chain[-1])."""
        points: list[tuple[float, float]] = []
        for i in range(1, len(chain)):
            prev_layer, layer = chain_layers[i - 1], chain_layers[i]
            if self.column(prev_layer) != self.column(layer):
                px, ptop = self.place(chain[i - 1], prev_layer)
                nx_, _ = self.place(chain[i], layer)
                track, count = self.tracks[key]
                spread = min(TRACK, (COLUMN_GAP - 2 * H_GAP) / max(count - 1, 1))
                below = ptop + NODE_HEIGHT + V_GAP / 2 + track * TRACK
                gap = self.right[self.column(prev_layer)] + COLUMN_GAP / 2 + (track - (count - 1) / 2) * spread
                above = -V_GAP / 2 - (count - 1 - track) * TRACK
                points += [(px, below), (gap, below), (gap, above), (nx_, above)]
            if i < len(chain) - 1:
                cx, top = self.place(chain[i], layer)
                points += [(cx, top), (cx, top + NODE_HEIGHT)]
        return [(round(a, 2), round(b, 2)) for a, b in points]


def _width(item: object) -> float:
    return NODE_WIDTH if item.__class__ is str else LANE_WIDTH


def _place_layer(layer: list, preds: dict, x: dict, first: bool) -> None:
    count = len(layer)
    desired: list = [None] * count
    for i, item in enumerate(layer):
        if item.__class__ is tuple:  # a lane: its one producer (node or lane) sits in an earlier layer
            desired[i] = x[preds[item][0]]
            continue
        placed_preds = [p for p in preds.get(item, ()) if p in x]
        real = [p for p in placed_preds if p.__class__ is str] or placed_preds
        if real:
            desired[i] = sum([x[p] for p in real]) / len(real)
        elif first:
            desired[i] = i * (NODE_WIDTH + H_GAP)
    if count == 1:  # most layers of a deep network: the node sits on its producers' mean x
        x[layer[0]] = desired[0] if desired[0] is not None else 0.0
        return
    if None in desired:
        known = [d for d in desired if d is not None]
        fallback = max(known) + NODE_WIDTH + H_GAP if known else 0.0
        for i in range(count):
            if desired[i] is None:
                desired[i] = fallback
                fallback += NODE_WIDTH + H_GAP
    order = sorted(range(count), key=lambda i: (desired[i], layer[i].__class__ is not str, i))
    layer[:] = [layer[i] for i in order]
    desired = [desired[i] for i in order]
    placed: list[float] = [desired[0]]
    before = _width(layer[0])
    for i in range(1, count):
        width = _width(layer[i])
        placed.append(max(desired[i], placed[-1] + (before + width) / 2 + H_GAP))
        before = width
    real = [i for i, item in enumerate(layer) if item.__class__ is str] or list(range(count))
    shift = sum([desired[i] - placed[i] for i in real]) / len(real)
    for item, value in zip(layer, placed):
        x[item] = value + shift


def incremental_layout(graph: Graph, positions: dict, gone: dict | None = None) -> dict[str, tuple[float, float]]:
    """Positions for every node of `graph` after a structural edit, given the old `positions` of the nodes
    that were kept and those of the erased nodes (`gone`).

    Rules:
    - a new node goes in line with the first kept node it feeds (through other new nodes), else at its
      producers' mean x; one row below its placed producers (siblings side by side), or in the place of
      that kept node when that is higher;
    - nodes are then taken top to bottom (ties in topological order); a node is in the change's region
      when it is new, an erased node sat above it in its x-range, or a node above it there or one of its
      producers above it is in the region; nodes outside the region keep their positions;
    - a node in the region sits one row below the lowest of its producers above it and of the nodes
      above it in its x-range, so it makes room for new nodes and closes the gaps erased ones leave;
      one with neither keeps its height.
    """
    order = graph.topo_order()
    rank = {name: i for i, name in enumerate(order)}
    new = [n for n in order if n not in positions]
    new_set = set(new)
    start = {n: tuple(positions[n]) for n in order if n in positions}
    feeds: dict[str, tuple[float, float]] = {}
    for name in reversed(new):
        spots = [start[c] if c in start else feeds.get(c) for c, _ in graph.users(name)]
        spots = [s for s in spots if s is not None]
        if spots:
            feeds[name] = min(spots, key=lambda s: s[1])
    right = max((x for x, _ in start.values()), default=-NODE_WIDTH - COLUMN_GAP) + NODE_WIDTH + COLUMN_GAP
    top = min((y for _, y in start.values()), default=0.0)
    taken: set[tuple[float, float]] = set()
    for name in new:
        placed = [start[p] for p in graph.nodes[name].input_names() if p in start]
        anchor = feeds.get(name)
        below = None
        if placed:
            x = anchor[0] if anchor is not None else sum(x for x, _ in placed) / len(placed)
            below = (x, max(y for _, y in placed) + ROW)
        if below is not None and (anchor is None or below[1] <= anchor[1]):
            while below in taken:  # siblings (branches of a new block) side by side
                below = (below[0] + NODE_WIDTH + H_GAP, below[1])
            taken.add(below)
            start[name] = below
        elif anchor is not None:
            start[name] = anchor
        else:
            start[name] = (right, top)
            top += ROW
    items = [(y, 0, -1, name) for name, (_, y) in (gone or {}).items()]
    items += [(start[n][1], 1, rank[n], n) for n in order]
    items.sort()
    final: dict[str, tuple[float, float]] = {}
    region: set[str] = set()
    bottoms = _Skyline()
    touched = _Skyline()  # x of region and erased nodes (only whether one is near matters)
    for y0, kind, _, name in items:
        if kind == 0:
            touched.add(gone[name][0], 0.0)
            continue
        x = start[name][0]
        flow = [p for p in graph.nodes[name].input_names() if p in final]  # producers above it (taken earlier)
        if name in new_set or touched.any(x) or any(p in region for p in flow):
            limits = [final[p][1] + ROW for p in flow]
            lowest = bottoms.lowest(x)
            if lowest is not None:
                limits.append(lowest + V_GAP)
            y = max(limits) if limits else y0
            region.add(name)
            touched.add(x, 0.0)
        else:
            y = y0
        final[name] = (round(x, 2), round(y, 2))
        bottoms.add(x, y + NODE_HEIGHT)
    return final


class _Skyline:
    """The lowest bottom edge seen so far at each node x, asked for a node-wide x-range."""

    def __init__(self):
        self.xs: list[float] = []
        self.bottom: dict[float, float] = {}

    def add(self, x: float, bottom: float) -> None:
        if x not in self.bottom:
            insort(self.xs, x)
            self.bottom[x] = bottom
        else:
            self.bottom[x] = max(self.bottom[x], bottom)

    def _near(self, x: float) -> list[float]:
        return self.xs[bisect_right(self.xs, x - NODE_WIDTH) : bisect_left(self.xs, x + NODE_WIDTH)]

    def any(self, x: float) -> bool:
        return bool(self._near(x))

    def lowest(self, x: float) -> float | None:
        return max((self.bottom[k] for k in self._near(x)), default=None)


def bounds(positions) -> tuple[float, float, float, float] | None:
    """(left, top, right, bottom) of the node rectangles at `positions`, None when there are none."""
    points = list(positions)
    if not points:
        return None
    return (
        min(x for x, _ in points),
        min(y for _, y in points),
        max(x for x, _ in points) + NODE_WIDTH,
        max(y for _, y in points) + NODE_HEIGHT,
    )


def beside(positions) -> tuple[float, float]:
    """Top-left corner for something dropped beside the nodes at `positions` (right of their bounding box)."""
    box = bounds(positions)
    return (0.0, 0.0) if box is None else (box[2] + COLUMN_GAP, box[1])


def free_offset(block: dict, occupied: dict) -> float:
    """How far right to shift the nodes at `block` (name -> corner) so none overlaps a node at `occupied`."""
    grid = Obstacles(occupied, margin=H_GAP / 2)
    dx = 0.0
    while True:
        hits = [grid.first_hit(x + dx, y, x + dx + NODE_WIDTH, y + NODE_HEIGHT) for x, y in block.values()]
        hits = [h for h in hits if h is not None]
        if not hits:
            return dx
        dx = max(max(occupied[h][0] for h in hits) + NODE_WIDTH + H_GAP - min(x for x, _ in block.values()), dx + H_GAP)


class Obstacles:
    """Node rectangles (grown by `margin`) in a uniform grid, to ask cheaply what a box or segment touches.

    A node set as a stray (away from where the last auto-layout put it) is also in a second grid: the
    auto-layout's edge routes need checking against strays only."""

    CELL = 256.0

    def __init__(self, positions: dict | None = None, margin: float = 0.0):
        self.margin = margin
        self.rects: dict[str, tuple[float, float, float, float]] = {}
        self.cells: dict[tuple[int, int], set[str]] = {}
        self.stray_cells: dict[tuple[int, int], set[str]] = {}
        self.strays: set[str] = set()
        for name, pos in (positions or {}).items():
            self.set(name, pos)

    def _span(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int]]:
        c = self.CELL
        rows = range(math.floor(y0 / c), math.floor(y1 / c) + 1)
        return [(i, j) for i in range(math.floor(x0 / c), math.floor(x1 / c) + 1) for j in rows]

    def _rect(self, pos) -> tuple[float, float, float, float]:
        x, y, m = float(pos[0]), float(pos[1]), self.margin
        return (x - m, y - m, x + NODE_WIDTH + m, y + NODE_HEIGHT + m)

    def holds(self, name: str, pos, stray: bool) -> bool:
        """Whether node `name` is already set at `pos`, as a stray or not as `stray` says."""
        return self.rects.get(name) == self._rect(pos) and (name in self.strays) == stray

    def set(self, name: str, pos, stray: bool = True) -> None:
        """Put node `name` with its top-left corner at `pos` (moving it if it was elsewhere)."""
        if self.holds(name, pos, stray):
            return
        rect = self._rect(pos)
        self.remove(name)
        self.rects[name] = rect
        for cell in self._span(*rect):
            self.cells.setdefault(cell, set()).add(name)
            if stray:
                self.stray_cells.setdefault(cell, set()).add(name)
        if stray:
            self.strays.add(name)

    def remove(self, name: str) -> None:
        rect = self.rects.pop(name, None)
        if rect is not None:
            for cell in self._span(*rect):
                self.cells[cell].discard(name)
                if name in self.strays:
                    self.stray_cells[cell].discard(name)
            self.strays.discard(name)

    def first_hit(self, x0: float, y0: float, x1: float, y1: float, ignore=(), strays_only: bool = False) -> str | None:
        """A node (a stray, with `strays_only`) whose rectangle overlaps the box (corners in any order) in more
        than a line, else None."""
        if strays_only and not self.strays:
            return None
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        cells = self.stray_cells if strays_only else self.cells
        rects, c = self.rects, self.CELL
        rows = range(math.floor(y0 / c), math.floor(y1 / c) + 1)
        for i in range(math.floor(x0 / c), math.floor(x1 / c) + 1):  # the cells of _span, in its order
            for j in rows:
                for name in cells.get((i, j), ()):
                    r = rects[name]
                    if r[0] < x1 and x0 < r[2] and r[1] < y1 and y0 < r[3] and name not in ignore:
                        return name
        return None


def orthogonal_route(start: tuple[float, float], end: tuple[float, float], obstacles: Obstacles, ends: tuple[str, str]):
    """Waypoints of an axis-parallel path from an output port (`start`, bottom of node ends[0]) to an input port
    (`end`, top of node ends[1]) that touches no node rectangle, or None when none of the tried paths is clear.

    The path drops into the gap below its producer, runs sideways to a vertical channel, along it to the gap
    above the consumer, and in. Channels are tried cheapest first: the ends' x, then beside each node found
    in the way (at most ROUTE_TRIES)."""
    (sx, sy), (tx, ty) = start, end
    y1, y2 = sy + V_GAP / 2, ty - V_GAP / 2
    hit = obstacles.first_hit
    if hit(sx, sy, sx, y1, ends) or hit(tx, y2, tx, ty, ends):
        return None
    candidates, tried = [sx, tx], set()
    while candidates and len(tried) < ROUTE_TRIES:
        candidates.sort(key=lambda c: (abs(c - sx) + abs(c - tx), c))
        xc = candidates.pop(0)
        if xc in tried:
            continue
        tried.add(xc)
        blocker = hit(sx, y1, xc, y1) or hit(xc, y1, xc, y2) or hit(xc, y2, tx, y2)
        if blocker is None:
            points = [(sx, y1), (xc, y1), (xc, y2), (tx, y2)]
            return [(round(a, 2), round(b, 2)) for a, b in _without_repeats(points)]
        r = obstacles.rects[blocker]
        candidates += [r[0] - H_GAP / 2, r[2] + H_GAP / 2]
    return None


def _without_repeats(points: list) -> list:
    out: list = []
    for p in points:
        if not out or p != out[-1]:
            out.append(p)
    return out
