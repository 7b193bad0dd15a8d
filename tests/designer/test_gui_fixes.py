"""The fixes from the designer session: blank design and renaming, batch everywhere, training undo, docks,
drops on edges and ports, paste at the cursor, the compress dialog's first strategy, centred screenshots,
error text for people, Escape, palette ranking, the autosave message, toolbar places, multi-selection
editing and the dark theme."""

from pathlib import Path

import pytest
from PyQt6.QtCore import QPoint
from PyQt6.QtWidgets import QApplication

from convstudio.designer.gui import theme
from convstudio.designer.gui.messages import for_people
from convstudio.ir.design import Design
from convstudio.ir.templates import BLOCKS, build_template
from tests.designer.windows import make_window


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery")


@pytest.fixture
def dark_palette(qapp):
    """The application in a dark palette for one test, light again after it."""
    before = QApplication.palette()
    QApplication.setPalette(theme.dark_palette())
    yield
    QApplication.setPalette(before)
    theme.apply()


def pixel_lightness(widget, point: QPoint) -> int:
    return widget.grab().toImage().pixelColor(point).lightness()


# ---- error text for people ---------------------------------------------------------------------
def test_error_text_has_no_python_lists_or_field_paths():
    assert for_people("kernel_size must be >= 1, got 0, node 'conv1' attrs.kernel_size[0]") == (
        "kernel_size must be >= 1, got 0, attribute kernel_size of conv1")
    assert for_people("outputs ['a', 'b'] are missing") == "outputs a, b are missing"
    assert for_people("input must be N×C×H×W, got ['N', 400]") == "input must be N×C×H×W, got N×400"
    assert for_people("output shape [64, 0, 8] has an empty dimension") == "output shape 64×0×8 has an empty dimension"
    assert for_people("shapes [[64, 8, 8], [32, 8, 8]] do not broadcast") == "shapes 64×8×8, 32×8×8 do not broadcast"
    assert for_people("cannot read file 'run[1].json'") == "cannot read file 'run[1].json'"  # brackets inside a word stay
    assert for_people(None) is None


def test_node_errors_read_plainly_and_downstream_nodes_name_the_culprit(window):
    ctl = window.ctl
    assert ctl.set_attr("fc1", "in_features", 100) is None
    raw = ctl.graph.nodes["fc1"].meta["error"]
    assert "attrs." in raw and "['N', 400]" in raw  # the IR's line, as the command line prints it
    item = window.scene.nodes["fc1"]
    assert item.texts[3] == item.error and "N×400" in item.error and "attribute in_features of fc1" in item.error
    for text in (item.toolTip(), item.error):
        assert "attrs." not in text and "[" not in text
    ctl.select(["fc1"])
    assert window.inspector.error_label.text() == item.error
    model = window.cost_panel.model
    tip = model.data(model.index(model.row_of("fc1"), 0), 3)
    assert tip == item.error
    below = window.scene.nodes["fc2"]
    assert below.texts[2:] == ["shape unknown", "upstream node fc1 has an error"]
    assert "shape unknown: upstream node fc1 has an error" in below.toolTip()
    ctl.select(["logits"])
    assert "shape unknown: upstream node fc1 has an error" in window.inspector.info_label.text()
    ctl.undo_stack.undo()
    assert window.scene.nodes["fc2"].texts[2].startswith("84")


# ---- dark theme --------------------------------------------------------------------------------
def test_dark_palette_gives_a_dark_canvas_with_light_text(qtbot, tmp_path, dark_palette):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", size=(1400, 900))
    colours = theme.active()
    assert colours.dark
    assert win.view.backgroundBrush().color() == colours.canvas and colours.canvas.lightness() < 80
    item = min(win.scene.nodes.values(), key=lambda node: node.heat)
    assert item.fill.lightness() < 80 and colours.text.lightness() > 200 and colours.subtext.lightness() > 150
    assert next(iter(win.scene.edges.values())).pen().color() == colours.edge
    from PyQt6.QtGui import QColor

    assert theme.text_on(item.fill)[0] == colours.text  # the theme's light text on its dark nodes
    assert theme.text_on(colours.hot)[0].lightness() > 200  # and on the hottest tint
    assert theme.text_on(QColor(198, 239, 198))[0].lightness() < 60  # dark text on a light fill from elsewhere (a diff's "added")
    win.ctl.select(["layer1_0_conv1"])
    win.view.centre_on_node("layer1_0_conv1")
    QApplication.processEvents()
    view = win.view.viewport()
    assert pixel_lightness(view, QPoint(4, 4)) < 80  # the canvas corner
    assert win.grab().save(str(tmp_path / "dark.png"))


