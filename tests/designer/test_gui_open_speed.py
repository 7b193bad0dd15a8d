"""What makes a large design open, lay out and render quickly, checked for the behaviour it must keep: auto-layout of
an unchanged design reuses its layout and re-routes no edge, a changed one is laid out afresh; an edge is routed
again when a node lands on its path though its ends stay, and when the layout gives it new waypoints; tints and pens
are shared; the overview's first render waits until the window is up; items cache their drawing only where text is
drawn; a node's text and tooltip are composed when first needed, from the node as last synced; the layered layout's
rows are the graph's topological generations; a file with a position for every node opens at them; zoomed far out an
unselected edge is drawn one pixel wide; the overview draws what the canvas shows without asking each item."""

from PyQt6.QtCore import QRectF, QSizeF
from PyQt6.QtGui import QColor, QImage, QPainter
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsScene

from convstudio.designer.gui import commands, theme
from convstudio.designer.gui.diff_view import DiffScene
from convstudio.designer.gui.edge_item import LABEL_DETAIL, EdgeItem
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH, ROW, layered_layout
from convstudio.designer.gui.minimap import Minimap
from convstudio.designer.gui.node_item import BOUNDS, DETAIL_THRESHOLD, NodeItem, blend, brush, pen
from convstudio.ir.design import Design, load, save
from convstudio.ir.diff import diff
from convstudio.ir.groups import members as group_members
from convstudio.ir.templates import build_template
from tests.designer.test_gui_tidy import segment_crosses
from tests.designer.windows import make_window


