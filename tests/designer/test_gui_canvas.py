"""Canvas: palette drops, connecting ports with the mouse, moves, copy/paste, delete, layout, errors."""

import pytest
from PyQt6.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QPainterPathStroker
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication

from convstudio.designer.gui.edge_item import EdgeItem
from convstudio.designer.gui.layout import layered_layout
from convstudio.designer.gui.mainwindow import MainWindow
from convstudio.designer.gui.messages import for_people
from convstudio.designer.gui.theme import active
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800))


def drop_on_view(window, mime, scene_pos: QPointF) -> None:
    """Send the drag-enter, drag-move and drop events a real drag ends with to the canvas viewport."""
    viewport = window.view.viewport()
    pos = QPointF(window.view.mapFromScene(scene_pos))
    buttons, mods = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    action = Qt.DropAction.CopyAction
    for event in (
        QDragEnterEvent(pos.toPoint(), action, mime, buttons, mods),
        QDragMoveEvent(pos.toPoint(), action, mime, buttons, mods),
        QDropEvent(pos, action, mime, buttons, mods, QEvent.Type.Drop),
    ):
        QApplication.sendEvent(viewport, event)


def test_palette_lists_every_op_template_and_block(window):
    from convstudio.ir.ops import registry
    from convstudio.ir.templates import BLOCKS, TEMPLATES

    entries = set(window.palette.entries())
    ops = {op for category, ops in registry.CATEGORIES.items() if category != "opaque" for op in ops}
    assert {("op", op) for op in ops} <= entries
    assert ("op", "Opaque") not in entries
    assert {("template", t) for t in TEMPLATES} <= entries
    assert {("block", b) for b in BLOCKS} <= entries
    window.palette.search.setText("conv")
    visible = [window.palette.item_for(*e) for e in entries]
    shown = {item.text(0) for item in visible if not item.isHidden()}
    assert "Conv2d" in shown and "ReLU" not in shown


def test_every_palette_op_starts_with_valid_attributes(window):
    """Ops with required attributes (Permute's dims, Conv2d's kernel) start with working values."""
    from convstudio.ir.ops import registry

    for op in sorted(op for category, ops in registry.CATEGORIES.items() if category != "opaque" for op in ops):
        name = window.ctl.add_node(op, (0.0, 0.0))
        node = window.ctl.graph.nodes[name]
        assert registry.get(op).validate(node.attrs, name) == node.attrs
    assert window.ctl.graph.nodes["permute"].attrs == {"dims": [0, 2, 3, 1]}


def test_drop_from_palette_creates_node_at_drop_position(window):
    item = window.palette.item_for("op", "Conv2d")
    mime = window.palette.tree.mimeData([item])
    target = window.view.mapToScene(window.view.viewport().rect().center())
    before = len(window.ctl.graph)
    drop_on_view(window, mime, target)
    assert len(window.ctl.graph) == before + 1
    name = window.ctl.selection[0]
    assert window.ctl.graph.nodes[name].op == "Conv2d"
    node_item = window.scene.nodes[name]
    centre = node_item.sceneBoundingRect().center()
    assert abs(centre.x() - target.x()) < 2 and abs(centre.y() - target.y()) < 2  # within 2 scene px
    assert window.ctl.graph.layout[name] == (round(node_item.x(), 2), round(node_item.y(), 2))
    window.ctl.undo_stack.undo()
    assert name not in window.ctl.graph.nodes and name not in window.scene.nodes


def test_drop_block_onto_node_inserts_it_after_that_node(window):
    mime = window.palette.tree.mimeData([window.palette.item_for("block", "se")])
    relu1 = window.scene.nodes["relu1"]
    drop_on_view(window, mime, relu1.sceneBoundingRect().center())
    added = window.ctl.selection
    assert len(added) >= 4
    pool_input = window.ctl.graph.nodes["pool1"].inputs[0]
    assert pool_input.split(":")[0] in added
    assert not window.ctl.report.errors
    window.ctl.undo_stack.undo()
    assert window.ctl.graph.nodes["pool1"].inputs == ["relu1"]


