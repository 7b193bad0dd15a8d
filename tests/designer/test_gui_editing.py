"""Inspector edits, the cost panel, undo/redo back to the exact JSON, and save/load round trips."""

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QComboBox, QLineEdit, QSpinBox

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, load
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery")


def panel_total_params(window) -> str:
    return window.cost_panel.totals.toolTip().splitlines()[0]


def test_inspector_edit_refreshes_cost_panel(window):
    ctl = window.ctl
    ctl.select(["conv2"])
    editor = window.inspector.editors["out_channels"]
    assert isinstance(editor, QSpinBox) and editor.value() == 16
    editor.setValue(32)
    assert ctl.graph.nodes["conv2"].attrs["out_channels"] == 32
    expected = analyze(ctl.graph.copy())
    assert panel_total_params(window) == f"params {expected.total.params:,}"
    row = window.cost_panel.model.row_of("fc1")
    assert window.cost_panel.model.rows[row].params == expected.by_name()["fc1"].params
    assert set(ctl.analyzer.recomputed) >= {"conv2", "fc1"}
    assert "fc1" in window.scene.nodes and "32×" in window.scene.nodes["conv2"].texts[2]
    assert ctl.undo_stack.count() == 1 and ctl.undo_stack.undoText() == "Set conv2.out_channels"


def test_invalid_text_marks_field_red_and_is_never_applied(window):
    ctl = window.ctl
    ctl.select(["conv1"])
    before = ctl.dumps()
    editor = window.inspector.editors["kernel_size"]
    assert isinstance(editor, QLineEdit)
    editor.setFocus()
    editor.selectAll()
    QTest.keyClicks(editor, "3,a")
    assert "not an integer" in window.inspector.reason("kernel_size")
    assert "fde0e0" in editor.styleSheet()
    QTest.keyClick(editor, Qt.Key.Key_Return)
    assert ctl.dumps() == before
    editor.selectAll()
    QTest.keyClicks(editor, "0")
    assert ">= 1" in window.inspector.reason("kernel_size")
    editor.selectAll()
    QTest.keyClicks(editor, "3, 5")
    assert window.inspector.reason("kernel_size") == ""
    QTest.keyClick(editor, Qt.Key.Key_Return)
    assert ctl.graph.nodes["conv1"].attrs["kernel_size"] == [3, 5]


def test_cross_field_check_is_shown_not_applied(window):
    ctl = window.ctl
    ctl.select(["conv2"])
    groups = window.inspector.editors["groups"]
    groups.setValue(3)
    assert window.inspector.reason("groups")
    assert ctl.graph.nodes["conv2"].attrs.get("groups", 1) == 1


def test_choice_rename_and_share_editors_are_undoable(window):
    ctl = window.ctl
    start = ctl.dumps()
    ctl.select(["conv1"])
    combo = window.inspector.editors["activation"]
    assert isinstance(combo, QComboBox)
    combo.activated.emit(combo.findText("relu"))
    assert ctl.graph.nodes["conv1"].attrs["activation"] == "relu"
    name_edit = window.inspector.editors["name"]
    name_edit.setText("stem")
    name_edit.editingFinished.emit()
    assert "stem" in ctl.graph.nodes and ctl.graph.nodes["relu1"].inputs == ["stem"]
    assert "stem" in window.scene.nodes and ctl.selection == ["stem"]
    share = window.inspector.editors["share"]
    share.setText("tied")
    share.editingFinished.emit()
    assert ctl.graph.nodes["stem"].share == "tied"
    while ctl.undo_stack.canUndo():
        ctl.undo_stack.undo()
    assert ctl.dumps() == start


