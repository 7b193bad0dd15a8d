"""Widget lifetime: closing a window ends its dialogs, runs, charts, timers and graph listeners; windows and charts are
deleted with nothing left to paint or signal into them; a form rebuilt from inside one of its editors' events."""

import shutil
from pathlib import Path

from PyQt6 import sip
from PyQt6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QApplication

from convstudio.designer.gui.dialogs.common import Job
from convstudio.designer.gui.dialogs.compare import CompareDialog
from convstudio.designer.gui.dialogs.export import InferenceDialog
from convstudio.designer.gui.dialogs.train import TrainDialog
from convstudio.designer.gui.mainwindow import MainWindow
from convstudio.ir.design import Design, load
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet_digits.json"


def delete_later_now() -> None:
    """Run the deletions the event loop would run next (deleteLater, WA_DeleteOnClose)."""
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


def quit_listeners() -> int:
    app = QApplication.instance()
    return app.receivers(app.aboutToQuit)


def test_closing_the_window_ends_dialogs_runs_charts_timers_and_graph_listeners(qtbot, tmp_path):
    path = tmp_path / "lenet_digits.json"
    shutil.copy(EXAMPLE, path)
    win = make_window(qtbot, load(path), tmp_path / "recovery", (1200, 800), autosave_ms=60_000)
    listening_before = quit_listeners()
    win.dialog_actions["compare"].trigger()
    win.dialog_actions["train"].trigger()
    compare, train = win.findChild(CompareDialog), win.findChild(TrainDialog)
    inference = InferenceDialog(win)  # never shown
    graph = win.ctl.graph
    win.ctl.set_attr("fc1", "out_features", 50)
    win.show_message("a message with a timeout")
    assert compare.isVisible() and train.isVisible() and quit_listeners() == listening_before + 2
    assert win.autosaver.timer.isActive() and graph._listeners  # the controller and its analyzer
    charts = [win.cost_panel.chart, compare.chart, train.loss_plot, train.accuracy_plot]

    assert win.close()
    assert not compare.isVisible() and not train.isVisible()
    assert compare.is_shut_down and train.is_shut_down and inference.is_shut_down
    assert [t for t in win.findChildren(QTimer) if t.isActive()] == []
    assert graph._listeners == [] and quit_listeners() == listening_before
    assert all(chart.plotItem is None for chart in charts)
    report = win.ctl.report
    graph.set_attr("fc1", "out_features", 70)  # the graph edited after its window closed reaches no view
    QApplication.processEvents()
    assert win.ctl.report is report and not win.cost_panel.isVisible()
    delete_later_now()
    assert all(sip.isdeleted(w) for w in (compare, train, inference, *charts))


def test_a_window_deleted_with_repaints_pending_raises_nothing(qtbot, tmp_path):
    win = MainWindow(Design(build_template("shufflenet_v2_x1_0")), recovery_folder=tmp_path)
    win.close_prompt = lambda: "discard"
    win.resize(1400, 900)
    with qtbot.waitExposed(win, timeout=60_000):
        win.show()
    win.dialog_actions["compare"].trigger()
    compare = win.findChild(CompareDialog)
    compare.add_variant("fused")
    win.ctl.set_convention("torchvision", 4)  # the cost chart redraws: a repaint is pending
    compare.metric_box.setCurrentText("params")  # the compare chart too
    panel, chart, compare_chart = win.cost_panel, win.cost_panel.chart, compare.chart
    assert win.close()
    win.deleteLater()
    delete_later_now()
    QApplication.processEvents()  # pytest-qt fails the test on any exception raised in a Qt callback
    assert sip.isdeleted(win) and sip.isdeleted(panel) and sip.isdeleted(compare)
    assert sip.isdeleted(chart) and sip.isdeleted(compare_chart)


def test_a_dialog_left_open_does_not_outlive_its_window(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path, (1000, 700))
    win.dialog_actions["compare"].trigger()
    compare = win.findChild(CompareDialog)
    compare.chart.update()
    assert win.close() and not compare.isVisible() and compare.chart.plotItem is None
    QApplication.processEvents()
    assert [w for w in QApplication.topLevelWidgets() if w.isVisible() and w.parentWidget() is win] == []


def test_results_a_run_queued_before_its_dialog_closed_are_dropped(qtbot):
    receiver = QObject()
    got = []
    job = Job(lambda j: j.progress.emit("step") or "result", receiver)
    job.progress.connect(got.append)
    job.done.connect(got.append)
    job.start()
    job.detach()  # waits, so both signals are already queued
    QApplication.processEvents()
    assert got == [] and job.result == "result" and job.isFinished()


def test_closing_the_window_applies_the_field_being_edited_before_asking(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path, (1200, 800))
    with qtbot.waitActive(win, timeout=60_000):
        win.activateWindow()
    win.ctl.select(["fc1"])
    name_edit = win.inspector.editors["name"]
    name_edit.setFocus()
    name_edit.setCursorPosition(0)
    QTest.keyClick(name_edit, Qt.Key.Key_Delete)
    asked = []
    win.close_prompt = lambda: asked.append(sorted(win.ctl.graph.nodes)) or "cancel"
    assert not win.close() and win.isVisible()
    assert "c1" in asked[0] and "fc1" not in asked[0] and win.ctl.modified
    win.close_prompt = lambda: "discard"


def test_a_form_rebuilt_from_inside_an_editor_event_keeps_that_editor_until_the_event_ends(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path, (1200, 800))
    with qtbot.waitActive(win, timeout=60_000):
        win.activateWindow()
    win.ctl.select(["conv1"])
    share = win.inspector.editors["share"]
    alive_inside = []

    def rebuild_from_inside() -> None:
        win.inspector.show_node("conv2")
        alive_inside.append(not sip.isdeleted(share))

    share.editingFinished.connect(rebuild_from_inside)
    share.setFocus()
    QTest.keyClicks(share, "tied")
    win.view.setFocus()  # focus leaves the field: its focus-out event finishes the edit, which rebuilds the form
    assert alive_inside == [True] and win.inspector.node_name == "conv2"
    QApplication.processEvents()
    assert sip.isdeleted(share)