def test_the_canvas_follows_a_palette_change_while_open(window, qapp):
    light = theme.active()
    assert not light.dark and window.view.backgroundBrush().color().lightness() > 180
    before = QApplication.palette()
    try:
        QApplication.setPalette(theme.dark_palette())
        QApplication.processEvents()
        assert theme.active().dark
        assert window.view.backgroundBrush().color().lightness() < 80
        assert window.scene.nodes["relu1"].fill.lightness() < 80
    finally:
        QApplication.setPalette(before)
        QApplication.processEvents()
    assert not theme.active().dark and window.scene.nodes["relu1"].fill.lightness() > 180


# ---- File > New, renaming the design, Save As -------------------------------------------------
def test_file_new_gives_a_blank_design(window):
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    assert file_menu.actions()[0] is window.new_action and window.new_button.defaultAction() is window.new_action
    window.new_action.trigger()
    ctl = window.ctl
    assert len(ctl.graph) == 0 and ctl.design.name == "untitled" and ctl.undo_stack.count() == 0
    assert "untitled" in window.windowTitle() and not window.scene.nodes
    name = ctl.add_node("Input", (0.0, 0.0))
    assert list(window.scene.nodes) == [name]


def test_renaming_the_design_is_one_undo_step_and_save_as_proposes_it(window, monkeypatch, tmp_path):
    ctl = window.ctl
    assert window.rename_design("digits_net")
    assert ctl.design.name == "digits_net" and "digits_net" in window.windowTitle()
    assert ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Rename design to digits_net"
    assert not window.rename_design("a/b") and ctl.design.name == "digits_net" and ctl.undo_stack.count() == 1
    asked = []

    def save_dialog(parent, caption, start, filters):
        asked.append(start)
        return str(tmp_path / "saved.json"), filters

    monkeypatch.setattr("convstudio.designer.gui.mainwindow.QFileDialog.getSaveFileName", save_dialog)
    assert window.save_as()
    assert Path(asked[0]).name == "digits_net.json"
    assert window.proposed_path() == str(tmp_path / "digits_net.json")
    ctl.undo_stack.undo()
    assert ctl.design.name == "lenet" and "lenet" in window.windowTitle()


def test_the_inspector_renames_the_design_when_nothing_is_selected(window, qtbot):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest

    window.ctl.select([])
    editor = window.inspector.editors["design_name"]
    assert editor.text() == "lenet"
    editor.setFocus()
    editor.selectAll()
    QTest.keyClicks(editor, "bad:name")
    assert "cannot hold" in window.inspector.reason("design_name")
    editor.selectAll()
    QTest.keyClicks(editor, "lenet_small")
    assert window.inspector.reason("design_name") == ""
    QTest.keyClick(editor, Qt.Key.Key_Return)
    assert window.ctl.design.name == "lenet_small" and window.ctl.undo_stack.count() == 1


