"""Latency in the designer: the cost panel's predicted and measured columns, the tint by latency, the Profile dialog
(a run off the GUI thread with progress, cancel and JSON export; calibration), and the compress dialog's predicted
latency delta. Headless (pytest-qt) on LeNet with a quick calibration stored in a cache of the module's own."""

import json
import time
from dataclasses import replace

import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QApplication

from convstudio.backends import latency_model as lm
from convstudio.backends.profile import MAX_RUNS
from convstudio.designer.gui.cost_panel import MEASURED, PREDICTED
from convstudio.designer.gui.dialogs.compress import CompressDialog
from convstudio.designer.gui.dialogs.profile import ProfileDialog
from convstudio.designer.gui.theme import active
from convstudio.ir.design import Design, dumps
from convstudio.ir.groups import members
from convstudio.ir.templates import build_template
from convstudio.ir.templates.builder import Builder
from tests.designer.windows import make_window

ISSUE_KEYS = {"runtime", "provider", "batch", "threads", "end_to_end_ms", "nodes", "unattributed_ms"}
WAIT_MS = 180_000  # runs share a loaded machine: generous, never a timing assertion


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder holding a quick, one-thread latency model for ONNX Runtime on the CPU."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder))
        lm.calibrate("ort", "cpu", threads=1, quick=True)
    return folder


@pytest.fixture
def model(cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return lm.load_model("ort", "cpu", 1)


@pytest.fixture
def window(qtbot, tmp_path, model):
    return make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800), autosave=False)


def cell(window, name: str, column: int) -> str:
    panel = window.cost_panel
    return panel.model.data(panel.model.index(panel.model.row_of(name), column))


def header_tip(window, column: int) -> str:
    return window.cost_panel.model.headerData(column, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)


def assert_predicted_column_matches_model(window, model) -> None:
    per_node, total = lm.predict(window.ctl.graph, 1, model)
    for row in window.cost_panel.model.rows:
        assert row.latency_ms == pytest.approx(per_node[row.name], rel=1e-9, abs=1e-12), row.name
        assert cell(window, row.name, PREDICTED) == f"{per_node[row.name]:.3f}"
    assert window.ctl.report.total.latency_ms == pytest.approx(total)
    assert f"pred. {total:.3f} ms" in window.cost_panel.totals.text()


def open_profile(window) -> ProfileDialog:
    window.dialog_actions["profile"].trigger()
    dialog = window.findChild(ProfileDialog)
    dialog.threads_box.setValue(1)
    dialog.roofline_box.setChecked(False)
    return dialog


def start_long_run(dialog, qtbot) -> list:
    """Start a run of MAX_RUNS timed runs that, at its first progress, waits (in its own thread) until it is asked to
    stop, so a test cancels or closes it mid-run however slow the machine is; returns the progress events seen."""
    dialog.runs_box.setValue(MAX_RUNS)
    assert dialog.start()
    seen = []

    def hold(event) -> None:
        seen.append(event)
        deadline = time.monotonic() + WAIT_MS / 1000
        while not dialog.stop_requested and time.monotonic() < deadline:
            time.sleep(0.005)

    dialog.job.progress.connect(hold, Qt.ConnectionType.DirectConnection)
    qtbot.waitUntil(lambda: len(seen) > 0, timeout=WAIT_MS)
    return seen


def test_latency_columns_equal_the_model_and_follow_edits_incrementally(window, model):
    assert_predicted_column_matches_model(window, model)
    assert "ort on cpu" in header_tip(window, PREDICTED) and "another machine" not in header_tip(window, PREDICTED)
    window.ctl.set_latency_model(replace(model, machine="elsewhere/x86_64/cpu/64"))
    assert "calibrated on another machine (elsewhere/x86_64/cpu/64)" in header_tip(window, PREDICTED)
    window.ctl.set_latency_model(model)
    assert "Tools > Profile" in header_tip(window, MEASURED) and cell(window, "conv1", MEASURED) == ""
    ctl = window.ctl
    ctl.set_attr("fc2", "out_features", 60)
    assert set(ctl.analyzer.recomputed) == {"fc2", "relu4", "fc3"}  # one edit recomputes what it touches, not the design
    assert_predicted_column_matches_model(window, model)
    extra = ctl.add_node("ReLU", (400.0, 0.0))
    assert ctl.connect("conv1", extra, 0) is None  # conv1 now has two readers: relu1 no longer runs fused into it
    assert "relu1" in ctl.analyzer.recomputed and len(ctl.analyzer.recomputed) < len(ctl.graph.nodes)
    assert_predicted_column_matches_model(window, model)
    ctl.undo_stack.undo()
    ctl.undo_stack.undo()
    assert_predicted_column_matches_model(window, model)