def test_a_node_that_cannot_use_its_share_groups_parameters_shows_why_until_mended(window):
    """conv2 (6 channels in, 16 out) put in conv1's group: the node, the inspector and the totals say it cannot share
    conv1's parameters as soon as the edit lands, as saving would refuse it; the undo takes every mark away."""
    ctl = window.ctl
    for name in ("conv1", "conv2"):
        ctl.select([name])
        share = window.inspector.editors["share"]
        share.setText("tied")
        share.editingFinished.emit()
    why = "node shares 'tied' with 'conv1' but its attributes differ"
    item = window.scene.nodes["conv2"]
    assert ctl.report.share_errors == [f"{why}, node 'conv2' share"]
    assert why in item.texts[3] and why in item.toolTip()
    assert window.scene.nodes["conv1"].error is None
    assert window.inspector.error_label.isVisibleTo(window.inspector) and why in window.inspector.error_label.text()
    assert "1 node(s) cannot share their group's parameters" in window.cost_panel.totals.text()
    ctl.set_attr("conv2", "out_channels", 6)
    ctl.set_attr("conv2", "padding", 2)  # the same attributes now, but it reads 6 channels where conv1 reads 1
    assert "weight of shape 6×6×5×5, where 'conv1' has shape 6×1×5×5" in item.texts[3]
    ctl.set_attr("conv1", "bias", False)  # the owner's edit changes what conv2 shows, though conv2 is not recomputed
    assert "conv2" not in ctl.analyzer.recomputed and why in item.texts[3]
    for _ in range(3):
        ctl.undo_stack.undo()
    assert why in item.texts[3]
    ctl.undo_stack.undo()
    assert ctl.report.share_errors == [] and item.error is None and why not in item.texts[3]
    assert not window.inspector.error_label.isVisibleTo(window.inspector)
    assert "cannot share" not in window.cost_panel.totals.text()


def test_undo_everything_restores_exact_json_and_redo_replays(window):
    ctl = window.ctl
    start = ctl.dumps()
    new = ctl.add_node("BatchNorm2d", (300.0, 200.0))
    ctl.connect("conv1", new, 0)
    ctl.connect(new, "relu1", 0)
    ctl.set_attr("conv2", "stride", 2)
    ctl.move({"fc1": (400.0, 900.0)})
    ctl.rename("fc2", "hidden")
    ctl.delete(["relu3"])
    ctl.disconnect("relu4", 0)
    ctl.copy(["conv2", "relu2"])
    ctl.paste()
    ctl.insert_block("se", "relu2")
    ctl.auto_layout()
    ctl.replace_graph(build_template("lenet", input_shape=(1, 8, 8)), "Replace graph")
    end = ctl.dumps()
    assert end != start
    while ctl.undo_stack.canUndo():
        ctl.undo_stack.undo()
    assert ctl.dumps() == start
    assert set(window.scene.nodes) == set(ctl.graph.nodes)
    while ctl.undo_stack.canRedo():
        ctl.undo_stack.redo()
    assert ctl.dumps() == end


def test_save_and_load_round_trip(window, qtbot, tmp_path):
    ctl = window.ctl
    ctl.set_attr("fc1", "out_features", 64)
    ctl.move({"fc1": (250.0, 800.0)})
    path = tmp_path / "net.json"
    assert window.save_as(path)
    assert not ctl.modified and not window.isWindowModified()
    text = path.read_text()
    assert text == ctl.dumps()
    other = make_window(qtbot, load(path), tmp_path / "recovery")
    assert other.ctl.dumps() == text
    assert other.ctl.graph.layout["fc1"] == (250.0, 800.0)
    assert other.save_file()
    assert path.read_text() == text


def test_convention_and_batch_change_the_totals(window):
    ctl = window.ctl
    panel = window.cost_panel
    panel.convention.setCurrentText("torchvision")
    report = analyze(ctl.graph.copy(), "torchvision")
    assert ctl.report.total.flops == report.total.macs
    panel.batch.setValue(8)
    assert ctl.report.total.flops == 8 * report.total.macs
    assert "batch 8" in panel.totals.text()
    assert panel.top_layers[0] == max(report.nodes, key=lambda c: c.flops).name