# ---- the batch size everywhere ------------------------------------------------------------------
def test_batch_size_applies_to_labels_tooltips_and_inspector(window):
    from convstudio.designer.gui.node_item import compact

    ctl = window.ctl
    ctl.select(["conv1"])
    cost = ctl.graph.nodes["conv1"].meta["cost"]
    item = window.scene.nodes["conv1"]
    assert item.texts[2] == "6×28×28 · per sample" and item.texts[3].startswith(f"{compact(cost.macs)} MACs")
    assert f"MACs {cost.macs:,}" in item.toolTip() and "(per sample)" in item.toolTip()
    assert f"<b>MACs</b> (per sample): {cost.macs:,}" in window.inspector.info_label.text()
    window.cost_panel.batch.setValue(8)
    assert ctl.batch == 8
    assert item.texts[2] == "8×6×28×28 · batch 8" and item.texts[3].startswith(f"{compact(cost.macs * 8)} MACs")
    assert f"MACs {cost.macs * 8:,}" in item.toolTip() and "(batch 8)" in item.toolTip()
    info = window.inspector.info_label.text()
    assert f"<b>MACs</b> (batch 8): {cost.macs * 8:,}" in info and "8×6×28×28" in info
    model = window.cost_panel.model
    row = model.rows[model.row_of("conv1")]
    assert row.macs == cost.macs * 8 and model.data(model.index(model.row_of("conv1"), 2)) == "8×6×28×28"
    assert "batch 8" in window.cost_panel.totals.text()
    window.cost_panel.batch.setValue(0)
    assert item.texts[2] == "6×28×28 · per sample"


