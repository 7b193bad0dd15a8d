"""Safety: autosave and crash recovery, the unsaved-changes prompt, files that fail to load."""

import json
import os

import pytest

from convstudio.designer.gui.layout import layered_layout
from convstudio.designer.gui.recovery import pending_recovery, read_recovery, recovery_path
from convstudio.ir.design import Design, dumps, load, save
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.json"
    graph = build_template("lenet")
    graph.layout.update(layered_layout(graph).positions)
    save(Design(graph), path)
    return path


def test_autosave_then_crash_then_recover(qtbot, tmp_path, saved):
    folder = tmp_path / "recovery"
    first = make_window(qtbot, load(saved), folder, autosave_ms=50)
    first.ctl.set_attr("conv1", "out_channels", 12)
    first.ctl.move({"fc1": (300.0, 700.0)})
    edited = first.ctl.dumps()
    target = recovery_path(folder, saved)
    qtbot.waitUntil(target.exists, timeout=3000)
    assert dumps(read_recovery(target.read_text(), "test")) == edited
    first.autosaver.stop()  # the process "crashes": no save, no normal close while the second window runs

    second = make_window(qtbot, load(saved), folder)
    assert pending_recovery(folder, saved) == target
    assert second.banner.isVisibleTo(second) and second.recovery_file == target
    assert second.ctl.dumps() == saved.read_text()
    second.banner.recover_button.click()
    assert second.ctl.dumps() == edited
    assert second.ctl.modified and not second.banner.isVisibleTo(second)
    second.ctl.undo_stack.undo()
    assert second.ctl.dumps() == saved.read_text()


def test_recovery_file_older_than_design_is_not_offered(qtbot, tmp_path, saved):
    folder = tmp_path / "recovery"
    folder.mkdir()
    stale = recovery_path(folder, saved)
    stale.write_text(saved.read_text())
    os.utime(stale, (1, 1))
    win = make_window(qtbot, load(saved), folder)
    assert win.recovery_file is None and not win.banner.isVisibleTo(win)


def test_save_and_normal_close_remove_the_recovery_file(qtbot, tmp_path, saved):
    folder = tmp_path / "recovery"
    win = make_window(qtbot, load(saved), folder)
    win.ctl.set_attr("fc1", "out_features", 100)
    target = win.autosaver.autosave()
    assert target.exists()
    assert win.save_file()
    assert not target.exists() and load(saved).graph.nodes["fc1"].attrs["out_features"] == 100
    win.ctl.set_attr("fc1", "out_features", 90)
    assert win.autosaver.autosave().exists()
    assert win.close()
    assert not target.exists()


def test_close_with_unsaved_changes_prompts(qtbot, tmp_path, saved):
    asked = []
    unchanged = make_window(qtbot, load(saved), tmp_path / "recovery")
    unchanged.show()
    unchanged.close_prompt = lambda: asked.append(0) or "cancel"
    assert unchanged.close() and asked == []  # nothing changed: no prompt
    win = make_window(qtbot, load(saved), tmp_path / "recovery")
    win.show()
    win.close_prompt = lambda: asked.append(1) or "cancel"
    win.ctl.set_attr("fc1", "out_features", 50)
    assert not win.close() and win.isVisible() and asked == [1]
    win.close_prompt = lambda: asked.append(2) or "save"
    assert win.close() and asked == [1, 2]
    assert load(saved).graph.nodes["fc1"].attrs["out_features"] == 50


def test_file_that_fails_to_load_leaves_design_untouched(qtbot, tmp_path):
    win = make_window(qtbot, None, tmp_path / "recovery")
    win.ctl.set_attr("fc1", "out_features", 70)
    before = win.ctl.dumps()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "convstudio.design", "version": 1, "inputs": {"x": [1, 8, 8]}, "nodes": [{"name": "c", "op": "Nope"}]}')
    assert not win.open_file(bad)
    message = win.statusBar().currentMessage()
    assert message.startswith("error: ") and "Nope" in message and "\n" not in message
    assert win.ctl.dumps() == before and win.ctl.modified
    assert not win.open_file(tmp_path / "missing.json")
    assert "no such file" in win.statusBar().currentMessage()