def test_auto_layout_of_an_unchanged_design_reroutes_no_edge_and_a_changed_one_is_laid_out_afresh(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    ctl, scene = win.ctl, win.scene
    routed = {key: edge.routed for key, edge in scene.edges.items()}
    paths = {key: edge.path() for key, edge in scene.edges.items()}
    steps = ctl.undo_stack.count()
    ctl.auto_layout()
    assert ctl.undo_stack.count() == steps + 1 and ctl.undo_stack.undoText() == "Auto-layout"
    assert ctl.graph.layout == layered_layout(ctl.graph).positions
    assert [key for key, edge in scene.edges.items() if edge.routed is not routed[key]] == []
    assert [key for key, edge in scene.edges.items() if edge.path() != paths[key]] == []

    conv = next(name for name, node in ctl.graph.nodes.items() if node.op == "Conv2d")
    inserted = ctl.add_op_after("ReLU", f"{conv}:0")
    ctl.auto_layout()
    fresh = layered_layout(ctl.graph)
    assert inserted in ctl.graph.layout and ctl.graph.layout == fresh.positions
    for (dst, index), points in fresh.routes.items():
        assert ctl.route(dst, index) == points
    for name, item in scene.nodes.items():
        assert (item.x(), item.y()) == tuple(ctl.graph.layout[name])


def test_an_edge_whose_ends_stay_is_routed_again_when_a_node_lands_on_it(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery")
    ctl, scene = win.ctl, win.scene
    edge = scene.edges[("relu2", 0)]  # conv2 -> relu2 climbs the gap between the first two columns
    assert (250.0, -23.0) in ctl.route("relu2", 0)
    before, path = edge.routed, edge.path()
    ctl.move({"logits": (250.0 - NODE_WIDTH / 2, 250.0)})  # right on that climb
    assert edge.routed is not before and edge.routed[:5] == before[:5]  # same ends and waypoints, new obstacles
    assert edge.path() != path
    x, y = ctl.graph.layout["logits"]
    inner = (x + 0.5, y + 0.5, x + NODE_WIDTH - 0.5, y + NODE_HEIGHT - 0.5)
    for polygon in edge.path().toSubpathPolygons():
        points = [(polygon.at(k).x(), polygon.at(k).y()) for k in range(polygon.size())]
        assert not any(segment_crosses(p, q, inner) for p, q in zip(points, points[1:])), "the edge runs through the node placed on it"


def test_tints_and_pens_are_shared_and_follow_the_theme(qtbot):
    colours = theme.active()
    half = blend(0.5)
    assert blend(0.5) is half and blend(0.0) == colours.node and blend(1.0) == colours.hot
    assert half == QColor(
        int(colours.node.red() + (colours.hot.red() - colours.node.red()) * 0.5),
        int(colours.node.green() + (colours.hot.green() - colours.node.green()) * 0.5),
        int(colours.node.blue() + (colours.hot.blue() - colours.node.blue()) * 0.5),
    )
    assert pen(half, 1.5) is pen(QColor(half), 1.5) and pen(half, 1.5).widthF() == 1.5 and pen(half, 3).color() == half
    assert brush(half) is brush(QColor(half)) and brush(half).color() == half


def test_the_overview_renders_after_the_window_is_shown_not_while_it_opens(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    win.resize(1200, 800)
    win.show()
    minimap = win.minimap
    assert minimap.renders == 0 and minimap.timer.isActive()
    qtbot.waitUntil(lambda: minimap.pixmap is not None, timeout=60_000)
    assert minimap.renders == 1
    renders = minimap.renders
    minimap.resize(minimap.width() + 20, minimap.height())  # once drawn, a resize renders at once
    assert minimap.renders == renders + 1


def test_items_cache_their_drawing_only_where_text_is_drawn(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", (1200, 800))
    scene, view = win.scene, win.view

    def modes() -> set:
        return {item.cacheMode() for item in [*scene.nodes.values(), *scene.edges.values()]}

    view.set_zoom(1.0)
    assert modes() == {QGraphicsItem.CacheMode.DeviceCoordinateCache}
    view.set_zoom(DETAIL_THRESHOLD / 2)  # plain boxes and lines: cheaper drawn than cached
    assert modes() == {QGraphicsItem.CacheMode.NoCache}
    conv = next(name for name, node in win.ctl.graph.nodes.items() if node.op == "Conv2d")
    added = win.ctl.add_op_after("ReLU", f"{conv}:0")
    assert scene.nodes[added].cacheMode() == QGraphicsItem.CacheMode.NoCache and modes() == {QGraphicsItem.CacheMode.NoCache}
    view.set_zoom(DETAIL_THRESHOLD * 1.5)
    assert modes() == {QGraphicsItem.CacheMode.DeviceCoordinateCache}
    with scene.plain():  # a picture draws every item directly, then the modes come back
        assert modes() == {QGraphicsItem.CacheMode.NoCache}
    assert modes() == {QGraphicsItem.CacheMode.DeviceCoordinateCache}


def test_node_text_and_tooltip_follow_each_sync_and_a_tooltip_set_on_the_item_wins(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery")
    conv = next(name for name, node in win.ctl.graph.nodes.items() if node.op == "Conv2d")
    item = win.scene.nodes[conv]
    assert item.texts[0] == conv and f"<b>{conv}</b> (Conv2d)" in item.toolTip()
    win.ctl.set_attr(conv, "out_channels", 7)
    assert "→7" in item.texts[1] and item.texts[2].startswith("7×") and "params" in item.texts[3]
    assert f"<b>{conv}</b> (Conv2d)<br>7×" in item.toolTip()
    item.setToolTip("added: +1 k params")  # as the diff view does
    assert item.toolTip() == "added: +1 k params"


def test_the_diff_view_shows_every_node_tooltip_through_qt(qtbot):
    a = build_template("lenet")
    b = a.copy()
    conv = next(name for name, node in b.nodes.items() if node.op == "Conv2d")
    b.set_attr(conv, "out_channels", 7)
    scene = DiffScene(diff(a, b), "a", "b")
    for item in [*scene.items_a.values(), *scene.items_b.values()]:
        assert QGraphicsItem.toolTip(item).startswith(f"<b>{item.name}</b>")  # what the scene's own help event reads
    assert "changed" in QGraphicsItem.toolTip(scene.items_b[conv])


def test_an_edge_is_drawn_again_when_the_layout_gives_it_new_waypoints_though_its_ends_stay(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    ctl, scene = win.ctl, win.scene
    key, (ends, points) = next(iter(ctl.routes.items()))
    shifted = [(x + 40.0, y) for x, y in points]
    routes = {**ctl.routes, key: (ends, shifted)}
    ctl.push(commands.SetLayout(ctl, dict(ctl.graph.layout), routes))  # the same positions, one lane moved
    assert ctl.route(*key) == shifted
    path = scene.edges[key].path()
    drawn = {(path.elementAt(i).x, path.elementAt(i).y) for i in range(path.elementCount())}
    assert set(shifted) <= drawn and not set(points) <= drawn


def test_layered_layout_rows_are_the_topological_generations(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("googlenet")), tmp_path / "recovery")
    ctl = win.ctl
    conv = next(name for name, node in ctl.graph.nodes.items() if node.op == "Conv2d")
    ctl.add_op_after("ReLU", f"{conv}:0")  # inserted last: the insertion order is no longer topological
    positions = layered_layout(ctl.graph).positions
    tops = []
    for generation in ctl.graph.generations():
        rows = {positions[name][1] for name in generation}
        assert len(rows) == 1, f"generation of {generation[0]} spread over rows {rows}"
        tops.append(rows.pop())
    assert tops[0] == 0.0 and all(b in (a + ROW, 0.0) for a, b in zip(tops, tops[1:]))  # a row down, or the top of the next column


def test_a_file_with_a_position_for_every_node_opens_at_those_positions(qtbot, tmp_path):
    graph = build_template("resnet18")
    laid = layered_layout(graph).positions
    graph.layout.update(laid)
    save(Design(graph), tmp_path / "placed.json")
    graph.layout.update({name: (-x, y + 7.0) for name, (x, y) in laid.items()})  # not where the auto-layout puts them
    save(Design(graph), tmp_path / "moved.json")

    win = make_window(qtbot, load(tmp_path / "moved.json"), tmp_path / "recovery")
    assert {name: (item.x(), item.y()) for name, item in win.scene.nodes.items()} == {name: (-x, y + 7.0) for name, (x, y) in laid.items()}
    assert win.ctl.graph.layout == {name: (-x, y + 7.0) for name, (x, y) in laid.items()} and not win.ctl.modified

    win = make_window(qtbot, load(tmp_path / "placed.json"), tmp_path / "recovery2")
    ctl, scene = win.ctl, win.scene
    assert {name: (item.x(), item.y()) for name, item in scene.nodes.items()} == laid and not scene.obstacles.strays
    routed = {key: edge.routed for key, edge in scene.edges.items()}
    ctl.auto_layout()  # the file's positions are the auto-layout's: nothing moves, no edge is routed again
    assert ctl.graph.layout == laid and [key for key, edge in scene.edges.items() if edge.routed is not routed[key]] == []


def dark_run(image: QImage, y: int) -> int:
    """How many pixels of row `y` differ from the white background."""
    return sum(1 for x in range(image.width()) if image.pixel(x, y) != 0xFFFFFFFF)


def test_far_out_an_unselected_edge_is_a_one_pixel_line_and_a_selected_one_keeps_its_pen(qtbot):
    scene = QGraphicsScene()
    top, bottom = NodeItem("a", cached=False), NodeItem("b", cached=False)
    bottom.setPos(0.0, 2000.0)  # straight below: the edge is a vertical line
    for item in (top, bottom):
        scene.addItem(item)
    edge = EdgeItem(top, 0, bottom, 0, lambda *_: None, cached=False)
    scene.addItem(edge)
    assert top.boundingRect() == BOUNDS and "boundingRect" not in vars(NodeItem)  # Qt reads a node's bounds without Python

    def drawn_width(scale: float) -> int:
        image = QImage(400, 400, QImage.Format.Format_RGB32)
        image.fill(0xFFFFFFFF)
        painter = QPainter(image)
        side = 400 / scale  # the scene square drawn: centred on the edge, halfway between the nodes
        scene.render(painter, QRectF(0, 0, 400, 400), QRectF(NODE_WIDTH / 2 - side / 2, 1000.0 - side / 2, side, side))
        painter.end()
        return dark_run(image, 200)

    assert drawn_width(LABEL_DETAIL / 4) == 1
    near = drawn_width(1.0)
    assert near >= 2
    edge.setSelected(True)
    edge.show_selected(True)
    assert drawn_width(LABEL_DETAIL / 4) >= near


def test_the_overview_draws_shown_nodes_in_their_tint_the_selection_in_blue_and_a_folded_group_as_one_box(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    ctl, scene = win.ctl, win.scene
    group = next(name for name in ctl.graph.groups if name.startswith("layer2"))
    members = set(group_members(ctl.graph.groups, group))
    outside = [name for name in ctl.graph.nodes if name not in members and scene.nodes[name].fill != theme.active().selected]
    ctl.set_collapsed([group], True)
    ctl.select([outside[1]])
    box = scene.folds.items[group]
    hidden = next(name for name in members if not QRectF(box.pos(), QSizeF(NODE_WIDTH, NODE_HEIGHT)).intersects(
        QRectF(scene.nodes[name].pos(), QSizeF(NODE_WIDTH, NODE_HEIGHT))))
    area = scene.itemsBoundingRect()
    image = QImage(int(area.width()) + 1, int(area.height()) + 1, QImage.Format.Format_RGB32)
    image.fill(theme.active().canvas)
    painter = QPainter(image)
    painter.translate(-area.topLeft())
    Minimap._draw(painter, scene)
    painter.end()

    def colour_at(pos) -> QColor:
        return image.pixelColor(int(pos.x() - area.left() + NODE_WIDTH / 2), int(pos.y() - area.top() + NODE_HEIGHT / 2))

    assert colour_at(scene.nodes[outside[0]].pos()) == scene.nodes[outside[0]].fill
    assert colour_at(scene.nodes[outside[1]].pos()) == theme.active().selected
    assert colour_at(box.pos()) == theme.active().group_fill
    assert colour_at(scene.nodes[hidden].pos()) == theme.active().canvas