def test_batch_size_applies_to_folded_groups(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    win.ctl.collapse_group("layer1")
    group = win.scene.folds.items["layer1"]
    per_sample = group.summary.macs
    assert group.texts[1].endswith("· per sample") and "(per sample)" in group.toolTip()
    win.cost_panel.batch.setValue(4)
    group = win.scene.folds.items["layer1"]
    assert group.texts[1].endswith("· batch 4") and f"MACs {per_sample * 4:,}" in group.toolTip()


# ---- training from the dialog --------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet_digits.json"


@pytest.fixture
def digits_window(qtbot, tmp_path):
    import shutil

    from convstudio.ir.design import load

    path = tmp_path / "lenet_digits.json"
    shutil.copy(EXAMPLE, path)
    return make_window(qtbot, load(path), tmp_path / "recovery", autosave=False)


def one_epoch(dialog, qtbot, epochs: int = 1) -> dict:
    dialog.epochs_box.setValue(epochs)
    dialog.batch_box.setValue(128)
    dialog.val_box.setValue(0.5)
    with qtbot.waitSignal(dialog.finished_run, timeout=180_000) as finished:
        assert dialog.start()
    return finished.args[0]


def test_undoing_a_training_run_restores_the_weights_in_memory_and_on_disk(digits_window, qtbot):
    import numpy as np

    from convstudio.backends.weights import load_weights
    from convstudio.designer.gui.dialogs.train import TrainDialog

    ctl = digits_window.ctl
    target = ctl.design.weights_path()
    assert not target.exists()
    dialog = TrainDialog(digits_window)
    one_epoch(dialog, qtbot)
    first = target.read_bytes()
    first_weight = ctl.graph.nodes["conv1"].params["weight"].copy()
    assert ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Train 1 epoch"
    assert not list(target.parent.glob("*.ckpt"))  # the run's checkpoints stayed in its scratch folder
    one_epoch(dialog, qtbot)
    assert ctl.undo_stack.count() == 2 and target.read_bytes() != first
    ctl.undo_stack.undo()
    assert target.read_bytes() == first
    assert np.array_equal(ctl.graph.nodes["conv1"].params["weight"], first_weight)
    on_disk = ctl.graph.copy()
    load_weights(on_disk, target)
    assert np.array_equal(on_disk.nodes["conv1"].params["weight"], first_weight)  # the file holds what the design now uses
    ctl.undo_stack.undo()
    assert not target.exists() and not ctl.graph.nodes["conv1"].params
    ctl.undo_stack.redo()
    assert target.read_bytes() == first and np.array_equal(ctl.graph.nodes["conv1"].params["weight"], first_weight)
    dialog.close()


def test_cancel_writes_nothing_and_adds_no_undo_step(digits_window, qtbot):
    from convstudio.designer.gui.dialogs.train import TrainDialog
    from convstudio.ir.design import dumps

    ctl = digits_window.ctl
    before = dumps(ctl.design)
    folder = sorted(p.name for p in ctl.design.path.parent.iterdir())
    dialog = TrainDialog(digits_window)
    dialog.epoch_done.connect(lambda _row: dialog.cancel_button.click())
    result = one_epoch(dialog, qtbot, epochs=20)
    assert result["stopped_early"] and result["weights"] is None
    assert sorted(p.name for p in ctl.design.path.parent.iterdir()) == folder
    assert ctl.undo_stack.count() == 0 and dumps(ctl.design) == before and not ctl.modified
    dialog.close()


def test_train_spin_boxes_offer_only_what_the_training_section_accepts(digits_window):
    from PyQt6.QtWidgets import QSpinBox

    from convstudio.backends.torch.train import merged_config
    from convstudio.designer.gui.dialogs.train import TrainDialog
    from convstudio.ir.training import LR_MAX, RANGES

    dialog = TrainDialog(digits_window)
    dialog.lr_box.setValue(1000.0)
    assert dialog.lr_box.value() == LR_MAX
    boxes = [dialog.lr_box, dialog.momentum_box, dialog.weight_decay_box, dialog.l1_box, dialog.epochs_box, dialog.val_box, dialog.seed_box]
    boxes += [box for params in dialog.scheduler_params.values() for box in params.values()]
    for scheduler in ("step", "plateau", "cyclic", "cosine"):
        dialog.scheduler_box.setCurrentText(scheduler)
        for end in ("minimum", "maximum"):
            for box in boxes:
                box.setValue(getattr(box, end)())
            merged_config(digits_window.ctl.design.training, dialog.overrides())  # raises for a value RANGES refuses
    assert dialog.batch_box.minimum() == 0 and dialog.batch_box.maximum() == RANGES["batch_size"][1]
    assert isinstance(dialog.epochs_box, QSpinBox) and dialog.epochs_box.maximum() == RANGES["epochs"][1]
    assert dialog.momentum_box.maximum() < 1.0 and dialog.lr_box.minimum() > 0.0
    dialog.close()


# ---- docks: closed, reopened from View, layout remembered -----------------------------------------
def test_docks_close_and_reopen_from_view_and_their_layout_is_remembered(qtbot, tmp_path):
    from PyQt6.QtWidgets import QDockWidget

    from convstudio.designer.gui.mainwindow import layout_settings

    settings_file = Path(layout_settings().fileName())
    assert settings_file.is_relative_to(tmp_path.parent) and not settings_file.is_relative_to(Path.home() / ".config")  # not the user's
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1200, 800))
    view_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    assert win.panels_menu.menuAction() in view_menu.actions()
    toggles = {a.text(): a for a in win.panels_menu.actions() if a.isCheckable()}
    assert set(toggles) == {"Palette", "Inspector", "Cost", "Overview"}
    cost = win.docks["Cost"]
    assert cost.features() & QDockWidget.DockWidgetFeature.DockWidgetClosable
    cost.close()
    assert not cost.isVisible() and not toggles["Cost"].isChecked()
    toggles["Cost"].trigger()
    assert cost.isVisible()
    win.docks["Inspector"].close()
    win.addDockWidget(win.dockWidgetArea(win.docks["Palette"]), cost)  # moved to the left
    win.close()
    assert settings_file.is_file()
    again = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1200, 800))
    assert not again.docks["Inspector"].isVisible() and again.docks["Cost"].isVisible()
    assert again.dockWidgetArea(again.docks["Cost"]) == again.dockWidgetArea(again.docks["Palette"])
    again.reset_layout_action.trigger()
    assert again.docks["Inspector"].isVisible()
    assert again.dockWidgetArea(again.docks["Cost"]) != again.dockWidgetArea(again.docks["Palette"])


# ---- drops on edges and output ports ---------------------------------------------------------------
def drop_op(window, op: str, scene_pos) -> None:
    """The drag-enter, drag-move and drop events a real palette drag of `op` ends with, on the canvas viewport."""
    from PyQt6.QtCore import QEvent, QPointF, Qt
    from PyQt6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent

    from convstudio.designer.gui.palette import encode_mime

    mime = encode_mime("op", op)
    viewport = window.view.viewport()
    pos = QPointF(window.view.mapFromScene(scene_pos))
    buttons, mods, action = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, Qt.DropAction.CopyAction
    for event in (QDragEnterEvent(pos.toPoint(), action, mime, buttons, mods), QDragMoveEvent(pos.toPoint(), action, mime, buttons, mods),
                  QDropEvent(pos, action, mime, buttons, mods, QEvent.Type.Drop)):
        QApplication.sendEvent(viewport, event)


