"""Groups on the canvas: fold and unfold (double-click, undo/redo), aggregate cost on the folded node, Ctrl+G,
rename, the cost panel by group, and groups kept through save, delete and strategies."""

from __future__ import annotations

import pytest
from PyQt6.QtCore import QPointF, Qt, QTimer
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication, QInputDialog

from convstudio.designer.gui.groups import GroupItem
from convstudio.designer.gui.node_item import NodeItem
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps, load
from convstudio.ir.groups import members
from convstudio.ir.templates import build_template
from convstudio.ir.templates.blocks import bottleneck_residual
from convstudio.ir.templates.resnet import resnet
from tests.designer.windows import make_window


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", (1400, 900))


def drawn(win) -> dict[str, object]:
    """Name -> item of every node or folded group the canvas draws."""
    return {item.name: item for item in win.scene.items() if isinstance(item, (NodeItem, GroupItem)) and item.isVisible()}


def rects_disjoint(items) -> bool:
    rects = [item.sceneBoundingRect().adjusted(6, 6, -6, -6) for item in items]
    return not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])


def double_click(qtbot, win, item) -> None:
    win.view.centerOn(item)
    QApplication.processEvents()
    point = win.view.mapFromScene(item.sceneBoundingRect().center())
    QTest.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)


def test_double_click_folds_and_unfolds_with_undo_and_redo(window, qtbot):
    ctl = window.ctl
    before = dumps(ctl.design)
    double_click(qtbot, window, window.scene.nodes["layer2_0_conv2"])
    qtbot.waitUntil(lambda: "layer2_0" in drawn(window), timeout=30_000)
    assert ctl.graph.groups["layer2_0"].collapsed
    shown = drawn(window)
    assert not set(members(ctl.graph.groups, "layer2_0")) & set(shown)  # its layers are hidden
    assert "layer2_1_conv1" in shown and rects_disjoint(shown.values())
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before and "layer2_0" not in drawn(window) and "layer2_0_conv2" in drawn(window)
    ctl.undo_stack.redo()
    assert "layer2_0" in drawn(window)
    double_click(qtbot, window, drawn(window)["layer2_0"])
    qtbot.waitUntil(lambda: "layer2_0" not in drawn(window), timeout=30_000)
    assert not ctl.graph.groups["layer2_0"].collapsed and "layer2_0_conv2" in drawn(window)
    ctl.undo_stack.undo()
    assert "layer2_0" in drawn(window)


def test_folded_node_shows_shapes_and_the_sum_of_its_members(window):
    ctl = window.ctl
    ctl.collapse_group("layer3")
    item = drawn(window)["layer3"]
    report = analyze(ctl.graph.copy())
    costs = report.by_name()
    inside = members(ctl.graph.groups, "layer3")
    assert item.summary.params == sum(costs[n].params for n in inside)
    assert item.summary.macs == sum(costs[n].macs for n in inside)
    assert item.summary.layers == 16
    assert item.texts[2] == "128×28×28 → 256×14×14"
    assert "2.1 M params" in item.texts[3]
    edges_into = [e for e in item.edges if e.dst is item]
    edges_out = [e for e in item.edges if e.src is item]
    assert edges_into and edges_out  # edges into and out of the group attach to it
    assert {e.src.name for e in edges_into} == {"layer2_1_relu2"}
    assert {e.dst.name for e in edges_out} == {"layer4_0_conv1", "layer4_0_downsample_0"}


def test_resnet152_fully_collapsed_reads_stem_four_stages_head(qtbot, tmp_path):
    graph = resnet("resnet152", bottleneck_residual, 4, (3, 8, 36, 3), (3, 224, 224), 1000)
    win = make_window(qtbot, Design(graph), tmp_path, (1400, 900))
    win.collapse_all_action.trigger()
    shown = drawn(win)
    visible = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
    assert all(visible.intersects(item.sceneBoundingRect()) for item in shown.values())  # the menu action shows what it folded
    layers = {n for n, item in shown.items() if isinstance(item, GroupItem) or graph.nodes[n].op not in ("Input", "Output")}
    assert layers == {"stem", "layer1", "layer2", "layer3", "layer4", "head"}
    assert set(shown) - layers == {"x", "logits"}
    assert rects_disjoint(shown.values())
    assert sum(item.summary.params for item in shown.values() if isinstance(item, GroupItem)) == 60_192_808
    assert shown["layer3"].summary.layers == 36 * 10 + 2  # 36 bottlenecks of ten layers, plus the downsample conv and BN
    win.view.fit_all()
    assert win.view.zoom() > 0.3  # the fit shows the folded column, not the hidden layers
    win.ctl.undo_stack.undo()
    assert len(drawn(win)) == len(graph.nodes)