def test_without_a_model_the_predicted_column_says_how_to_get_one(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800), autosave=False)
    assert win.ctl.latency_model is None
    assert "profile --calibrate" in header_tip(win, PREDICTED) and "Calibrate" in header_tip(win, PREDICTED)
    assert cell(win, "conv1", PREDICTED) == "" and "pred. needs a latency model" in win.cost_panel.totals.text()
    win.tint_latency_action.trigger()
    assert "latency unknown" in win.tint_legend.text() and all(item.heat == 0 for item in win.scene.nodes.values())
    dialog = CompressDialog(win, "width", ["conv2"])
    qtbot.addWidget(dialog)
    assert dialog.result is not None and dialog.latency is None
    item = dialog.table.item(dialog.latency_row, 0)
    assert item.text() == "no latency model" and "profile --calibrate" in item.toolTip()
    dialog.close()


def test_tint_by_latency_colours_nodes_in_latency_order(window, model, tmp_path):
    ctl, scene = window.ctl, window.scene
    assert not window.tint_legend.isVisible()
    window.tint_latency_action.trigger()
    assert ctl.heatmap == "latency" and window.cost_panel.heatmap.currentText() == "latency"
    assert window.tint_legend.isVisible() and "predicted" in window.tint_legend.text()
    per_node, _ = lm.predict(ctl.graph, 1, model)
    order = sorted(per_node, key=per_node.get)

    def warmth(name: str) -> int:  # how far the cached fill is from the base colour, towards the hot one
        fill, base = scene.nodes[name].fill, active().node
        return abs(fill.green() - base.green()) + abs(fill.blue() - base.blue())

    assert [warmth(n) for n in order] == sorted(warmth(n) for n in order)
    assert scene.nodes[order[-1]].fill == active().hot and scene.nodes[order[0]].fill == active().node
    assert f"{per_node[order[-1]]:.3f} ms" in window.tint_legend.text()
    assert f"predicted latency {per_node['conv1']:.3f} ms" in scene.nodes["conv1"].toolTip()
    QApplication.processEvents()
    assert window.grab().save(str(tmp_path / "h4-tint.png"))
    window.tint_latency_action.trigger()
    assert ctl.heatmap == "macs" and not window.tint_legend.isVisible()


def test_profile_fills_the_measured_column_and_exports_the_cli_json(window, qtbot, tmp_path):
    dialog = open_profile(window)
    dialog.runs_box.setValue(3)
    assert dialog.isVisible() and dialog.start()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert not dialog.status.is_error(), dialog.status.text()
    report = dialog.reports[0]
    ctl = window.ctl
    assert ctl.profile is report and report.runtime == "ort" and report.batch == 1
    measured = {n.name: n.latency_ms for n in report.nodes}
    for name in ("conv1", "conv2", "fc1", "fc3"):
        assert cell(window, name, MEASURED) == f"{measured[name]:.3f}"
        assert ctl.latency_of(name) == measured[name]  # the tint uses measured times where there are some
    assert f"meas. {report.end_to_end['median']:.3f} ms" in window.cost_panel.totals.text()
    assert "ort cpu" in header_tip(window, MEASURED)
    assert "end to end median" in dialog.summary.text() and dialog.export_button.isEnabled()
    QApplication.processEvents()
    assert dialog.grab().save(str(tmp_path / "h4-profile-dialog.png"))
    assert window.grab().save(str(tmp_path / "h4-measured.png"))

    path = tmp_path / "profile.json"
    assert dialog.export_json(str(path))
    data = json.loads(path.read_text())
    assert ISSUE_KEYS <= set(data) and data == json.loads(json.dumps(report.to_json()))
    assert not dialog.export_json(str(tmp_path / "no-such-folder" / "p.json"))
    assert dialog.status.text().startswith("error: folder does not exist")

    ctl.set_attr("conv1", "out_channels", 8)  # conv1 and what reads it compute something else now
    assert cell(window, "conv1", MEASURED) == "" and cell(window, "conv2", MEASURED) == ""
    assert cell(window, "fc1", MEASURED) == f"{measured['fc1']:.3f}" and "before the last edits" in window.cost_panel.totals.text()
    ctl.undo_stack.undo()
    assert cell(window, "conv1", MEASURED) == f"{measured['conv1']:.3f}" and "before the last edits" not in window.cost_panel.totals.text()


def test_cancel_stops_the_run_and_leaves_the_design_unchanged(window, qtbot):
    before = dumps(window.ctl.design)
    undo_steps = window.ctl.undo_stack.count()
    dialog = open_profile(window)
    seen = start_long_run(dialog, qtbot)
    dialog.cancel()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert dialog.job.isFinished() and dialog.job.result is None
    assert seen[-1][0] < seen[-1][1]  # stopped before its last run
    assert dialog.progress_label.text().startswith("cancelled") and not dialog.status.is_error()
    assert window.ctl.profile is None and window.ctl.measured == {} and cell(window, "conv1", MEASURED) == ""
    assert dumps(window.ctl.design) == before and window.ctl.undo_stack.count() == undo_steps and not window.ctl.modified
    assert dialog.profile_button.isEnabled() and not dialog.export_button.isEnabled()


def test_closing_the_window_mid_profile_stops_and_joins_the_run(window, qtbot):
    app = QApplication.instance()
    listening = app.receivers(app.aboutToQuit)
    dialog = open_profile(window)
    start_long_run(dialog, qtbot)
    job = dialog.job
    assert job.isRunning() and app.receivers(app.aboutToQuit) == listening + 1
    assert window.close()
    assert dialog.is_shut_down and job.isFinished() and not job.isRunning()
    assert app.receivers(app.aboutToQuit) == listening and window.ctl.profile is None