def assert_no_overlaps(scene) -> None:
    rects = [(name, item.sceneBoundingRect().adjusted(6, 6, -6, -6)) for name, item in scene.nodes.items()]
    for i, (a, ra) in enumerate(rects):
        for b, rb in rects[i + 1:]:
            assert not ra.intersects(rb), (a, b)


def test_an_op_dropped_on_an_edge_goes_into_it(qtbot, tmp_path):
    from convstudio.ir.design import dumps

    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1200, 900))
    ctl = win.ctl
    before = dumps(ctl.design)
    edge = win.scene.edges[("relu1", 0)]
    point = edge.path().pointAtPercent(0.5)
    assert win.scene.node_at(point) is None and win.scene.edge_at(point) is edge
    win.view.centerOn(point)
    drop_op(win, "BatchNorm2d", point)
    new = "batchnorm2d"
    assert ctl.graph.nodes[new].inputs == ["conv1"] and ctl.graph.nodes["relu1"].inputs == [new]
    assert ctl.selection == [new] and ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Insert BatchNorm2d into conv1 → relu1"
    assert ctl.graph.nodes[new].meta["shapes"] == [(6, 28, 28)] and not ctl.report.errors
    assert_no_overlaps(win.scene)
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before


def test_an_op_dropped_on_an_output_port_follows_it(qtbot, tmp_path):
    from convstudio.ir.design import dumps

    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1200, 900))
    ctl = win.ctl
    before = dumps(ctl.design)
    item = win.scene.nodes["conv2"]
    port = item.mapToScene(item.output_port(0))
    win.view.centerOn(port)
    drop_op(win, "Sigmoid", port)
    new = "sigmoid"
    assert ctl.graph.nodes[new].inputs == ["conv2"] and ctl.graph.nodes["relu2"].inputs == ["conv2"]  # appended: relu2 keeps its input
    assert ctl.undo_stack.count() == 1 and ctl.graph.nodes[new].meta["shapes"] == [(16, 10, 10)]
    assert_no_overlaps(win.scene)
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before
    drop_op(win, "Sigmoid", item.mapToScene(item.boundingRect().center()))  # on the node's body: a node of its own
    assert ctl.graph.nodes["sigmoid"].inputs == [None]


# ---- paste at the cursor -------------------------------------------------------------------------
def test_paste_lands_at_the_cursor_or_else_the_view_centre(qtbot, tmp_path):
    from PyQt6.QtCore import QPoint
    from PyQt6.QtGui import QCursor

    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1200, 900))
    ctl, view = win.ctl, win.view
    ctl.select(["conv2", "relu2"])
    win.copy_action.trigger()
    viewport = view.viewport()
    mouse = QPoint(viewport.width() - 260, 120)
    QCursor.setPos(viewport.mapToGlobal(mouse))
    target = view.mapToScene(mouse)
    win.paste_action.trigger()
    pasted = ctl.selection
    assert len(pasted) == 2 and ctl.undo_stack.count() == 1
    top_left = min(ctl.graph.layout[n][0] for n in pasted), min(ctl.graph.layout[n][1] for n in pasted)
    assert top_left[1] == pytest.approx(target.y(), abs=1)
    assert target.x() - 1 <= top_left[0] < target.x() + 400  # at the cursor, or just right of a node already there
    QCursor.setPos(viewport.mapToGlobal(QPoint(-50, -50)))  # off the canvas: the view's centre
    centre = view.mapToScene(viewport.rect().center())
    win.paste_action.trigger()
    again = ctl.selection
    assert set(again).isdisjoint(pasted)
    assert min(ctl.graph.layout[n][1] for n in again) == pytest.approx(centre.y(), abs=1)