def test_connect_ports_with_mouse(window):
    ctl = window.ctl
    name = ctl.add_node("ReLU", (400.0, 0.0))
    window.view.centerOn(QPointF(300, 60))
    QApplication.processEvents()
    src = window.scene.nodes["x"]
    dst = window.scene.nodes[name]
    start = window.view.mapFromScene(src.mapToScene(src.output_port(0)))
    end = window.view.mapFromScene(dst.mapToScene(dst.input_port(0)))
    viewport = window.view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, QPoint((start.x() + end.x()) // 2, (start.y() + end.y()) // 2))
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    assert ctl.graph.nodes[name].inputs == ["x"]
    assert isinstance(window.scene.edges[(name, 0)], EdgeItem)
    assert ctl.graph.nodes[name].meta["shapes"] == [(1, 28, 28)]


def test_connection_that_would_make_a_cycle_is_refused(window):
    before = window.ctl.dumps()
    reason = window.ctl.connect("relu2", "conv1", 0)
    assert "cycle" in reason
    assert window.ctl.dumps() == before


def test_consecutive_moves_of_one_selection_merge(window, qtbot):
    ctl = window.ctl
    start = ctl.dumps()
    item = window.scene.nodes["conv1"]
    viewport = window.view.viewport()
    window.view.centre_on_node("conv1")
    QApplication.processEvents()
    for _drag in range(3):
        body = window.view.mapFromScene(item.sceneBoundingRect().center() + QPointF(0, 8))
        QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, body)
        for k in range(1, 4):
            QTest.mouseMove(viewport, body + QPoint(10 * k, 0))
        QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, body + QPoint(30, 0))
    assert ctl.undo_stack.count() == 1
    x0 = layered_layout(build_template("lenet")).positions["conv1"][0]
    assert ctl.graph.layout["conv1"][0] > x0 + 60
    ctl.undo_stack.undo()
    assert ctl.dumps() == start
    assert (item.x(), item.y()) == tuple(ctl.graph.layout["conv1"])


def test_copy_paste_copies_nodes_and_edges_between_them(window):
    ctl = window.ctl
    ctl.select(["conv2", "relu2"])
    window.copy_action.trigger()
    window.paste_action.trigger()
    pasted = ctl.selection
    assert len(pasted) == 2 and set(pasted).isdisjoint({"conv2", "relu2"})
    conv, relu = (ctl.graph.nodes[n] for n in pasted)
    assert conv.op == "Conv2d" and conv.attrs == ctl.graph.nodes["conv2"].attrs
    assert relu.inputs == [conv.name] and conv.inputs == [None]
    assert (relu.name, 0) in window.scene.edges
    ctl.undo_stack.undo()
    assert all(n not in ctl.graph.nodes for n in pasted)


def test_paste_of_nodes_fed_by_a_node_added_after_them(window):
    """conv1 rewired to read a ReLU added after it: the copy lists the ReLU first, so pasting adds every node after its
    producer, keeps the edge, and the costs equal a fresh analysis."""
    ctl = window.ctl
    added = ctl.add_op_after("ReLU", "x")
    assert ctl.connect(added, "conv1", 0) is None
    ctl.select(["conv1", added])
    window.copy_action.trigger()
    window.paste_action.trigger()
    pasted = ctl.selection
    relu, conv = (ctl.graph.nodes[n] for n in pasted)
    assert (relu.op, conv.op) == ("ReLU", "Conv2d") and conv.inputs == [relu.name] and relu.inputs == [None]
    assert (conv.name, 0) in window.scene.edges
    fresh = analyze(ctl.graph.copy(), strict=False, latency=ctl.latency_model)
    assert (ctl.report.as_dict(), ctl.report.errors) == (fresh.as_dict(), fresh.errors)
    ctl.undo_stack.undo()
    assert all(n not in ctl.graph.nodes for n in pasted)