def test_ctrl_g_groups_the_selection_under_a_typed_name(window, qtbot):
    ctl = window.ctl
    window.view.setFocus()
    ctl.select(["layer1_0_conv1", "layer1_0_bn1", "layer1_0_relu1"])

    def type_name():
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, QInputDialog)
        dialog.setTextValue("first_conv")
        dialog.accept()

    QTimer.singleShot(200, type_name)
    QTest.keyClick(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: "first_conv" in ctl.graph.groups, timeout=30_000)
    group = ctl.graph.groups["first_conv"]
    assert group.nodes == ["layer1_0_conv1", "layer1_0_bn1", "layer1_0_relu1"] and group.parent == "layer1_0"
    assert "layer1_0_conv1" not in ctl.graph.groups["layer1_0"].nodes
    assert set(group.nodes) <= set(members(ctl.graph.groups, "layer1_0"))  # still inside the block, one level down
    assert ctl.make_group(["layer1_0_conv2"], "first_conv") == "a group named 'first_conv' already exists"
    assert ctl.make_group([], "empty") == "select the nodes to group first"
    assert ctl.rename_group("first_conv", "entry") is None
    assert "entry" in ctl.graph.groups and "first_conv" not in ctl.graph.groups
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert "first_conv" not in ctl.graph.groups and "layer1_0_conv1" in ctl.graph.groups["layer1_0"].nodes


def test_grouping_whole_groups_nests_them(window):
    ctl = window.ctl
    assert ctl.make_group(members(ctl.graph.groups, "layer1") + members(ctl.graph.groups, "layer2"), "early") is None
    groups = ctl.graph.groups
    assert groups["layer1"].parent == "early" and groups["layer2"].parent == "early" and groups["early"].parent is None
    ctl.collapse_group("early")
    assert "early" in drawn(window) and "layer1" not in drawn(window)


def test_groups_saved_and_loaded_with_their_fold(window, tmp_path):
    ctl = window.ctl
    ctl.collapse_group("layer4")
    path = tmp_path / "r18.json"
    assert ctl.save(path) is None
    again = load(path)
    assert again.graph.groups["layer4"].collapsed
    assert dumps(again) == path.read_text()


def test_delete_drops_nodes_from_groups_and_undo_restores_them(window):
    ctl = window.ctl
    ctl.delete(["layer4_1_conv1", "layer4_1_bn1", "layer4_1_relu1", "layer4_1_conv2", "layer4_1_bn2"])
    assert "layer4_1_conv1" not in ctl.graph.groups["layer4_1"].nodes
    ctl.undo_stack.undo()
    assert ctl.graph.groups["layer4_1"].nodes[0] == "layer4_1_conv1"


def test_cost_panel_rolls_rows_up_by_group(window):
    panel = window.cost_panel
    panel.by_group.setChecked(True)
    names = [row.name for row in panel.model.rows]
    assert names == ["x", "stem", "layer1", "layer2", "layer3", "layer4", "head", "logits"]
    assert sum(row.params for row in panel.model.rows) == 11_689_512
    row = panel.model.row_of("layer2")
    panel.table.selectRow(panel.proxy.mapFromSource(panel.model.index(row, 0)).row())
    assert set(window.ctl.selection) == set(members(window.ctl.graph.groups, "layer2"))
    panel.by_group.setChecked(False)
    assert len(panel.model.rows) == len(window.ctl.graph.nodes)


def test_strategy_keeps_new_nodes_in_the_group_and_fold_still_draws(window):
    from convstudio.ir.passes.compress import STRATEGIES

    ctl = window.ctl
    ctl.collapse_group("layer1_0")
    out = STRATEGIES["separable"].apply(ctl.graph, nodes=["layer1_0_conv1"]).graph
    ctl.replace_graph(out, "Separable")
    assert "layer1_0_conv1_dw" in ctl.graph.groups["layer1_0"].nodes
    shown = drawn(window)
    assert "layer1_0" in shown and "layer1_0_conv1_dw" not in shown


def test_group_item_stays_put_under_a_click(window, qtbot):
    ctl = window.ctl
    ctl.collapse_group("stem")
    item = drawn(window)["stem"]
    pos = QPointF(item.pos())
    window.view.centerOn(item)
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     window.view.mapFromScene(item.sceneBoundingRect().center()))
    assert item.pos() == pos and item.isSelected()