# ---- the compress dialog's first strategy ----------------------------------------------------------
def test_compress_opens_on_a_strategy_that_applies(qtbot, tmp_path):
    from convstudio.designer.gui.dialogs.compress import CompressDialog, applicability

    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    graph = win.ctl.graph
    win.ctl.select([])
    win.compress_selection()
    dialog = win.findChild(CompressDialog)
    assert dialog.names is None and dialog.strategy.name == "separable"  # stack3x3, first in the list, fits no 3x3 network
    assert dialog.result is not None and dialog.apply_button.isEnabled()
    dialog.close()
    win.ctl.select(["layer2_0_conv1"])
    win.compress_selection()
    dialog = [d for d in win.findChildren(CompressDialog) if d.isVisible()][-1]
    assert dialog.names == ["layer2_0_conv1"] and applicability(graph, dialog.strategy, ["layer2_0_conv1"])[0]
    assert dialog.result is not None
    dialog.close()
    win.ctl.select(["flatten"])  # no strategy applies to it, so the dialog shows one that applies in the design
    win.compress_selection()
    dialog = [d for d in win.findChildren(CompressDialog) if d.isVisible()][-1]
    assert dialog.names is None and dialog.result is not None
    assert "no strategy applies to flatten" in win.statusBar().currentMessage()
    dialog.close()


# ---- --screenshot --select centres the node ------------------------------------------------------------
def test_screenshot_centres_the_selected_node(qtbot, tmp_path):
    from convstudio.designer.gui.app import take_screenshot

    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", size=(1400, 900))
    out = take_screenshot(win, tmp_path / "shot.png", ["layer4_1_conv2"])
    assert out.is_file() and win.ctl.selection == ["layer4_1_conv2"]
    assert win.inspector.node_name == "layer4_1_conv2"
    view = win.view
    centre = view.mapFromScene(win.scene.nodes["layer4_1_conv2"].sceneBoundingRect().center())
    middle = view.viewport().rect().center()
    assert abs(centre.x() - middle.x()) <= 3 and abs(centre.y() - middle.y()) <= 3


def test_screenshot_picks_and_shows_the_most_expensive_layer(qtbot, tmp_path):
    from convstudio.designer.gui.app import take_screenshot

    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", size=(1400, 900))
    take_screenshot(win, tmp_path / "shot.png")
    name = win.ctl.selection[0]
    shown = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
    assert shown.contains(win.scene.nodes[name].sceneBoundingRect())


def test_design_verb_select_option(tmp_path):
    import os
    import subprocess
    import sys

    from PyQt6.QtGui import QImage

    from convstudio.ir.design import save

    path = tmp_path / "net.json"
    save(Design(build_template("resnet18")), path)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}

    def design(*args):
        return subprocess.run([sys.executable, "-m", "designer", "design", str(path), *args], capture_output=True, text=True, env=env, timeout=180)

    shot = tmp_path / "shot.png"
    ok = design("--screenshot", str(shot), "--size", "1000x700", "--select", "layer3_0_conv1")
    assert ok.returncode == 0, ok.stderr
    assert QImage(str(shot)).width() == 1000
    bad = design("--screenshot", str(tmp_path / "no.png"), "--select", "conv9")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: no node named 'conv9' in the design, --select"
    assert not (tmp_path / "no.png").exists()
    empty = design("--screenshot", str(tmp_path / "no.png"), "--select", ",")
    assert empty.returncode == 2 and empty.stderr.strip() == "error: needs a node name, e.g. --select conv1, --select"


