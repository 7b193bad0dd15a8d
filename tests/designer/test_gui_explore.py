"""The Explore dialog runs `convstudio explore` in the background into a live chart and table, opens variants in new
windows, and stops its processes on Cancel and on close; the compress dialog carries held weights and shows accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt6 import sip
from PyQt6.QtCore import QCoreApplication, QEvent, QPointF, Qt

from convstudio.backends.explore import RESULTS, mark_pareto
from convstudio.backends.weights import init_params, load_design_weights, save_design_and_weights
from convstudio.designer.gui.dialogs.compress import CompressDialog
from convstudio.designer.gui.dialogs.explore import FRONT, OPEN_WINDOWS, ExploreDialog, front_line, running_processes, sweep_source
from convstudio.designer.gui.mainwindow import MainWindow
from convstudio.ir.design import load
from tests.backends.distill_fixtures import conv_design, digits_npz
from tests.designer.windows import make_window

SWEEP_TIMEOUT_MS = 600_000


@pytest.fixture
def tiny(tmp_path):
    """(a small conv design saved with seeded weights, 64 digits as .npz)."""
    path = conv_design(tmp_path, "tiny")
    design = load(path)
    init_params(design.graph, seed=1)
    save_design_and_weights(design, path, design.graph)
    return path, digits_npz(tmp_path, count=64)


def open_explore(qtbot, tmp_path, path) -> tuple[MainWindow, ExploreDialog]:
    window = make_window(qtbot, load(path), tmp_path / "recovery", size=(1200, 800))
    window.dialog_actions["explore"].trigger()
    dialog = window.findChild(ExploreDialog)
    assert dialog is not None and dialog.isVisible()
    return window, dialog


def configure(dialog: ExploreDialog, data, out, variants: dict, epochs: int = 0) -> None:
    dialog.set_variants(variants)
    dialog.data_edit.setText(str(data))
    dialog.out_edit.setText(str(out))
    dialog.epochs_box.setValue(epochs)
    dialog.latency_box.setCurrentText("measured")


def deleted_after_close(widget, *parts) -> bool:
    """Close `widget`; whether it (a widget deleted on close) or else `parts` of it are deleted as the event loop deletes them."""
    widget.close()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    return all(sip.isdeleted(w) for w in (parts or (widget,)))


def test_sweep_fills_the_chart_and_table_and_opens_a_variant(qtbot, tmp_path, tiny):
    path, data = tiny
    window, dialog = open_explore(qtbot, tmp_path, path)
    out = tmp_path / "sweep"
    configure(dialog, data, out, {"prune": "0.5", "lowrank": "rank=1", "stack3x3": ""})
    arrived = []
    dialog.row_arrived.connect(arrived.append)
    with qtbot.waitSignal(dialog.sweep_done, timeout=SWEEP_TIMEOUT_MS) as done:
        assert dialog.start()
        assert dialog.running() and not dialog.run_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert done.args == [""] and not dialog.running() and dialog.run_button.isEnabled()
    assert len(arrived) == 4  # rows came one by one as the sweep wrote them

    written = {row["name"]: row for row in map(json.loads, (out / RESULTS).read_text().splitlines())}
    assert set(written) == {"baseline", "prune:ratio=0.5", "lowrank:rank=1", "stack3x3"}
    assert "applies nowhere" in written["stack3x3"]["error"]  # the failing variant is reported, the others went on
    measured = [written[n] for n in ("baseline", "prune:ratio=0.5", "lowrank:rank=1")]
    mark_pareto(measured)

    points = dialog.scatter.points()
    assert len(points) == 3
    by_name = {dialog.names[p.data()]: p for p in points}
    for row in measured:
        spot = by_name[row["name"]]
        assert (spot.pos().x(), spot.pos().y()) == pytest.approx((row["macs"], 100 * row["accuracy"]))
        assert (spot.brush().color().name() == FRONT) == row["pareto"]
    assert by_name["baseline"].symbol() == "star" and dialog.base_line.isVisible()
    assert dialog.base_line.value() == pytest.approx(100 * written["baseline"]["accuracy"])
    front = [(r["macs"], 100 * r["accuracy"]) for r in measured if r["pareto"]]
    xs, ys = dialog.front_curve.getData()
    assert (list(xs), list(ys)) == pytest.approx(front_line(front))

    table = dialog.results_table
    lines = {table.item(i, 1).text(): [table.item(i, c).text() for c in range(table.columnCount())] for i in range(table.rowCount())}
    assert list(lines) == ["baseline", "prune:ratio=0.5", "lowrank:rank=1", "stack3x3"]  # as the variants are listed
    assert lines["stack3x3"][5] == "failed" and "applies nowhere" in lines["stack3x3"][7]
    assert lines["prune:ratio=0.5"][5] == f"{100 * written['prune:ratio=0.5']['accuracy']:.2f}%"
    assert lines["prune:ratio=0.5"][7] == written["prune:ratio=0.5"]["design"]

    dialog.axis_box.setCurrentIndex(1)  # accuracy against latency
    latency = {dialog.names[p.data()]: p.pos().x() for p in dialog.scatter.points()}
    assert latency == pytest.approx({r["name"]: r["latency_ms"] for r in measured})
    assert "latency (ms, measured)" in dialog.plot.getAxis("bottom").labelText
    dialog.axis_box.setCurrentIndex(0)

    pruned = written["prune:ratio=0.5"]
    spot = by_name["prune:ratio=0.5"]
    scene = dialog.plot.plotItem.vb.mapViewToScene(QPointF(spot.pos().x(), spot.pos().y()))
    qtbot.mouseClick(dialog.plot.viewport(), Qt.MouseButton.LeftButton, pos=dialog.plot.mapFromScene(scene))
    assert len(OPEN_WINDOWS) == 1
    variant = next(iter(OPEN_WINDOWS))
    assert isinstance(variant, MainWindow) and variant.isWindow() and variant.isVisible() and str(variant.ctl.design.path) == pruned["design"]
    assert variant.ctl.graph.nodes["conv1"].attrs["out_channels"] == 4  # half of the 8 channels pruned
    assert variant.ctl.measured_accuracy() == (pruned["accuracy"], "explore: prune:ratio=0.5")
    assert window.ctl.measured_accuracy() == (written["baseline"]["accuracy"], "explore baseline")
    assert deleted_after_close(variant) and not OPEN_WINDOWS

    row = dialog.order.index(next(k for k, n in dialog.names.items() if n == "lowrank:rank=1"))
    cell = dialog.results_table.visualItemRect(dialog.results_table.item(row, 1)).center()
    qtbot.mouseClick(dialog.results_table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    qtbot.mouseDClick(dialog.results_table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    assert len(OPEN_WINDOWS) == 1
    variant = next(iter(OPEN_WINDOWS))
    assert str(variant.ctl.design.path) == written["lowrank:rank=1"]["design"]
    assert deleted_after_close(window, dialog) and variant.isVisible()  # a window of its own: it outlives the one it came from
    assert deleted_after_close(variant) and not OPEN_WINDOWS


def long_sweep(qtbot, tmp_path, tiny) -> tuple[MainWindow, ExploreDialog, int]:
    """A sweep whose variants fine-tune far too long to finish, caught once it has started a process of its own."""
    path, _ = tiny
    window, dialog = open_explore(qtbot, tmp_path, path)
    configure(dialog, "digits", tmp_path / "long", {"prune": "0.25,0.5", "width": "0.5"}, epochs=500)
    assert dialog.start()
    group = dialog.sweep.process.pid
    qtbot.waitUntil(lambda: len(running_processes(group)) >= 2, timeout=SWEEP_TIMEOUT_MS)  # the sweep and a process it started
    assert dialog.running()
    return window, dialog, group


def test_cancel_kills_the_sweep_and_its_workers(qtbot, tmp_path, tiny):
    window, dialog, group = long_sweep(qtbot, tmp_path, tiny)
    dialog.cancel_button.click()
    assert not dialog.running() and running_processes(group) == []
    assert dialog.run_button.isEnabled() and "cancelled" in dialog.progress_label.text()
    assert dialog.results_table.item(1, 7).text() == "not run"
    assert deleted_after_close(window, dialog)


def test_closing_the_window_mid_run_stops_everything(qtbot, tmp_path, tiny):
    window, dialog, group = long_sweep(qtbot, tmp_path, tiny)
    sweep = dialog.sweep
    assert deleted_after_close(window, dialog, sweep, sweep.timer) and running_processes(group) == []


def test_the_sweep_reads_the_design_as_shown_with_its_weights(qtbot, tmp_path, tiny):
    path, _ = tiny
    window = make_window(qtbot, load(path), tmp_path / "recovery")
    assert sweep_source(window.ctl, tmp_path / "out") == path  # saved as shown: the file itself, weights beside it
    window.ctl.move({"fc": (900.0, 40.0)})
    source = sweep_source(window.ctl, tmp_path / "out")  # edited: a copy with the weights read from the file
    assert source == tmp_path / "out" / "tiny_source.json"
    copy, original = load(source), load(path)
    load_design_weights(copy, required=True)
    load_design_weights(original, required=True)
    assert tuple(copy.graph.layout["fc"]) == (900.0, 40.0) and tuple(original.graph.layout.get("fc", ())) != (900.0, 40.0)  # the open file is not rewritten
    assert np.array_equal(copy.graph.nodes["fc"].params["weight"], original.graph.nodes["fc"].params["weight"])


def test_bad_data_is_one_line_before_or_after_the_sweep_starts(qtbot, tmp_path, tiny):
    path, _ = tiny
    window, dialog = open_explore(qtbot, tmp_path, path)
    configure(dialog, tmp_path / "missing.npz", tmp_path / "out", {"prune": "0.5"})
    assert not dialog.start() and dialog.status.text() == f"error: no such file or folder, data '{tmp_path / 'missing.npz'}'"
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz archive")
    dialog.data_edit.setText(str(broken))
    with qtbot.waitSignal(dialog.sweep_done, timeout=SWEEP_TIMEOUT_MS) as done:
        assert dialog.start()
    line = done.args[0]
    assert line.startswith("error: the baseline could not be measured") and "\n" not in line and dialog.status.text() == line
    assert dialog.status.is_error() and dialog.run_button.isEnabled() and not dialog.running()
    assert deleted_after_close(window, dialog)


def test_a_design_without_weights_is_refused_in_one_line(qtbot, tmp_path):
    window = make_window(qtbot, None, tmp_path / "recovery")
    window.explore()
    dialog = window.findChild(ExploreDialog)
    assert dialog.variant_items() == ["prune:0.25,0.5", "lowrank:energy=0.9", "separable", "width:0.5", "int8"]
    assert dialog.data_edit.text() == "digits" and dialog.epochs_box.value() == 1 and dialog.jobs_box.value() == 1
    dialog.out_edit.setText(str(tmp_path / "out"))
    assert not dialog.start() and dialog.sweep is None
    assert dialog.status.is_error() and "holds no trained weights" in dialog.status.text() and "\n" not in dialog.status.text()
    dialog.set_variants({"prune": "half"})
    assert not dialog.start() and dialog.status.text() == "error: parameter 'ratio' must be a float, got 'half', variants prune:half"
    assert deleted_after_close(window, dialog)


def test_compress_dialog_prunes_with_the_held_weights_and_shows_accuracy(qtbot, tmp_path, tiny):
    path, _ = tiny
    window = make_window(qtbot, load(path), tmp_path / "recovery")
    ctl = window.ctl
    dialog = CompressDialog(window, "prune", None)
    assert dialog.accuracy_label.text().startswith("not measured")
    assert "read from tiny.safetensors" in dialog.weights_label.text()  # the opened design's weights come from its file
    dialog.apply_button.click()
    assert ctl.graph.nodes["conv1"].params["weight"].shape == (4, 1, 3, 3)  # the result holds the pruned weights
    ctl.undo_stack.undo()
    assert not any(node.params for node in ctl.graph.nodes.values())

    init_params(ctl.graph, seed=3)  # what a training run in the designer leaves held
    held = {n: {k: v.copy() for k, v in node.params.items()} for n, node in ctl.graph.nodes.items() if node.params}
    ctl.record_accuracy(0.875, "validation after training 6 epochs")
    dialog = CompressDialog(window, "prune", None)
    assert dialog.accuracy_label.text().startswith("87.50 % (validation after training 6 epochs)")
    assert dialog.weights_label.text().startswith("kept") and "held by the designer" in dialog.weights_label.text()
    dialog.set_param("ratio", 0.5)
    dialog.set_param("importance", "l1")
    assert dialog.apply_button.isEnabled()
    dialog.apply_button.click()

    conv1 = ctl.graph.nodes["conv1"].params["weight"]
    assert conv1.shape == (4, 1, 3, 3) and ctl.graph.nodes["conv2"].params["weight"].shape == (4, 4, 3, 3)
    assert ctl.graph.nodes["bn1"].params["weight"].shape == (4,) and ctl.graph.nodes["fc"].params["weight"].shape == (10, 64)
    kept = [i for i in range(8) if any(np.array_equal(held["conv1"]["weight"][i], w) for w in conv1)]
    assert len(kept) == 4  # the trained filters of the kept channels, sliced, not reinitialized
    assert ctl.measured_accuracy() is None
    assert CompressDialog(window, "prune", None).accuracy_label.text().startswith("not measured")

    ctl.undo_stack.undo()
    for name, params in held.items():
        for key, value in params.items():
            assert np.array_equal(ctl.graph.nodes[name].params[key], value)
    assert ctl.measured_accuracy() == (0.875, "validation after training 6 epochs")  # undo brings back the measured design


def test_a_training_run_records_the_accuracy_the_compress_dialog_shows(qtbot, tmp_path, tiny):
    from convstudio.designer.gui.dialogs.train import TrainDialog

    path, data = tiny
    window = make_window(qtbot, load(path), tmp_path / "recovery")
    dialog = TrainDialog(window)
    dialog.dataset_edit.setText(str(data))
    dialog.epochs_box.setValue(1)
    with qtbot.waitSignal(dialog.finished_run, timeout=120_000) as finished:
        assert dialog.start()
    accuracy = finished.args[0]["history"][-1]["accuracy"]
    assert window.ctl.measured_accuracy() == (accuracy, "validation after training 1 epoch")
    compress = CompressDialog(window, "prune", None)
    assert compress.accuracy_label.text().startswith(f"{100 * accuracy:.2f} % (validation after training 1 epoch)")
    assert "held by the designer" in compress.weights_label.text()
    compress.close()
    dialog.close()
