"""Find (Ctrl+F): queries (convstudio.ir.query) by name, op and attribute match a direct filter of the graph; F3 / Shift+F3 walk the hits."""

import pytest
from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtTest import QTest

from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.ir.design import Design
from convstudio.ir.query import find_nodes, value_matches
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window, view_centre

SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def window(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", (1400, 900))
    win.activateWindow()
    return win


def node_centre(window, name: str) -> QPointF:
    return window.scene.nodes[name].pos() + QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2)


def test_value_matches_the_forms_people_type():
    assert value_matches((3, 3), "3") and value_matches((3, 3), "3x3") and value_matches((3, 1), "3,1") and value_matches((3, 1), "(3, 1)")
    assert not value_matches((3, 1), "3") and not value_matches((3, 3), "3x3x3") and not value_matches((3, 3), "three")
    assert value_matches(True, "True") and not value_matches(True, "1") and value_matches(None, "none")
    assert value_matches("same", "SAME") and value_matches(0.1, "0.1") and value_matches(64, "64") and not value_matches(64, "6")


@pytest.mark.parametrize("query", ["conv", "op:BatchNorm2d", "kernel_size=3", "kernel_size=1x1", "op:conv2d stride=2", "name:downsample", "layer4 relu"])
def test_hits_equal_a_direct_filter_of_the_graph(window, query):
    graph = window.ctl.graph
    expected = {
        "conv": [n for n in graph.nodes if "conv" in n.lower() or "conv" in graph.nodes[n].op.lower()],
        "op:BatchNorm2d": [n for n in graph.nodes if graph.nodes[n].op == "BatchNorm2d"],
        "kernel_size=3": [n for n in graph.nodes if graph.nodes[n].resolved.get("kernel_size") == (3, 3)],
        "kernel_size=1x1": [n for n in graph.nodes if graph.nodes[n].resolved.get("kernel_size") == (1, 1)],
        "op:conv2d stride=2": [n for n in graph.nodes if graph.nodes[n].op == "Conv2d" and graph.nodes[n].resolved["stride"] == (2, 2)],
        "name:downsample": [n for n in graph.nodes if "downsample" in n],
        "layer4 relu": [n for n in graph.nodes if "layer4" in n and ("relu" in n or graph.nodes[n].op == "ReLU")],
    }[query]
    assert expected  # every query finds something in resnet18
    hits = find_nodes(graph, query)
    assert set(hits) == set(expected) and len(hits) == len(expected)
    assert hits == [n for n in graph.topo_order() if n in set(expected)]  # in the order the network runs


def test_ctrl_f_then_f3_walks_every_hit_selecting_and_centring_each(window):
    bar, view, ctl = window.find_bar, window.view, window.ctl
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert bar.isVisible() and bar.field.hasFocus()
    QTest.keyClicks(bar.field, "op:BatchNorm2d")
    hits = [n for n in ctl.graph.topo_order() if ctl.graph.nodes[n].op == "BatchNorm2d"]
    assert bar.hits == hits and len(hits) == 20
    seen = []
    for k, name in enumerate(hits):
        assert ctl.selection == [name] and window.scene.selected_names() == [name]
        assert bar.count.text() == f"{k + 1} of {len(hits)}"
        centre, target = view_centre(view), node_centre(window, name)
        assert abs(centre.x() - target.x()) < 2 and abs(centre.y() - target.y()) < 2
        seen.append(name)
        QTest.keyClick(view if k % 2 else bar.field, Qt.Key.Key_F3)  # F3 works from the field and from the canvas
    assert seen == hits and ctl.selection == [hits[0]]  # wrapped around to the first hit
    QTest.keyClick(view, Qt.Key.Key_F3, SHIFT)
    assert ctl.selection == [hits[-1]] and bar.count.text() == f"{len(hits)} of {len(hits)}"
    QTest.keyClick(bar.field, Qt.Key.Key_Return, SHIFT)
    assert ctl.selection == [hits[-2]]
    QTest.keyClick(bar.field, Qt.Key.Key_Return)
    assert ctl.selection == [hits[-1]]
    QTest.keyClick(bar.field, Qt.Key.Key_Escape)
    assert not bar.isVisible() and view.hasFocus()
    assert ctl.undo_stack.count() == 0  # finding edits nothing


def test_no_match_says_so_and_selects_nothing_new(window):
    bar, ctl = window.find_bar, window.ctl
    bar.open()
    ctl.select(["conv1"])
    assert bar.search("op:Softmax") == []
    assert bar.count.text() == "no match" and ctl.selection == ["conv1"]
    assert bar.next() is None and ctl.selection == ["conv1"]


def test_a_hit_too_small_to_read_is_shown_readable(window):
    view = window.view
    view.set_zoom(0.1)
    window.find_bar.open()
    assert window.find_bar.search("fc") == ["fc"]
    assert view.zoom() >= 0.8 and window.ctl.selection == ["fc"]


def test_hits_follow_edits_of_the_graph(window):
    bar, ctl = window.find_bar, window.ctl
    bar.open()
    hits = bar.search("name:downsample")
    assert bar.count.text() == f"1 of {len(hits)}"
    ctl.delete([hits[-1]])
    assert bar.hits == hits[:-1] and bar.count.text() == f"1 of {len(hits) - 1}"
    ctl.undo_stack.undo()
    assert bar.hits == hits
    bar.close_bar()
    ctl.delete([hits[0]])
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key.Key_F3)  # F3 after Escape brings the bar back with hits true to the graph
    assert bar.isVisible() and bar.hits == hits[1:] and ctl.selection == [hits[1]]


def test_a_hit_inside_a_folded_group_shows_the_group(window):
    bar, ctl, view = window.find_bar, window.ctl, window.view
    ctl.set_collapsed(["layer1"], True)
    bar.open()
    assert bar.search("layer1_0_conv1") == ["layer1_0_conv1"]
    assert ctl.selection == ["layer1_0_conv1"] and bar.count.text() == "1 of 1 (in folded layer1)"
    group = window.scene.folds.items["layer1"].sceneBoundingRect().center()
    centre = view.mapToScene(view.viewport().rect().center())
    assert abs(centre.x() - group.x()) < 2 and abs(centre.y() - group.y()) < 2