# ---- Escape, palette ranking, the autosave note, toolbar places ---------------------------------------
def test_escape_reverts_an_invalid_field(window):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest

    from convstudio.ir.design import dumps

    ctl = window.ctl
    before = dumps(ctl.design)
    ctl.select(["conv1"])
    editor = window.inspector.editors["kernel_size"]
    editor.setFocus()
    editor.selectAll()
    QTest.keyClicks(editor, "3,a")
    assert "not an integer" in window.inspector.reason("kernel_size") and editor.styleSheet()
    QTest.keyClick(editor, Qt.Key.Key_Escape)
    assert editor.text() == "5" and window.inspector.reason("kernel_size") == "" and not editor.styleSheet()
    window.view.setFocus()  # leaving the field applies nothing: it holds the design's value again
    assert dumps(ctl.design) == before and ctl.undo_stack.count() == 0
    name = window.inspector.editors["name"]
    name.setFocus()
    name.selectAll()
    QTest.keyClicks(name, "conv2")
    assert "already exists" in window.inspector.reason("name")
    QTest.keyClick(name, Qt.Key.Key_Escape)
    assert name.text() == "conv1" and window.inspector.reason("name") == ""
    out = window.inspector.editors["out_channels"]
    out.setFocus()
    out.lineEdit().selectAll()
    QTest.keyClicks(out, "12")
    QTest.keyClick(out, Qt.Key.Key_Escape)
    assert out.text() == "6" and ctl.undo_stack.count() == 0


def test_palette_search_ranks_name_matches_first(window):
    palette = window.palette
    palette.search.setText("relu")
    shown = palette.visible_entries()
    names = [name for _, name in shown]
    assert names[0] == "ReLU" and names[1] == "ReLU6"  # the exact name, then names starting with it
    in_name = [i for i, n in enumerate(names) if "relu" in n.lower()]
    assert in_name == list(range(len(in_name)))  # every name match before any description-only match
    assert {"LeakyReLU", "PReLU", "RReLU"} <= set(names[:len(in_name)])
    palette.search.setText("conv")
    names = [name for _, name in palette.visible_entries()]
    in_name = [i for i, n in enumerate(names) if "conv" in n.lower()]
    assert names[0] == "Conv2d" and in_name == list(range(len(in_name))) and len(in_name) < len(names)
    last = palette.tree.topLevelItem(palette.tree.topLevelItemCount() - 1)
    assert last.text(0) == "Found in descriptions" and "conv" not in last.child(0).text(0).lower()
    assert "conv" in last.child(0).toolTip(0).lower()
    palette.search.setText("blocks")  # a section's title shows the whole section
    assert {("block", name) for name in BLOCKS} <= set(palette.visible_entries())
    palette.search.setText("")
    assert palette.visible_entries() == palette.entries() and len(palette.entries()) == len(set(palette.entries()))
    assert palette.tree.topLevelItem(0).text(0) == "Input / Output"


