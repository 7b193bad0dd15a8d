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
"""

from __future__ import annotations

import math
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


@dataclass
class Layout:
    """Top-left corner of each node, and waypoints of edges that need routing, keyed (consumer, input)."""

    positions: dict[str, tuple[float, float]]
    routes: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)


def layered_layout(graph: Graph) -> Layout:
    """Positions for every node of `graph` and routes for its long and column-crossing edges."""
    generations = graph.generations()
    layer_of = {name: k for k, gen in enumerate(generations) for name in gen}
    layers: list[list[object]] = [list(gen) for gen in generations]
    preds: dict[object, list[object]] = {}
    chains: dict[tuple[str, int], list[object]] = {}
    for name, node in graph.nodes.items():
        preds.setdefault(name, [])
        for index, ref in enumerate(node.inputs):
            if ref is None:
                continue
            src = parse_ref(ref)[0]
            chain: list[object] = [src]
            for k in range(layer_of[src] + 1, layer_of[name]):
                lane = ("lane", name, index, k)
                layers[k].append(lane)
                preds[lane] = [chain[-1]]
                chain.append(lane)
            preds[name].append(chain[-1])
            chain.append(name)
            chains[(name, index)] = chain
    x: dict[object, float] = {}
    for k, layer in enumerate(layers):
        _place_layer(layer, preds, x, first=k == 0)
    grid = _Columns(layers, x)
    positions = {}
    for k, layer in enumerate(layers):
        for item in layer:
            if isinstance(item, str):
                cx, top = grid.place(item, k)
                positions[item] = (round(cx - NODE_WIDTH / 2, 2), round(top, 2))
    chain_layers = {key: [layer_of[chain[0]] + i for i in range(len(chain))] for key, chain in chains.items()}
    grid.assign_tracks(chains, chain_layers)
    routes = {}
    for key, chain in chains.items():
        points = grid.route(key, chain, chain_layers[key])
        if points:
            routes[key] = points
    return Layout(positions, routes)


class _Columns:
    """Maps (x within the layered drawing, layer) to the wrapped drawing, and routes edges through it."""

    def __init__(self, layers: list[list], x: dict):
        self.x = x
        spans = [max(x[i] for i in layer) - min(x[i] for i in layer) + NODE_WIDTH for layer in layers if layer]
        width = sum(spans) / len(spans) if spans else NODE_WIDTH
        count = len(layers)
        columns = max(1, round(math.sqrt(ASPECT * count * ROW / (width + COLUMN_GAP))))
        self.per_column = max(1, math.ceil(count / columns))
        self.shift: list[float] = []
        self.right: list[float] = []
        self.tracks: dict[tuple, tuple[int, int]] = {}
        edge = 0.0
        for start in range(0, count, self.per_column):
            items = [item for layer in layers[start : start + self.per_column] for item in layer]
            lo = min((x[i] - _width(i) / 2 for i in items), default=0.0)
            hi = max((x[i] + _width(i) / 2 for i in items), default=0.0)
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

    def assign_tracks(self, chains: dict, chain_layers: dict) -> None:
        """Give every edge crossing a gap its track number there and the number of tracks in that gap."""
        by_gap: dict[int, list] = {}
        for key, chain in chains.items():
            i = self._crossing(chain, chain_layers[key])
            if i is not None:
                src_x = self.place(chain[i - 1], chain_layers[key][i - 1])[0]
                dst_x = self.place(chain[i], chain_layers[key][i])[0]
                by_gap.setdefault(self.column(chain_layers[key][i - 1]), []).append((src_x, dst_x, key))
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
    return NODE_WIDTH if isinstance(item, str) else LANE_WIDTH


def _place_layer(layer: list, preds: dict, x: dict, first: bool) -> None:
    desired = {}
    for i, item in enumerate(layer):
        placed_preds = [p for p in preds.get(item, ()) if p in x]
        real = [p for p in placed_preds if isinstance(p, str)] or placed_preds
        desired[item] = sum(x[p] for p in real) / len(real) if real else (i * (NODE_WIDTH + H_GAP) if first else None)
    known = [d for d in desired.values() if d is not None]
    fallback = max(known) + NODE_WIDTH + H_GAP if known else 0.0
    for item in layer:
        if desired[item] is None:
            desired[item] = fallback
            fallback += NODE_WIDTH + H_GAP
    position = {item: i for i, item in enumerate(layer)}
    layer.sort(key=lambda item: (desired[item], not isinstance(item, str), position[item]))
    placed: list[float] = []
    for i, item in enumerate(layer):
        want = desired[item]
        if i:
            prev = layer[i - 1]
            want = max(want, placed[-1] + (_width(prev) + _width(item)) / 2 + H_GAP)
        placed.append(want)
    real = [i for i, item in enumerate(layer) if isinstance(item, str)] or list(range(len(layer)))
    shift = sum(desired[layer[i]] - placed[i] for i in real) / len(real)
    for item, value in zip(layer, placed):
        x[item] = value + shift
