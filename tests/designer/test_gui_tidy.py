"""Tidy after every structural edit: strategies, fusion, template and block drops, paste, and their undo/redo
leave node rectangles pairwise disjoint and every edge clear of every node but its own ends (geometric checks)."""

import math
import random

import pytest

from convstudio.designer.gui.layout import COLUMN_GAP, NODE_HEIGHT, NODE_WIDTH, V_GAP, layered_layout
from convstudio.ir.design import Design
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window

TEMPLATES = ("resnet18", "mobilenet_v2", "googlenet")
CELL = 300.0


def rects_of(win) -> dict:
    """Node rectangles (x0, y0, x1, y1) as the canvas draws them; they must be where the design's layout says."""
    out = {}
    for name, item in win.scene.nodes.items():
        assert tuple(win.ctl.graph.layout[name]) == (item.x(), item.y()), f"{name} drawn away from its layout position"
        out[name] = (item.x(), item.y(), item.x() + NODE_WIDTH, item.y() + NODE_HEIGHT)
    assert set(out) == set(win.ctl.graph.nodes)
    return out


def overlapping_pairs(rects: dict) -> list:
    """Pairs of rectangles sharing more than an edge, by a sweep over x."""
    ordered = sorted(rects.items(), key=lambda kv: kv[1][0])
    pairs = []
    for i, (a, ra) in enumerate(ordered):
        for b, rb in ordered[i + 1 :]:
            if rb[0] >= ra[2]:
                break
            if rb[1] < ra[3] and ra[1] < rb[3]:
                pairs.append((a, b))
    return pairs


def segment_crosses(p, q, r) -> bool:
    """Whether segment p-q passes through the inside of rectangle r (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = p, q
    lo, hi = 0.0, 1.0
    for d, room in ((x0 - x1, x0 - r[0]), (x1 - x0, r[2] - x0), (y0 - y1, y0 - r[1]), (y1 - y0, r[3] - y0)):
        if d == 0:
            if room <= 0:
                return False
        elif d < 0:
            lo = max(lo, room / d)
        else:
            hi = min(hi, room / d)
    return lo < hi


def edges_through_nodes(win, rects: dict) -> list:
    """(producer, consumer, node crossed) for every edge whose drawn path enters a node other than its ends."""
    cells: dict = {}
    inner = {n: (r[0] + 0.5, r[1] + 0.5, r[2] - 0.5, r[3] - 0.5) for n, r in rects.items()}
    for name, r in inner.items():
        for i in range(math.floor(r[0] / CELL), math.floor(r[2] / CELL) + 1):
            for j in range(math.floor(r[1] / CELL), math.floor(r[3] / CELL) + 1):
                cells.setdefault((i, j), []).append(name)
    bad = set()
    for edge in win.scene.edges.values():
        ends = (edge.src.name, edge.dst.name)
        for polygon in edge.path().toSubpathPolygons():
            points = [(polygon.at(k).x(), polygon.at(k).y()) for k in range(polygon.size())]
            for p, q in zip(points, points[1:]):
                near = set()
                for i in range(math.floor(min(p[0], q[0]) / CELL), math.floor(max(p[0], q[0]) / CELL) + 1):
                    for j in range(math.floor(min(p[1], q[1]) / CELL), math.floor(max(p[1], q[1]) / CELL) + 1):
                        near.update(cells.get((i, j), ()))
                bad.update((*ends, n) for n in near if n not in ends and segment_crosses(p, q, inner[n]))
    return sorted(bad)


def assert_tidy(win) -> dict:
    rects = rects_of(win)
    assert overlapping_pairs(rects) == []
    assert edges_through_nodes(win, rects) == []
    return rects


def columns(positions: dict) -> dict:
    """Column number of each node: runs of nodes closer than the layout's column gap, left to right."""
    column, right, out = -1, -math.inf, {}
    for name, (x, _) in sorted(positions.items(), key=lambda kv: kv[1][0]):
        if x >= right + COLUMN_GAP:
            column += 1
        right = max(right, x + NODE_WIDTH)
        out[name] = column
    return out


def assert_rest_in_place(before: dict, graph, changed: set) -> None:
    """Nodes in columns the change did not reach, and nodes above the change in its columns, keep their positions."""
    old_graph_columns = columns(before)
    after = graph.layout
    spots = [before[n] for n in changed if n in before] + [after[n] for n in changed if n not in before]
    reach: dict = {}
    for x, y in spots:
        for name, (nx, _) in before.items():
            if nx < x + NODE_WIDTH + COLUMN_GAP and x < nx + NODE_WIDTH + COLUMN_GAP:
                column = old_graph_columns[name]
                reach[column] = min(reach.get(column, math.inf), y)
    kept = [n for n in before if n in graph.nodes and n not in changed]
    untouched = [n for n in kept if before[n][1] + NODE_HEIGHT <= reach.get(old_graph_columns[n], math.inf)]
    assert untouched, "the check must cover some nodes"
    assert [n for n in untouched if tuple(after[n]) != tuple(before[n])] == []


def changed_nodes(old, new) -> set:
    """Nodes added, erased, or fed differently."""
    out = set(old.nodes) ^ set(new.nodes)
    out |= {n for n in set(old.nodes) & set(new.nodes) if old.nodes[n].inputs != new.nodes[n].inputs}
    return out


def assert_no_gaps(graph) -> None:
    """Every node with something above it (a producer, or a node in its x-range) sits one spacing below the lowest."""
    layout = graph.layout
    for name, node in graph.nodes.items():
        x, y = layout[name]
        above = [layout[p][1] + NODE_HEIGHT for p in node.input_names() if layout[p][1] < y]
        above += [oy + NODE_HEIGHT for n, (ox, oy) in layout.items() if oy < y and ox < x + NODE_WIDTH and x < ox + NODE_WIDTH]
        if above:
            assert y - max(above) <= V_GAP + 0.01, f"gap above {name}"