def test_groups_survive_the_onnx_round_trip():
    from convstudio.backends.onnx.export import build
    from convstudio.backends.onnx.importer import import_model

    graph = build_template("googlenet")
    graph.groups["inception4a"].collapsed = True
    model, _, data = build(graph)
    design, _ = import_model(data)
    assert list(design.graph.groups) == list(graph.groups)
    assert design.graph.groups["inception4a"].collapsed
    assert members(design.graph.groups, "inception4a") == members(graph.groups, "inception4a")


def test_inserted_template_brings_its_groups_and_undo_takes_them_away(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path)
    ctl = win.ctl
    before = dumps(ctl.design)
    added = ctl.insert_template("resnet18", (0.0, 0.0))
    groups = ctl.graph.groups
    assert groups["layer1_1_1"].parent == "layer1_2"  # the copy's groups, renamed where taken ('layer1_1' is a group already)
    assert groups["layer1_1_1"].nodes[0] == "layer1_1_conv1_1"
    assert set(members(groups, "layer1_2")) <= set(added) and len(members(groups, "layer1_2")) == 14
    assert set(members(groups, "stem_1")) == {"conv1_1", "bn1_1", "relu_1", "maxpool_1"}
    ctl.collapse_group("layer4_2")
    assert "layer4_2" in drawn(win)
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before


def test_paste_brings_the_copied_block_group_and_undo_takes_it_away(window):
    ctl = window.ctl
    before = dumps(ctl.design)
    block = members(ctl.graph.groups, "layer1_0")
    assert ctl.copy(block) == 7
    pasted = ctl.paste()
    groups = ctl.graph.groups
    assert list(groups)[-1] == "layer1_0_1" and len(groups) == 15
    assert groups["layer1_0_1"].nodes == pasted and groups["layer1_0_1"].parent is None  # 'layer1' was not copied
    assert groups["layer1_0"].nodes == block
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before
    ctl.undo_stack.redo()
    assert ctl.graph.groups["layer1_0_1"].nodes == pasted


def test_paste_keeps_copied_groups_nested_and_folded_and_leaves_out_groups_copied_in_part(window):
    ctl = window.ctl
    ctl.collapse_group("layer1_1")
    before = dumps(ctl.design)
    stage = members(ctl.graph.groups, "layer1")
    ctl.copy(["conv1", *stage])  # the stem only in part: it stays behind
    pasted = ctl.paste_at((2000.0, 0.0))
    groups = ctl.graph.groups
    assert list(groups)[14:] == ["layer1_2", "layer1_0_1", "layer1_1_1"]
    assert groups["layer1_0_1"].parent == "layer1_2" and groups["layer1_1_1"].parent == "layer1_2" and groups["layer1_2"].parent is None
    assert set(members(groups, "layer1_2")) == set(pasted) - {"conv1_1"}
    assert groups["layer1_1_1"].collapsed and not groups["layer1_0_1"].collapsed
    assert "layer1_1_1" in drawn(window) and "layer1_1_conv1_1" not in drawn(window) and "layer1_0_conv1_1" in drawn(window)
    assert rects_disjoint(drawn(window).values())
    ctl.undo_stack.undo()
    assert dumps(ctl.design) == before


def test_a_group_holding_the_input_and_output_folds_too(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path)
    ctl = win.ctl
    assert ctl.make_group(list(ctl.graph.nodes), "everything") is None
    ctl.collapse_group("everything")
    assert set(drawn(win)) == {"everything"}
    assert drawn(win)["everything"].summary.params == analyze(ctl.graph.copy()).total.params
    ctl.expand_group("everything")
    assert set(drawn(win)) == set(ctl.graph.nodes) and rects_disjoint(drawn(win).values())


def test_editing_a_folded_layer_updates_the_folded_node(window):
    ctl = window.ctl
    ctl.collapse_group("layer2")
    before = drawn(window)["layer2"].summary.params
    assert ctl.set_attr("layer2_1_conv1", "out_channels", 64) is None  # 128 -> 64 output channels in the block's first conv
    after = drawn(window)["layer2"].summary
    assert after.params == sum(ctl.analyzer.costs[n].params for n in members(ctl.graph.groups, "layer2")) < before
    assert "layer2_1_conv1" not in drawn(window)


def test_cost_row_of_a_folded_layer_centres_its_group(window):
    ctl = window.ctl
    ctl.collapse_group("layer4")
    window.view.centre_on_node("layer4_1_conv2")
    item = drawn(window)["layer4"]
    centre = window.view.mapToScene(window.view.viewport().rect().center())
    assert item.sceneBoundingRect().adjusted(-30, -30, 30, 30).contains(centre)
