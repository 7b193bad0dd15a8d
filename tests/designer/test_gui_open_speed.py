"""What makes a large design open, lay out and render quickly, checked for the behaviour it must keep: auto-layout of
an unchanged design reuses its layout and re-routes no edge, a changed one is laid out afresh; an edge is routed
again when a node lands on its path though its ends stay; tints and pens are shared; the overview's first render
waits until the window is up."""

from PyQt6.QtGui import QColor

from convstudio.designer.gui import theme
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH, layered_layout
from convstudio.designer.gui.node_item import blend, brush, pen
from convstudio.ir.design import Design
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
