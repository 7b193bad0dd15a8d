"""Overview: the minimap, edge shape labels, port tooltips, zoom keys, arrow-key nudges and the empty-canvas menu."""

import pytest
from PyQt6.QtCore import QEvent, QPoint, QPointF, QRectF, QSizeF, Qt
from PyQt6.QtGui import QContextMenuEvent, QHelpEvent, QKeyEvent, QMouseEvent
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication, QToolTip

from convstudio.designer.gui.canvas import NUDGE_BIG_STEP, NUDGE_STEP
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.ir.design import Design
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window, view_centre

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def window(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", (1400, 900))
    win.activateWindow()
    return win


@pytest.fixture
def lenet(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800))
    win.activateWindow()
    return win


# ---- minimap ---------------------------------------------------------------------------------
def test_minimap_click_and_drag_move_the_view_there(window, qtbot):
    minimap, view = window.minimap, window.view
    qtbot.waitUntil(lambda: minimap.pixmap is not None, timeout=60_000)
    view.set_zoom(1.0)
    design = window.scene.itemsBoundingRect()
    for fx, fy in ((0.25, 0.3), (0.7, 0.6)):
        target = QPointF(design.left() + fx * design.width(), design.top() + fy * design.height())
        at = minimap.widget_point(target)
        QTest.mouseClick(minimap, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at.toPoint())
        clicked = minimap.scene_point(QPointF(at.toPoint()))
        centre = view_centre(view)
        assert abs(centre.x() - clicked.x()) < 2 and abs(centre.y() - clicked.y()) < 2
    start = minimap.widget_point(design.center()).toPoint()
    QTest.mousePress(minimap, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    end = start + QPoint(15, 10)
    QApplication.sendEvent(minimap, mouse_move(end))
    QTest.mouseRelease(minimap, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    dragged = minimap.scene_point(QPointF(end))
    assert abs(view_centre(view).x() - dragged.x()) < 2 and abs(view_centre(view).y() - dragged.y()) < 2


def mouse_move(pos: QPoint) -> QMouseEvent:
    """A drag step: the mouse at `pos` with the left button held."""
    return QMouseEvent(QEvent.Type.MouseMove, QPointF(pos), QPointF(pos), Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)


def test_minimap_shows_the_viewport_and_rerenders_only_for_edits(window, qtbot):
    minimap, view, ctl = window.minimap, window.view, window.ctl
    qtbot.waitUntil(lambda: minimap.pixmap is not None and not minimap.timer.isActive(), timeout=60_000)
    renders = minimap.renders
    visible = minimap.visible_scene_rect()
    view.horizontalScrollBar().setValue(view.horizontalScrollBar().value() + 200)
    view.zoom_by(0.8)
    QApplication.processEvents()
    assert minimap.visible_scene_rect() != visible
    assert minimap.renders == renders  # scrolling and zooming redraw only the rectangle over the cached pixmap
    for k in range(5):  # a burst of edits costs one render
        ctl.move({"fc": (ctl.graph.layout["fc"][0] + 10 * (k + 1), ctl.graph.layout["fc"][1])})
    assert minimap.timer.isActive()
    qtbot.waitUntil(lambda: minimap.renders == renders + 1, timeout=60_000)
    QApplication.processEvents()
    assert minimap.renders == renders + 1 and not minimap.timer.isActive()
    image = minimap.grab().toImage()
    inside = minimap.widget_rect(minimap.visible_scene_rect()).intersected(minimap.target)
    edge = image.pixelColor(int(inside.left()) + 1, int(inside.center().y()))
    assert edge.blue() > edge.red() + 60  # the viewport rectangle is drawn (blue)


def test_a_hidden_minimap_renders_nothing_until_shown(window, qtbot):
    minimap, ctl = window.minimap, window.ctl
    qtbot.waitUntil(lambda: minimap.pixmap is not None and not minimap.timer.isActive(), timeout=60_000)
    renders = minimap.renders
    dock = minimap.parentWidget()
    dock.hide()
    ctl.move({"fc": (0.0, 0.0)})
    ctl.select(["fc"])
    assert not minimap.timer.isActive() and minimap.stale and minimap.renders == renders
    dock.show()
    assert minimap.renders > renders and not minimap.stale


def test_closing_the_window_stops_the_minimap(window):
    minimap = window.minimap
    window.ctl.move({"fc": (0.0, 0.0)})
    assert minimap.timer.isActive()
    assert window.close()
    assert not minimap.timer.isActive()


# ---- shapes on edges and ports ------------------------------------------------------------------
def test_edge_labels_show_the_shapes_and_follow_the_batch(lenet):
    scene, ctl = lenet.scene, lenet.ctl
    assert all(edge.label is None for edge in scene.edges.values())
    lenet.edge_shapes_action.trigger()
    for edge in scene.edges.values():
        shape = ctl.graph.nodes[edge.src.name].meta["shapes"][edge.out]
        assert edge.label.text() == "×".join(map(str, ["N", *shape]))
        assert edge.label.isVisible() and edge.label.scene() is scene
    assert scene.edges[("conv1", 0)].label.text() == "N×1×28×28"
    ctl.set_convention("flops", 8)
    assert scene.edges[("conv1", 0)].label.text() == "8×1×28×28"
    ctl.set_attr("conv1", "out_channels", 12)
    assert scene.edges[("relu1", 0)].label.text() == "8×12×28×28"
    edge = scene.edges[("relu1", 0)]
    port = edge.dst.mapToScene(edge.dst.input_port(0))
    label = edge.label.sceneBoundingRect()
    assert abs(label.center().x() - port.x()) < 1 and port.y() - 30 < label.center().y() < port.y()  # just above the port it feeds
    lenet.edge_shapes_action.trigger()
    assert all(edge.label is None for edge in scene.edges.values())
    assert not [item for item in scene.items() if item.parentItem() is not None]


def test_edge_labels_sit_in_the_gaps_between_nodes(window):
    scene = window.scene
    window.edge_shapes_action.trigger()
    bodies = [QRectF(item.pos(), QSizeF(NODE_WIDTH, NODE_HEIGHT)) for item in scene.nodes.values()]
    labels = [edge.label.sceneBoundingRect() for edge in scene.edges.values()]
    assert len(labels) == len(scene.edges) and not [(a, b) for a in labels for b in bodies if a.intersects(b)]
    for name in ("layer1_0_add", "layer2_0_add"):  # an Add's two input labels do not cover each other
        first, second = (scene.edges[(name, i)].label.sceneBoundingRect() for i in (0, 1))
        assert not first.intersects(second)


def test_port_tooltips_name_the_value_and_its_shape(lenet, qtbot):
    scene, view = lenet.scene, lenet.view
    lenet.view.set_zoom(1.0)
    lenet.view.centre_on_node("conv2")
    item = scene.nodes["conv2"]
    assert scene.port_tooltip("conv2", "in", 0) == "<b>conv2</b> input 0 ← pool1: N×6×14×14"
    assert scene.port_tooltip("conv2", "out", 0) == "<b>conv2</b> output 0: N×16×10×10"
    for port, expected in ((item.input_port(0), "N×6×14×14"), (item.output_port(0), "N×16×10×10")):
        local = view.mapFromScene(item.mapToScene(port))
        QApplication.sendEvent(view.viewport(), QHelpEvent(QEvent.Type.ToolTip, local, view.viewport().mapToGlobal(local)))
        qtbot.waitUntil(lambda expected=expected: expected in QToolTip.text(), timeout=10_000)
    body = view.mapFromScene(item.mapToScene(QPointF(100, 35)))
    QApplication.sendEvent(view.viewport(), QHelpEvent(QEvent.Type.ToolTip, body, view.viewport().mapToGlobal(body)))
    qtbot.waitUntil(lambda: "params" in QToolTip.text(), timeout=10_000)  # the node's own tooltip away from the ports
    QToolTip.hideText()


# ---- zoom and nudge keys ------------------------------------------------------------------------
def test_zoom_keys_change_the_scale(window):
    view = window.view
    view.setFocus()
    view.set_zoom(1.0)
    centre = view_centre(view)
    QTest.keyClick(view, Qt.Key.Key_Plus, CTRL)
    assert view.transform().m11() == pytest.approx(1.25)
    QTest.keyClick(view, Qt.Key.Key_Equal, CTRL)
    assert view.transform().m11() == pytest.approx(1.5625)
    QTest.keyClick(view, Qt.Key.Key_Minus, CTRL)
    QTest.keyClick(view, Qt.Key.Key_Minus, CTRL)
    QTest.keyClick(view, Qt.Key.Key_Minus, CTRL)
    assert view.transform().m11() == pytest.approx(0.8)
    assert abs(view_centre(view).x() - centre.x()) < 3 and abs(view_centre(view).y() - centre.y()) < 3  # about the centre
    QTest.keyClick(view, Qt.Key.Key_0, CTRL)
    assert view.transform().m11() == pytest.approx(1.0) and window.zoom_label.text() == "Zoom 100%"


def press_arrow(view, key, modifiers=Qt.KeyboardModifier.NoModifier, repeat=False) -> None:
    QApplication.sendEvent(view, QKeyEvent(QEvent.Type.KeyPress, key, modifiers, "", repeat))


def test_arrow_keys_nudge_the_selection_and_undo_restores(window):
    view, ctl, scene = window.view, window.ctl, window.scene
    view.setFocus()
    layout = ctl.graph.layout
    start = {n: layout[n] for n in ("conv1", "bn1")}
    ctl.select(["conv1", "bn1"])
    QTest.keyClick(view, Qt.Key.Key_Right)
    QTest.keyClick(view, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    moved = {n: (start[n][0] + NUDGE_STEP, start[n][1] + NUDGE_BIG_STEP) for n in start}
    assert {n: layout[n] for n in start} == moved
    assert {n: (scene.nodes[n].x(), scene.nodes[n].y()) for n in start} == moved
    assert ctl.undo_stack.count() == 2  # one step per press
    press_arrow(view, Qt.Key.Key_Left)
    for _ in range(4):
        press_arrow(view, Qt.Key.Key_Left, repeat=True)  # a held key: one step for the press and its repeats
    assert ctl.undo_stack.count() == 3 and layout["conv1"] == (start["conv1"][0] - 4 * NUDGE_STEP, moved["conv1"][1])
    ctl.undo_stack.undo()
    assert {n: layout[n] for n in start} == moved
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert {n: layout[n] for n in start} == start
    assert {n: (scene.nodes[n].x(), scene.nodes[n].y()) for n in start} == start
    ctl.select([])
    before = view.horizontalScrollBar().value()
    QTest.keyClick(view, Qt.Key.Key_Right)  # with nothing selected the arrows scroll as usual
    assert ctl.undo_stack.count() == 3 and view.horizontalScrollBar().value() > before


# ---- the empty-canvas menu ---------------------------------------------------------------------
def empty_spot(window) -> QPointF:
    rect = window.scene.itemsBoundingRect()
    return QPointF(rect.right() + 150, rect.top() + 40)


def test_right_click_on_empty_canvas_offers_paste_add_layout_fit_select_all(window):
    view, ctl = window.view, window.ctl
    spot = empty_spot(window)
    view.centerOn(spot)
    local = view.mapFromScene(spot)
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(QContextMenuEvent.Reason.Mouse, local, view.viewport().mapToGlobal(local)))
    menu = view.canvas_menu
    assert menu is not None and menu.isVisible()
    actions = {a.text(): a for a in menu.actions() if a.text()}
    assert list(actions) == ["Paste here", "Add op", "Auto-layout", "Fit", "Select all"]
    assert not actions["Paste here"].isEnabled()  # nothing copied yet
    sections = {a.text(): a.menu() for a in actions["Add op"].menu().actions()}
    assert {"Convolution", "Activation", "Normalization", "Pooling and resampling"} <= set(sections)
    conv = next(a for a in sections["Convolution"].actions() if a.text() == "Conv2d")
    menu.close()
    conv.trigger()
    added = ctl.selection[0]
    assert ctl.graph.nodes[added].op == "Conv2d" and window.scene.nodes[added].sceneBoundingRect().contains(spot)
    actions["Select all"].trigger()
    assert ctl.selection == list(ctl.graph.nodes)

    ctl.copy(["conv1", "bn1"])
    spot = spot + QPointF(0, 300)
    local = view.mapFromScene(spot)
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(QContextMenuEvent.Reason.Mouse, local, view.viewport().mapToGlobal(local)))
    paste = next(a for a in view.canvas_menu.actions() if a.text() == "Paste here")
    assert paste.isEnabled()
    view.canvas_menu.close()
    paste.trigger()
    pasted = ctl.selection
    assert [ctl.graph.nodes[n].op for n in pasted] == ["Conv2d", "BatchNorm2d"]
    corner = (min(ctl.graph.layout[n][0] for n in pasted), min(ctl.graph.layout[n][1] for n in pasted))
    assert corner == (round(spot.x(), 2), round(spot.y(), 2))
    steps = ctl.undo_stack.count()
    actions = {a.text(): a for a in view.canvas_menu.actions()}
    actions["Auto-layout"].trigger()
    assert ctl.undo_stack.count() == steps + 1
    view.set_zoom(3.0)
    actions["Fit"].trigger()
    assert view.zoom() < 1.0


def test_right_click_on_a_node_still_opens_the_node_menu(window):
    view = window.view
    view.centre_on_node("conv1")
    local = view.mapFromScene(window.scene.nodes["conv1"].sceneBoundingRect().center())
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(QContextMenuEvent.Reason.Mouse, local, view.viewport().mapToGlobal(local)))
    assert view.canvas_menu is None and window.node_menu is not None and window.ctl.selection == ["conv1"]
    window.node_menu.close()