def test_table_row_and_node_select_each_other(window):
    ctl = window.ctl
    panel = window.cost_panel
    ctl.select(["fc2"])
    rows = panel.table.selectionModel().selectedRows()
    assert [panel.model.rows[panel.proxy.mapToSource(r).row()].name for r in rows] == ["fc2"]
    panel.table.sortByColumn(4, Qt.SortOrder.DescendingOrder)
    first = panel.proxy.index(0, 0)
    panel.table.selectRow(0)
    assert ctl.selection == [panel.model.rows[panel.proxy.mapToSource(first).row()].name] == ["conv2"]
    assert window.scene.nodes["conv2"].isSelected()
    assert window.inspector.node_name == "conv2"


def test_choosing_the_current_value_again_is_not_an_edit(window):
    ctl = window.ctl
    ctl.select(["conv1"])
    combo = window.inspector.editors["activation"]
    combo.activated.emit(combo.currentIndex())
    bias = window.inspector.editors["bias"]
    bias.activated.emit(bias.currentIndex())
    assert ctl.undo_stack.count() == 0 and not ctl.modified


def test_chart_labels_every_bar_even_with_long_layer_names(qtbot, tmp_path):
    from PyQt6.QtGui import QImage, QPainter

    win = make_window(qtbot, Design(build_template("shufflenet_v2_x1_0")), tmp_path, (1400, 900))
    axis = win.cost_panel.chart.getAxis("left")
    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    drawn = [spec[2] for spec in axis.generateDrawSpecs(painter)[2]]
    painter.end()
    assert sorted(drawn) == sorted(win.cost_panel.top_layers) and len(drawn) == 10
    assert any(len(name) >= 18 for name in drawn)


def test_opaque_node_attributes_edit_as_text_and_json(window):
    from convstudio.ir.graph import Graph

    graph = Graph("imported")
    graph.add("Input", [], name="x", attrs={"shape": [4]})
    graph.add("Opaque", ["x"], name="custom", attrs={"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[4]]})
    graph.add("Output", ["custom"], name="y")
    ctl = window.ctl
    ctl.load_design(Design(graph))
    ctl.select(["custom"])
    inspector = window.inspector
    shapes, op = inspector.editors["output_shapes"], inspector.editors["onnx_op"]
    assert shapes.text() == "[[4]]" and op.text() == "Foo"
    shapes.setText("[[6, 2]]")
    shapes.editingFinished.emit()
    assert ctl.graph.nodes["custom"].meta["shapes"] == [(6, 2)] and ctl.graph.nodes["y"].meta["shapes"] == [(6, 2)]
    shapes.setText("[[6, 2]")
    shapes.textEdited.emit("[[6, 2]")
    assert inspector.reason("output_shapes") == "output_shapes must be JSON, e.g. [[64, 7, 7]]"
    op.setText("Bar Baz")
    op.editingFinished.emit()
    assert ctl.graph.nodes["custom"].attrs["onnx_op"] == "Bar Baz"
    assert ctl.undo_stack.count() == 2


def test_small_real_numbers_are_shown_and_typed_exactly(window):
    ctl = window.ctl
    name = ctl.add_node("BatchNorm2d", (0.0, 600.0))
    ctl.set_attr(name, "eps", 1e-8)
    ctl.select([name])
    eps = window.inspector.editors["eps"]
    assert eps.text() == "1e-08" and eps.value() == 1e-8
    assert window.inspector.editors["momentum"].text() == "0.1"
    eps.setFocus()
    eps.selectAll()
    QTest.keyClicks(eps, "2.5e-7")
    QTest.keyClick(eps, Qt.Key.Key_Return)
    assert ctl.graph.nodes[name].attrs["eps"] == 2.5e-7
    eps.selectAll()
    QTest.keyClicks(eps, "abc")
    assert eps.text() == "2.5e-07"  # letters are refused as they are typed