def test_the_autosaved_note_goes_when_the_document_is_clean_again(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery")
    win.ctl.set_attr("conv1", "out_channels", 8)
    assert win.autosaver.autosave() is not None
    assert win.statusBar().currentMessage().startswith("Autosaved")
    win.ctl.undo_stack.undo()
    assert not win.ctl.modified and win.statusBar().currentMessage() == ""


def test_toolbar_buttons_keep_their_places(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", size=(1600, 900))
    bar = win.toolbar

    def places():
        QApplication.processEvents()
        return [(action.text(), bar.widgetForAction(action).geometry().x()) for action in bar.actions() if bar.widgetForAction(action)]

    start = places()
    assert not win.undo_tool.isEnabled() and win.undo_tool.isVisible()
    win.ctl.set_attr("conv1", "out_channels", 8)
    assert win.undo_tool.isEnabled() and win.undo_tool.text() == "Undo" and "Set conv1.out_channels" in win.undo_tool.toolTip()
    assert win.undo_action.text() == "Undo Set conv1.out_channels"  # the Edit menu still says what it undoes
    assert places() == start
    win.undo_tool.trigger()
    assert not win.ctl.modified and win.redo_tool.isEnabled() and places() == start
    win.ctl.select(["conv1"])
    win.new_action.trigger()
    assert places() == start and all(action.isVisible() for action in bar.actions())


# ---- multi-selection in the inspector ------------------------------------------------------------------
def test_the_inspector_sets_a_shared_attribute_on_every_selected_node_in_one_step(window):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest
    from PyQt6.QtWidgets import QComboBox, QLineEdit

    from convstudio.ir.design import dumps

    ctl, inspector = window.ctl, window.inspector
    before = dumps(ctl.design)
    ctl.select(["conv1", "conv2"])
    assert inspector.names == ["conv1", "conv2"] and inspector.node_name is None
    assert "out_channels" in inspector.editors and "name" not in inspector.editors
    assert "out_channels" in inspector.mixed_label.text() and "kernel_size" not in inspector.mixed_label.text()
    padding = inspector.editors["padding"]
    assert isinstance(padding, QLineEdit) and padding.text() == "" and "differs" in padding.placeholderText()
    padding.setFocus()
    window.view.setFocus()  # leaving a field of differing values untouched changes nothing
    assert ctl.undo_stack.count() == 0
    activation = inspector.editors["activation"]
    assert isinstance(activation, QComboBox)
    activation.activated.emit(activation.findData("relu"))
    assert ctl.graph.nodes["conv1"].attrs["activation"] == "relu" and ctl.graph.nodes["conv2"].attrs["activation"] == "relu"
    assert ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Set activation of 2 nodes"
    assert window.scene.nodes["conv2"].texts[1].endswith("+relu")
    kernel = inspector.editors["kernel_size"]
    kernel.setFocus()
    kernel.selectAll()
    QTest.keyClicks(kernel, "3")
    QTest.keyClick(kernel, Qt.Key.Key_Return)
    assert ctl.graph.nodes["conv1"].attrs["kernel_size"] == 3 == ctl.graph.nodes["conv2"].attrs["kernel_size"]
    assert ctl.undo_stack.count() == 2
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before
    ctl.select(["conv1", "fc1"])  # a Conv2d and a Linear share bias, activation and its parameter
    assert set(inspector.editors) == {"bias", "activation", "activation_param"}
    ctl.select(["conv1"])
    assert inspector.node_name == "conv1" and "name" in inspector.editors


def test_a_value_one_selected_node_refuses_is_not_applied_to_any(window):
    from convstudio.ir.design import dumps

    ctl, inspector = window.ctl, window.inspector
    assert ctl.set_attr("pool2", "kernel_size", 4) is None
    before = dumps(ctl.design)
    ctl.select(["pool1", "pool2"])
    padding = inspector.editors["padding"]
    padding.setText("2")
    padding.editingFinished.emit()
    assert inspector.reason("padding").startswith("pool1: ") and "half the kernel" in inspector.reason("padding")
    assert ctl.undo_stack.count() == 1 and dumps(ctl.design) == before  # pool2 (kernel 4) would take it, but not alone
    padding.setText("1")
    padding.editingFinished.emit()
    assert inspector.reason("padding") == "" and ctl.undo_stack.count() == 2
    assert ctl.graph.nodes["pool1"].attrs["padding"] == 1 == ctl.graph.nodes["pool2"].attrs["padding"]


def test_fields_that_differ_only_in_how_they_are_written_show_the_value_and_change_nothing(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery")
    ctl, inspector = win.ctl, win.inspector
    nodes = [ctl.graph.nodes[n] for n in ("layer1_0_conv1", "layer1_0_conv2")]
    assert nodes[0].attrs.get("stride") != nodes[1].attrs.get("stride") and nodes[0].resolved["stride"] == nodes[1].resolved["stride"]
    ctl.select(["layer1_0_conv1", "layer1_0_conv2"])
    stride = inspector.editors["stride"]
    assert stride.text() == "1, 1" and "stride" not in inspector.mixed_label.text()
    stride.editingFinished.emit()
    assert ctl.undo_stack.count() == 0


def test_a_dark_system_colour_scheme_gives_the_application_a_dark_palette(window, qapp):
    from PyQt6.QtCore import Qt

    before = QApplication.palette()
    try:
        theme.match_scheme(qapp, Qt.ColorScheme.Dark)
        QApplication.processEvents()
        assert theme.is_dark(QApplication.palette()) and theme.active().dark
        assert window.view.backgroundBrush().color().lightness() < 80
        theme.match_scheme(qapp, Qt.ColorScheme.Light)
        QApplication.processEvents()
        assert not theme.is_dark(QApplication.palette()) and not theme.active().dark
    finally:
        QApplication.setPalette(before)
        theme.apply()