def test_new_from_template_asks_before_dropping_changes(qtbot, tmp_path, saved):
    win = make_window(qtbot, load(saved), tmp_path / "recovery")
    win.ctl.set_attr("fc1", "out_features", 60)
    edited = win.ctl.dumps()
    win.close_prompt = lambda: "cancel"
    win.new_from_template("resnet18")
    assert win.ctl.dumps() == edited
    win.close_prompt = lambda: "discard"
    next(a for a in win.new_menu.actions() if a.text() == "resnet18").trigger()
    assert win.ctl.design.name == "resnet18" and win.ctl.design.path is None
    assert not win.ctl.modified and win.ctl.undo_stack.count() == 0
    assert set(win.scene.nodes) == set(win.ctl.graph.nodes) and "unsaved" in win.windowTitle()


def test_screenshot_into_a_folder_is_refused_before_opening_anything(tmp_path):
    from convstudio.designer.gui.app import run
    from convstudio.ir.errors import DesignError

    with pytest.raises(DesignError, match="is a folder; give a file name"):
        run(None, tmp_path)


def test_work_in_progress_is_recovered_exactly(qtbot, tmp_path, saved):
    folder = tmp_path / "recovery"
    first = make_window(qtbot, load(saved), folder)
    ctl = first.ctl
    loose = ctl.add_node("Conv2d", (600.0, 100.0))
    ctl.connect("relu1", loose, 0)
    ctl.disconnect("fc1", 0)
    ctl.delete(["logits"])
    assert ctl.make_group(["conv1", "relu1", "pool1"], "stem") is None
    ctl.collapse_group("stem")
    assert ctl.save() == "input 0 is not connected, node 'fc1'"  # a design file cannot hold this yet
    edited = ctl.dumps()
    target = first.autosaver.autosave()  # the first window stays open, as a crashed process leaves it
    older = json.loads(target.read_text())
    assert older.pop("groups") == [{"name": "stem", "nodes": ["conv1", "relu1", "pool1"], "collapsed": True}]
    assert read_recovery(json.dumps(older), "'old.json'").graph.groups == {}  # a file written before groups were kept

    second = make_window(qtbot, load(saved), folder)
    assert second.recover()
    assert second.ctl.dumps() == edited and second.ctl.graph.nodes["fc1"].inputs == [None]
    assert second.ctl.graph.outputs == [] and second.ctl.graph.nodes[loose].inputs == ["relu1"]
    assert set(second.scene.nodes) == set(second.ctl.graph.nodes)
    target.write_text('{"format": "convstudio.recovery", "version": 1, "name": "n", "nodes": [{"name": "a"}]}')
    error = second.ctl.recover(target.read_text(), "'r.json'")
    assert error == "damaged (KeyError: 'op'), recovery file 'r.json'"
    assert second.ctl.recover(saved.read_text(), "'r.json'") == "not a convstudio.recovery version 1 file, recovery file 'r.json'"
    assert second.ctl.dumps() == edited


def test_save_into_a_read_only_place_is_one_line(qtbot, tmp_path, saved):
    win = make_window(qtbot, load(saved), tmp_path / "recovery")
    win.ctl.set_attr("fc1", "out_features", 30)
    assert not win.save_as(tmp_path / "missing" / "net.json")
    assert win.statusBar().currentMessage() == f"error: folder does not exist, file '{tmp_path / 'missing' / 'net.json'}'"
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "net.json").mkdir()
    assert not win.save_as(blocked / "net.json")
    assert win.statusBar().currentMessage().startswith("error: is a folder; give a file name")
    assert win.ctl.modified