def test_delete_and_undo_restore_edges_exactly(window):
    ctl = window.ctl
    start = ctl.dumps()
    ctl.select(["pool1", "conv2"])
    window.delete_action.trigger()
    assert "conv2" not in ctl.graph.nodes and ctl.graph.nodes["relu2"].inputs == [None]
    assert ("relu2", 0) not in window.scene.edges
    ctl.undo_stack.undo()
    assert ctl.dumps() == start
    assert ("relu2", 0) in window.scene.edges and ("conv2", 0) in window.scene.edges
    assert len(window.scene.edges) == sum(len(n.inputs) for n in ctl.graph)


def test_deleting_a_selected_edge_disconnects_it(window):
    ctl = window.ctl
    window.scene.clearSelection()
    window.scene.edges[("fc1", 0)].setSelected(True)
    window.delete_action.trigger()
    assert ctl.graph.nodes["fc1"].inputs == [None]
    assert "not connected" in ctl.graph.nodes["fc1"].meta["error"]


def test_auto_layout_places_layers_without_overlap(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path)
    ctl = win.ctl
    ctl.move({"layer1_0_conv1": (900.0, 900.0)})
    win.layout_action.trigger()
    expected = layered_layout(ctl.graph).positions
    assert ctl.graph.layout == expected
    rects = sorted((item.sceneBoundingRect() for item in win.scene.nodes.values()), key=lambda r: (r.top(), r.left()))
    for a, b in zip(rects, rects[1:]):
        if a.top() == b.top():
            assert a.right() < b.left()
    routed = [e for e in win.scene.edges.values() if ctl.route(e.dst.name, e.index)]
    assert routed, "skip connections get lanes"
    stroker = QPainterPathStroker()
    stroker.setWidth(1.0)
    for edge in routed:
        line = stroker.createStroke(edge.path())
        for item in win.scene.nodes.values():
            if item not in (edge.src, edge.dst):
                assert not line.intersects(item.sceneBoundingRect().adjusted(4, 4, -4, -4)), (edge.dst.name, item.name)
    ctl.undo_stack.undo()
    assert ctl.graph.layout["layer1_0_conv1"] == (900.0, 900.0)


def test_bad_shape_shows_error_colour_and_reason(window):
    ctl = window.ctl
    assert ctl.set_attr("conv1", "kernel_size", 40) is None
    item = window.scene.nodes["conv1"]
    error = for_people(ctl.graph.nodes["conv1"].meta["error"])
    assert error and "conv1" in error and "attrs." not in error
    assert item.fill == active().error_fill
    assert error in item.toolTip()
    ctl.select(["conv1"])
    assert window.inspector.error_label.text() == error
    downstream = window.scene.nodes["fc1"]
    assert downstream.texts[2:] == ["shape unknown", "upstream node conv1 has an error"] and downstream.fill != active().error_fill
    model = window.cost_panel.model
    assert model.data(model.index(model.row_of("fc1"), 3)) == "?"
    assert "1 error(s)" in window.cost_panel.totals.text()
    ctl.undo_stack.undo()
    assert window.scene.nodes["conv1"].fill != active().error_fill


def test_zoom_and_fit(window):
    view = window.view
    view.set_zoom(0.5)
    assert abs(view.zoom() - 0.5) < 1e-9
    view.fit_all()
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.contains(window.scene.itemsBoundingRect().adjusted(5, 5, -5, -5))