def test_profile_refuses_what_cannot_run_in_one_line(window, qtbot):
    big = Builder("big")
    x = big.input("x", [64, 1024, 1024])
    big.output(big.op("Conv2d", x, "conv", out_channels=64, kernel_size=3, padding=1))
    window.ctl.load_design(Design(big.graph))
    dialog = open_profile(window)
    dialog.batch_box.setValue(4096)
    assert not dialog.start() and dialog.job is None
    line = dialog.status.text()
    assert line.startswith("error: the design needs") and "limit" in line and "design 'big'" in line and "\n" not in line

    window.ctl.load_design(Design(build_template("lenet")))
    dialog.batch_box.setValue(1)
    dialog.runtime_box.setCurrentText("both")
    assert not dialog.start_calibration() and dialog.status.text().startswith("error: calibrate one runtime at a time")


def test_calibrate_from_the_dialog_gives_the_predicted_column(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    win = make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800), autosave=False)
    assert win.ctl.latency_model is None
    dialog = open_profile(win)
    dialog.quick_box.setChecked(True)
    assert dialog.start_calibration()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert not dialog.status.is_error(), dialog.status.text()
    table = win.ctl.latency_model
    assert table is not None and lm.model_path("ort", "cpu", 1).is_file()
    assert lm.load_model("ort", "cpu", 1) == table
    assert_predicted_column_matches_model(win, table)


def test_compress_dialog_shows_the_models_latency_delta_live(window, qtbot, model, tmp_path):
    # a quick calibration on a loaded machine may fit a term to 0 (a conv's time then ignores its width): every term counts here
    model = replace(model, families={family: [terms[0], *(max(x, 1e-4) for x in terms[1:])] for family, terms in model.families.items()})
    window.ctl.set_latency_model(model)
    dialog = CompressDialog(window, "width", ["conv2"])
    qtbot.addWidget(dialog)
    dialog.show()

    def expected():
        before = lm.predict(window.ctl.graph, 1, model)[1]
        after = lm.predict(dialog.result.graph, 1, model)[1]
        return before, after

    for alpha in (0.5, 0.25):
        dialog.set_param("alpha", alpha)
        assert dialog.result is not None
        before, after = expected()
        assert dialog.latency["before"] == pytest.approx(before) and dialog.latency["after"] == pytest.approx(after)
        assert dialog.latency["delta"] == pytest.approx(after - before) and after < before
        row = dialog.latency_row
        assert dialog.table.item(row, 2).text() == f"{after - before:+.3f} ms"
        assert dialog.table.item(row, 3).text() == f"{100 * (after / before - 1):+.1f}%"
        assert dialog.table.verticalHeaderItem(row).text().startswith("pred. latency")
    QApplication.processEvents()
    assert dialog.grab().save(str(tmp_path / "h4-compress.png"))
    dialog.close()


def test_folded_groups_sum_their_layers_latency(qtbot, tmp_path, model):
    graph = build_template("resnet18", input_shape=[3, 32, 32], num_classes=10)
    win = make_window(qtbot, Design(graph), tmp_path / "recovery", (1200, 800), autosave=False)
    dialog = open_profile(win)
    dialog.runs_box.setValue(1)
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert not dialog.status.is_error(), dialog.status.text()
    measured = win.ctl.measured
    layer1 = members(graph.groups, "layer1")
    predicted = lm.predict(graph, 1, model)[0]
    win.cost_panel.by_group.setChecked(True)
    assert cell(win, "layer1", MEASURED) == f"{sum(measured[m] for m in layer1):.3f}"
    assert cell(win, "layer1", PREDICTED) == f"{sum(predicted[m] for m in layer1):.3f}"


def test_profile_on_both_runtimes_exports_a_list_and_shows_the_first(window, qtbot, tmp_path):
    dialog = open_profile(window)
    dialog.runtime_box.setCurrentText("both")
    dialog.runs_box.setValue(1)
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert not dialog.status.is_error(), dialog.status.text()
    assert [r.runtime for r in dialog.reports] == ["ort", "torch"] and window.ctl.profile is dialog.reports[0]
    assert "the first of both" in dialog.status.text() and "torch on cpu" in dialog.summary.text()
    path = tmp_path / "both.json"
    assert dialog.export_json(str(path))
    data = json.loads(path.read_text())
    assert [d["runtime"] for d in data] == ["ort", "torch"] and all(ISSUE_KEYS <= set(d) for d in data)


def test_a_new_design_drops_the_profile_of_the_last_one(window, qtbot):
    dialog = open_profile(window)
    dialog.runs_box.setValue(1)
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.running(), timeout=WAIT_MS)
    assert window.ctl.profile is not None and cell(window, "conv1", MEASURED)
    dialog.close()
    window.new_from_template("lenet")
    assert window.ctl.profile is None and cell(window, "conv1", MEASURED) == "" and "meas." not in window.cost_panel.totals.text()