@pytest.fixture(params=TEMPLATES)
def window(request, qtbot, tmp_path):
    return make_window(qtbot, Design(build_template(request.param)), tmp_path / "recovery")


def undo_redo_exact(win, before: dict, after: dict) -> None:
    win.ctl.undo_stack.undo()
    assert win.ctl.graph.layout == before
    assert_tidy(win)
    win.ctl.undo_stack.redo()
    assert win.ctl.graph.layout == after
    assert_tidy(win)


def convs(graph) -> list[str]:
    return [n for n in graph.topo_order() if graph.nodes[n].op == "Conv2d"]


@pytest.mark.parametrize("strategy", ["separable", "width", "prune"])
@pytest.mark.parametrize("scope", ["all", "selection"])
def test_strategy_places_new_nodes_without_overlap(window, strategy, scope):
    ctl = window.ctl
    assert_tidy(window)
    before, old = dict(ctl.graph.layout), ctl.graph
    fitting = [n for n in convs(old) if STRATEGIES[strategy].applies(old, n) is None]
    targets = fitting[len(fitting) // 2 :][:2] if scope == "selection" else None
    result = STRATEGIES[strategy].apply(old, targets)
    assert result.changed
    ctl.replace_graph(result.graph, f"{strategy} on {scope}")
    assert_tidy(window)
    changed = changed_nodes(old, ctl.graph)
    if changed:
        assert_rest_in_place(before, ctl.graph, changed)
    else:
        assert ctl.graph.layout == before, "a rewrite that adds and moves no node keeps every position"
    undo_redo_exact(window, before, dict(ctl.graph.layout))


def test_fuse_closes_its_gaps(window):
    ctl = window.ctl
    before, old = dict(ctl.graph.layout), ctl.graph
    result = fuse(old)
    assert result.changed
    ctl.replace_graph(result.graph, "Fuse")
    assert_tidy(window)
    assert_no_gaps(ctl.graph)
    assert_rest_in_place(before, ctl.graph, changed_nodes(old, ctl.graph))
    fused = ctl.graph.layout
    assert max(y for _, y in fused.values()) < max(y for _, y in before.values()), "the columns got shorter"
    undo_redo_exact(window, before, dict(fused))


def test_a_fresh_layout_has_no_gaps_either(window):
    assert_no_gaps(window.ctl.graph)


def test_template_drops_beside_the_design(window):
    ctl = window.ctl
    before = dict(ctl.graph.layout)
    right = max(x for x, _ in before.values()) + NODE_WIDTH
    names = ctl.insert_template("lenet", before[next(iter(before))])  # dropped onto the first node
    assert_tidy(window)
    assert all(ctl.graph.layout[n][0] > right for n in names)
    assert {n: ctl.graph.layout[n] for n in before} == before
    undo_redo_exact(window, before, dict(ctl.graph.layout))


def test_block_drop_makes_room_below(window):
    ctl = window.ctl
    graph = ctl.graph
    before = dict(graph.layout)
    acts = [n for n in graph.topo_order() if graph.nodes[n].op in ("ReLU", "ReLU6")]
    after_node = acts[len(acts) // 3]
    consumer = graph.users(after_node)[0][0]
    names = ctl.insert_block("se", after_node)
    assert_tidy(window)
    assert all(ctl.graph.layout[n][1] > before[after_node][1] for n in names), "the block goes below the node it follows"
    assert ctl.graph.layout[consumer][1] > before[consumer][1], "what followed moved down to make room"
    assert_rest_in_place(before, ctl.graph, {*names, consumer})
    undo_redo_exact(window, before, dict(ctl.graph.layout))


def test_paste_lands_clear_of_the_design(window):
    ctl = window.ctl
    before = dict(ctl.graph.layout)
    chosen = ctl.graph.topo_order()[3:11]
    ctl.copy(chosen)
    names = ctl.paste()
    assert len(names) == len(chosen)
    assert_tidy(window)
    assert {n: ctl.graph.layout[n] for n in before} == before
    undo_redo_exact(window, before, dict(ctl.graph.layout))


def test_edges_route_around_hand_placed_nodes(qtbot, tmp_path):
    """Nodes dropped on edges' paths or scattered by hand: the edges go around them."""
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    ctl = win.ctl
    rects = rects_of(win)
    others = {n: r for n, r in rects.items() if n != "fc"}
    spots = [(x - NODE_WIDTH / 2, y - NODE_HEIGHT / 2) for points in layered_layout(ctl.graph).routes.values() for x, y in points]
    free = [(x, y) for x, y in spots if not overlapping_pairs({**others, "fc": (x, y, x + NODE_WIDTH, y + NODE_HEIGHT)})]
    x, y = next(spot for spot in free if edges_through_nodes(win, {**rects, "probe": (*spot, spot[0] + NODE_WIDTH, spot[1] + NODE_HEIGHT)}))
    ctl.move({"fc": (x, y)})  # right on an edge's path
    assert edges_through_nodes(win, rects_of(win)) == []
    assert_tidy(win)
    rng = random.Random(7)
    names = list(ctl.graph.nodes)
    cells = rng.sample([(i, j) for i in range(12) for j in range(12)], len(names))
    ctl.move({n: (i * (NODE_WIDTH + 80.0), j * (NODE_HEIGHT + 80.0)) for n, (i, j) in zip(names, cells)})
    assert_tidy(win)
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert ctl.graph.layout == {n: tuple(p) for n, p in layered_layout(ctl.graph).positions.items()}
    assert_tidy(win)