def test_keyboard_shortcuts(window, qtbot):
    ctl = window.ctl
    window.activateWindow()
    view = window.view
    view.setFocus()
    start = ctl.dumps()
    ctl.select(["relu3"])
    QTest.keyClick(view, Qt.Key.Key_Delete)
    assert "relu3" not in ctl.graph.nodes
    QTest.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert ctl.dumps() == start
    QTest.keyClick(view, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert "relu3" not in ctl.graph.nodes
    QTest.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert "relu3" not in ctl.graph.nodes
    view.set_zoom(2.0)
    QTest.keyClick(view, Qt.Key.Key_F)
    assert view.zoom() < 2.0
    ctl.select(["fc1"])
    QTest.keyClick(view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert ctl.graph.nodes[ctl.selection[0]].op == "Linear" and ctl.selection != ["fc1"]
    QTest.keyClick(view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert ctl.selection == list(ctl.graph.nodes) and len(window.scene.selected_names()) == len(ctl.graph)


def test_heatmap_toggle_retints_by_the_chosen_metric(window):
    scene = window.scene
    window.cost_panel.heatmap.setCurrentText("macs")
    assert scene.nodes["conv2"].heat == 1.0 and scene.nodes["fc1"].heat < 1.0
    window.cost_panel.heatmap.setCurrentText("params")
    assert window.ctl.heatmap == "params"
    assert scene.nodes["fc1"].heat == 1.0 and scene.nodes["conv2"].heat < 1.0
    window.cost_panel.heatmap.setCurrentText("memory")
    assert scene.nodes["x"].heat > 0 and scene.nodes["fc1"].heat < scene.nodes["conv1"].heat


def test_graph_replaced_keeps_positions_and_places_new_nodes(window):
    ctl = window.ctl
    start = ctl.dumps()
    replacement = ctl.graph.copy()
    replacement.add("ReLU", ["fc3"], name="extra")
    replacement.set_input("logits", 0, "extra")
    ctl.replace_graph(replacement, "Add an activation")
    assert ctl.graph is replacement and "extra" in window.scene.nodes
    assert ctl.graph.layout["extra"][1] > ctl.graph.layout["fc3"][1]
    assert ctl.graph.layout["conv1"] == replacement.layout["conv1"]
    ctl.undo_stack.undo()
    assert ctl.dumps() == start and "extra" not in window.scene.nodes


def test_rubber_band_selects_the_nodes_it_covers(window):
    view = window.view
    view.set_zoom(0.5)
    first, second = window.scene.nodes["x"], window.scene.nodes["conv1"]
    view.centerOn(first.sceneBoundingRect().bottomRight())
    QApplication.processEvents()
    start = view.mapFromScene(first.sceneBoundingRect().topLeft() - QPointF(20, 20))
    end = view.mapFromScene(second.sceneBoundingRect().bottomRight() + QPointF(20, 10))
    viewport = view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, (start + end) / 2)
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    assert sorted(window.ctl.selection) == ["conv1", "x"]
    assert window.ctl.undo_stack.count() == 0


def test_drop_template_adds_whole_network_in_one_undo_step(window):
    ctl = window.ctl
    start = ctl.dumps()
    mime = window.palette.tree.mimeData([window.palette.item_for("template", "lenet")])
    drop_on_view(window, mime, QPointF(1500.0, 0.0))
    added = ctl.selection
    template = build_template("lenet")
    assert len(added) == len(template) and set(added).isdisjoint(template.nodes)
    assert ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Insert template lenet"
    assert len(ctl.graph.inputs) == 2 and not ctl.report.errors
    assert min(ctl.graph.layout[n][0] for n in added) >= 1500.0 - 190.0 / 2 - 1
    ctl.undo_stack.undo()
    assert ctl.dumps() == start and set(window.scene.nodes) == set(ctl.graph.nodes)


def test_wheel_zooms_and_middle_button_pans(window):
    from PyQt6.QtGui import QWheelEvent

    view = window.view
    view.set_zoom(1.0)
    viewport = view.viewport()
    centre = QPointF(viewport.rect().center())
    wheel = QWheelEvent(centre, QPointF(viewport.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, wheel)
    assert abs(view.zoom() - 1.15**2) < 1e-9  # two wheel notches, 15 % each
    window.scene.setSceneRect(window.scene.sceneRect().adjusted(-2000, -2000, 2000, 2000))
    before = view.mapToScene(viewport.rect().center())
    start = viewport.rect().center()
    QTest.mousePress(viewport, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, start + QPoint(60, 40))
    QTest.mouseRelease(viewport, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, start + QPoint(60, 40))
    after = view.mapToScene(viewport.rect().center())
    moved = before - after
    assert abs(moved.x() - 60 / view.zoom()) < 2 and abs(moved.y() - 40 / view.zoom()) < 2  # within 2 scene px
    assert window.ctl.undo_stack.count() == 0


def test_typing_in_fields_does_not_trigger_canvas_shortcuts(window):
    ctl = window.ctl
    window.activateWindow()
    window.view.set_zoom(2.0)
    search = window.palette.search
    search.setFocus()
    QTest.keyClicks(search, "Flat")
    assert search.text() == "Flat" and window.view.zoom() == 2.0
    ctl.select(["fc1"])
    name_edit = window.inspector.editors["name"]
    name_edit.setFocus()
    name_edit.setCursorPosition(0)
    QTest.keyClick(name_edit, Qt.Key.Key_Delete)
    assert name_edit.text() == "c1" and "fc1" in ctl.graph.nodes and ctl.undo_stack.count() == 0


def test_window_offers_every_action_with_its_shortcut(qtbot, tmp_path):
    win = MainWindow(recovery_folder=tmp_path)
    qtbot.addWidget(win)
    assert win.ctl.design.name == "lenet" and len(win.ctl.graph) == 14  # the default example
    shortcuts = {a.text(): [k.toString() for k in a.shortcuts()] for a in win.actions()}
    for text, keys in {"Undo": ["Ctrl+Z"], "Redo": ["Ctrl+Y"], "Save": ["Ctrl+S"], "Open...": ["Ctrl+O"], "Delete": ["Del"],
                       "Copy": ["Ctrl+C"], "Paste": ["Ctrl+V"], "Fit": ["F"], "Quit": ["Ctrl+Q"], "Select all": ["Ctrl+A"]}.items():
        assert set(keys) <= set(shortcuts[text]), text
    menus = {a.text(): [x.text() for x in a.menu().actions()] for a in win.menuBar().actions()}
    everything = {text for texts in menus.values() for text in texts}
    assert {"New from template", "Open...", "Save", "Save As...", "Undo", "Redo", "Auto-layout", "Fuse preview", "Compress",
            "Compare", "Export ONNX", "Run inference", "Train"} <= everything
    from convstudio.ir.templates import TEMPLATES

    assert [a.text() for a in win.new_menu.actions()] == sorted(TEMPLATES)


def test_edges_between_columns_get_tracks_of_their_own():
    from PyQt6.QtGui import QPainterPath

    from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH

    graph = build_template("triplet_net")
    layout = layered_layout(graph)
    xs = {round(p[0]) for p in layout.positions.values()}
    crossing = {key: points for key, points in layout.routes.items() if len(points) == 4}
    assert len(crossing) == 3 and len(xs) > 3, "three towers wrap into a second column"
    strokes = {}
    for (dst, index), points in crossing.items():
        src = graph.nodes[dst].inputs[index]
        sx, sy = layout.positions[src]
        dx, dy = layout.positions[dst]
        path = QPainterPath(QPointF(sx + NODE_WIDTH / 2, sy + NODE_HEIGHT))
        for x, y in [*points, (dx + NODE_WIDTH / 2, dy)]:
            path.lineTo(QPointF(x, y))
        stroker = QPainterPathStroker()
        stroker.setWidth(2.0)
        strokes[dst] = stroker.createStroke(path)
    names = sorted(strokes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not strokes[a].intersects(strokes[b]), (a, b)


def drag(viewport, start: QPoint, end: QPoint) -> None:
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(viewport, (start + end) / 2)
    QTest.mouseMove(viewport, end)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


def test_dropping_a_wire_on_a_full_node_says_so_and_a_port_replaces_the_edge(window):
    ctl = window.ctl
    view = window.view
    view.set_zoom(0.6)
    view.centerOn(window.scene.nodes["relu1"].sceneBoundingRect().center())
    QApplication.processEvents()
    src, dst = window.scene.nodes["x"], window.scene.nodes["relu1"]
    start = view.mapFromScene(src.mapToScene(src.output_port(0)))
    drag(view.viewport(), start, view.mapFromScene(dst.sceneBoundingRect().center()))
    assert ctl.graph.nodes["relu1"].inputs == ["conv1"]
    assert window.statusBar().currentMessage() == "'relu1' has no free input; drop on one of its input ports to replace that edge"
    drag(view.viewport(), start, view.mapFromScene(dst.mapToScene(dst.input_port(0))))
    assert ctl.graph.nodes["relu1"].inputs == ["x"] and ctl.undo_stack.undoText() == "Connect x to relu1"
