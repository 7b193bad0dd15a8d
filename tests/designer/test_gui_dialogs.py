"""Designer dialogs: compression from the right-click menu, fuse preview, compare, ONNX export and
inference, training with live curves and cancel. Headless (pytest-qt); every dialog is screenshotted
into /tmp/convstudio-dialogs."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PyQt6.QtGui import QContextMenuEvent
from PyQt6.QtWidgets import QApplication, QDoubleSpinBox, QSpinBox

from convstudio.designer.gui.dialogs.compare import CompareDialog
from convstudio.designer.gui.dialogs.compress import CompressDialog
from convstudio.designer.gui.dialogs.export import ExportDialog, InferenceDialog, run_inference
from convstudio.designer.gui.dialogs.fuse import FuseDialog
from convstudio.designer.gui.dialogs.train import TrainDialog, updated_section
from convstudio.ir.design import Design, dumps, load, save
from convstudio.ir.templates import build_template
from convstudio.ir.templates.builder import Builder
from convstudio.ir.training import SCHEDULER_PARAMS
from tests.designer.windows import make_window

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet_digits.json"
SHOTS = Path("/tmp/convstudio-dialogs")


@pytest.fixture
def window(qtbot, tmp_path):
    path = tmp_path / "lenet_digits.json"
    shutil.copy(EXAMPLE, path)
    return make_window(qtbot, load(path), tmp_path / "recovery", (1200, 800), autosave=False)


def screenshot(widget, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    QApplication.processEvents()
    assert widget.grab().save(str(SHOTS / f"{name}.png"))


def right_click(window, name: str) -> None:
    """A real context-menu event on the canvas viewport over node `name`."""
    window.view.centre_on_node(name)
    centre = window.scene.nodes[name].sceneBoundingRect().center()
    pos = window.view.mapFromScene(centre)
    viewport = window.view.viewport()
    event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, viewport.mapToGlobal(pos))
    QApplication.sendEvent(viewport, event)


def menu_action(menu, strategy: str):
    return next(a for a in menu.actions() if a.objectName() == f"strategy_{strategy}")


def test_strategy_from_context_menu_updates_cost_panel_and_undo_restores_json(window, qtbot):
    before = dumps(window.ctl.design)
    totals_before = window.cost_panel.totals.text()
    right_click(window, "conv2")
    menu = window.node_menu
    assert window.ctl.selection == ["conv2"]
    stack = menu_action(menu, "stack3x3")
    assert not stack.isEnabled() and "kernel 3x3" in stack.toolTip()
    assert menu_action(menu, "separable").isEnabled()
    screenshot(menu, "context_menu")
    menu_action(menu, "separable").trigger()
    dialog = window.findChild(CompressDialog)
    assert dialog.strategy.name == "separable" and dialog.names == ["conv2"]
    assert dialog.table.cell_text("params", "before") == "19.75 k"
    dialog.set_param("bn", False)
    assert dialog.result is not None and "conv2_dw_bn" not in dialog.result.graph.nodes
    dialog.set_param("bn", True)
    screenshot(dialog, "compress")
    assert dialog.table.cell_text("macs", "delta %").startswith("-")
    dialog.apply_button.click()

    graph = window.ctl.graph
    assert {"conv2_dw", "conv2_dw_bn"} <= set(graph.nodes)
    assert window.cost_panel.totals.text() != totals_before
    assert any(row.name == "conv2_dw" for row in window.cost_panel.model.rows)
    assert window.ctl.undo_stack.count() == 1 and window.ctl.modified
    window.ctl.undo_stack.undo()
    assert dumps(window.ctl.design) == before
    assert window.cost_panel.totals.text() == totals_before
    window.ctl.undo_stack.redo()
    assert "conv2_dw" in window.ctl.graph.nodes


def test_compress_dialog_shows_bad_parameters_as_one_line(window):
    window.ctl.select(["conv2"])
    window.dialog_actions["compress_selection"].trigger()
    dialog = window.findChild(CompressDialog)
    dialog.strategy_box.setCurrentText("bottleneck")
    dialog.set_param("reduction", 0)
    text = dialog.status.text()
    assert dialog.status.is_error() and "\n" not in text
    assert text == "error: reduction must be at least 2, got 0, --param reduction"
    assert not dialog.apply_button.isEnabled()
    dialog.set_param("reduction", 2)
    assert dialog.apply_button.isEnabled() and not dialog.status.is_error()


def test_compress_without_selection_applies_everywhere(window):
    before = dumps(window.ctl.design)
    window.ctl.select([])
    window.compress_selection()
    dialog = window.findChild(CompressDialog)
    assert dialog.names is None
    dialog.strategy_box.setCurrentText("width")
    dialog.set_param("alpha", 0.5)
    assert dialog.table.cell_text("params", "after") == "5.23 k"
    dialog.apply_button.click()
    graph = window.ctl.graph
    assert graph.nodes["conv1"].attrs["out_channels"] == 3 and graph.nodes["fc3"].attrs["out_features"] == 10
    window.ctl.undo_stack.undo()
    assert dumps(window.ctl.design) == before


def test_fuse_preview_apply_and_undo(window):
    before = dumps(window.ctl.design)
    window.dialog_actions["fuse_preview"].trigger()
    dialog = window.findChild(FuseDialog)
    assert dialog.fused_list.count() == 4 and dialog.declined_list.count() == 0
    assert dialog.table.cell_text("nodes", "current") == "12" and dialog.table.cell_text("nodes", "fused") == "8"
    screenshot(dialog, "fuse")
    dialog.apply_button.click()
    graph = window.ctl.graph
    assert "relu1" not in graph.nodes and graph.nodes["conv1"].attrs["activation"] == "relu"
    assert len(window.cost_panel.model.rows) == len(graph.nodes)
    window.ctl.undo_stack.undo()
    assert dumps(window.ctl.design) == before


def test_fuse_preview_lists_declined_patterns(window):
    b = Builder("branchy")
    x = b.input("x", [3, 16, 16])
    stem = b.op("BatchNorm2d", [b.op("Conv2d", [x], "stem", out_channels=8, kernel_size=3, padding=1)], "stem_bn")
    branch = b.op("Conv2d", [b.op("ReLU", [stem], "stem_relu")], "branch", out_channels=8, kernel_size=1)
    b.op("BatchNorm2d", [branch], "branch_bn")
    side = b.op("Conv2d", [branch], "side", out_channels=8, kernel_size=1)
    b.output(b.op("Add", ["branch_bn", side], "sum"))
    window.ctl.load_design(Design(b.graph))
    dialog = FuseDialog(window)
    fused = [dialog.fused_list.item(i).text() for i in range(dialog.fused_list.count())]
    declined = [dialog.declined_list.item(i).text() for i in range(dialog.declined_list.count())]
    assert fused == ["stem + stem_bn + stem_relu -> stem   (Conv2d+BatchNorm2d+ReLU)"]
    assert declined == ["branch + branch_bn: branch output has 2 consumers"]
    assert dialog.declined_title.text() == "Declined (1)"
    screenshot(dialog, "fuse_declined")
    dialog.close()


def test_compare_two_designs_fills_table_and_chart(window, tmp_path):
    other = tmp_path / "lenet.json"
    save(Design(build_template("lenet")), other)
    window.dialog_actions["compare"].trigger()
    dialog = window.findChild(CompareDialog)
    assert dialog.add_file(str(other)) == "lenet"
    assert dialog.add_variant("fused") == "lenet_digits+fused"
    assert dialog.data["labels"] == ["lenet_digits", "lenet", "lenet_digits+fused"]
    assert dialog.table.columnCount() == 3 and dialog.table.rowCount() == 6
    assert dialog.cell_text("params", "lenet_digits") == "19.75 k"
    assert dialog.cell_text("params", "lenet") == "61.71 k  (+212.4%)"
    assert dialog.cell_text("nodes", "lenet_digits+fused") == "8  (-33.3%)"
    assert len(dialog.bar_items) == 3
    heights = dialog.bar_items[1].opts["height"]
    assert max(heights) == dialog.data["breakdown"]["lenet"]["conv"]["flops"]
    dialog.metric_box.setCurrentText("params")
    assert list(dialog.bar_items[0].opts["height"])[0] == dialog.data["breakdown"]["lenet_digits"]["conv"]["params"]
    screenshot(dialog, "compare")
    assert dialog.add_file(str(tmp_path / "missing.json")) is None
    assert dialog.status.text() == f"error: no such file, file '{tmp_path / 'missing.json'}'"


def test_export_writes_onnx_that_onnxruntime_runs(window, tmp_path):
    window.dialog_actions["export_onnx"].trigger()
    dialog = window.findChild(ExportDialog)
    dialog.fuse_box.setChecked(True)
    out = tmp_path / "model.onnx"
    report = dialog.export(out)
    assert report["path"] == str(out) and out.is_file()
    assert f"wrote {out}" in dialog.status.text()
    assert "weights: initialized (seed 0)" in dialog.status.text()
    assert len(report["fused"]) == 4 and dialog.infer_button.isEnabled()
    screenshot(dialog, "export")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": np.zeros((3, 1, 8, 8), np.float32)})
    assert logits.shape == (3, 10) and np.isfinite(logits).all()
    assert dialog.export(tmp_path) is None
    assert dialog.status.is_error() and dialog.status.text() == f"error: is a folder; give a file name, file '{tmp_path}'"


def test_run_inference_shows_provider_latency_and_outputs(window, qtbot, tmp_path):
    out = tmp_path / "model.onnx"
    ExportDialog(window).export(out)
    dialog = run_inference(window, out)
    dialog.provider_box.setCurrentText("cpu")
    with qtbot.waitSignal(dialog.ran, timeout=60_000) as ran:
        assert dialog.run()
    result = ran.args[0]
    assert result["provider"] == "CPUExecutionProvider"
    assert dialog.provider_label.text() == "provider: CPUExecutionProvider"
    assert "median" in dialog.latency_label.text() and "p90" in dialog.latency_label.text()
    assert result["latency_ms"]["median"] > 0
    assert "logits: shape 1x10 float32" in dialog.outputs.toPlainText()
    screenshot(dialog, "inference")

    batch = tmp_path / "batch.npy"
    np.save(batch, np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32))
    dialog.npy_radio.setChecked(True)
    dialog.npy_edit.setText(str(batch))
    with qtbot.waitSignal(dialog.ran, timeout=60_000):
        dialog.run()
    assert "logits: shape 2x10 float32" in dialog.outputs.toPlainText()

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 8, 8), np.float32))
    dialog.npy_edit.setText(str(wrong))
    with qtbot.waitSignal(dialog.failed, timeout=60_000) as failed:
        dialog.run()
    assert failed.args[0].startswith("error: input 'x' must have shape Nx1x8x8, got 2x3x8x8") and "\n" not in failed.args[0]
    dialog.close()


def test_run_inference_on_the_current_design(window, qtbot):
    window.dialog_actions["run_inference"].trigger()
    dialog = window.findChild(InferenceDialog)
    assert dialog.model_edit.text() == ""
    dialog.batch_box.setValue(4)
    with qtbot.waitSignal(dialog.ran, timeout=60_000) as ran:
        dialog.run()
    assert ran.args[0]["outputs"][0]["shape"] == [4, 10]
    assert dialog.provider_label.text().startswith("provider: ")
    dialog.close()


def test_dialogs_show_a_shape_error_as_one_line(window, qtbot, tmp_path):
    assert window.ctl.set_attr("pool2", "kernel_size", 5) is None
    expected = "error: kernel 5x5 is larger than the padded 4x4 input, node 'pool2' attrs.kernel_size"
    compress = CompressDialog(window, "separable", ["conv1"])
    fuse = FuseDialog(window)
    export = ExportDialog(window)
    assert export.export(tmp_path / "bad.onnx") is None
    for dialog in (compress, fuse, export):
        assert dialog.status.text() == expected and dialog.status.is_error()
    assert not compress.apply_button.isEnabled() and not fuse.apply_button.isEnabled()
    assert not (tmp_path / "bad.onnx").exists()
    compare = CompareDialog(window)
    assert compare.status.text() == expected.replace("node 'pool2'", "design 'lenet_digits' node 'pool2'")
    train = TrainDialog(window)
    with qtbot.waitSignal(train.failed, timeout=60_000) as failed:
        train.start()
    assert failed.args[0] == expected
    for dialog in (compress, fuse, export, compare, train):
        dialog.close()


def small_run(dialog, epochs: int) -> None:
    """Few steps per epoch: big batches and half the digits held out for validation."""
    dialog.epochs_box.setValue(epochs)
    dialog.batch_box.setValue(128)
    dialog.val_box.setValue(0.5)


def test_train_one_epoch_updates_curves_saves_weights_and_undoes(window, qtbot, tmp_path):
    before = dumps(window.ctl.design)
    window.dialog_actions["train"].trigger()
    dialog = window.findChild(TrainDialog)
    assert dialog.optimizer_box.currentText() == "sgd" and dialog.nesterov_box.isChecked()
    assert dialog.lr_box.value() == pytest.approx(0.05) and dialog.scheduler_box.currentText() == "cosine"
    assert dialog.overrides() == {}
    small_run(dialog, 1)
    assert dialog.overrides() == {"epochs": 1, "batch_size": 128, "val_split": 0.5}
    with qtbot.waitSignal(dialog.finished_run, timeout=120_000) as finished:
        assert dialog.start()
    result = finished.args[0]
    assert len(result["history"]) == 1 and not result["stopped_early"]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1] and ys[0] == pytest.approx(result["history"][0]["loss"], rel=1e-9)
    assert len(dialog.accuracy_curve.getData()[0]) == 1
    assert dialog.progress.value() == dialog.progress.maximum()
    design = window.ctl.design
    assert design.weights is None and design.weights_path().name == "lenet_digits.safetensors" and design.weights_path().is_file()
    assert design.training["epochs"] == 1 and design.training["batch_size"] == 128
    assert window.ctl.modified and window.ctl.graph.nodes["conv1"].params
    screenshot(dialog, "train")
    report = ExportDialog(window).export(tmp_path / "trained.onnx")
    assert not report["weights_initialized"]
    window.ctl.undo_stack.undo()
    assert dumps(window.ctl.design) == before
    dialog.close()


def test_train_cancel_after_first_epoch_stops_early_and_keeps_nothing(window, qtbot):
    before = dumps(window.ctl.design)
    dialog = TrainDialog(window)
    small_run(dialog, 30)
    dialog.epoch_done.connect(lambda _row: dialog.cancel_button.click())
    with qtbot.waitSignal(dialog.finished_run, timeout=120_000) as finished:
        dialog.start()
    result = finished.args[0]
    assert result["stopped_early"] and 1 <= len(result["history"]) < 30
    assert dialog.progress_label.text().startswith("cancelled after") and "nothing written" in dialog.progress_label.text()
    assert len(dialog.loss_curve.getData()[0]) == len(result["history"])
    assert not window.ctl.design.weights_path().exists() and dialog.scratch is None
    assert window.ctl.undo_stack.count() == 0 and dumps(window.ctl.design) == before and not window.ctl.modified
    dialog.close()


def test_train_failure_shows_one_line(window, qtbot, tmp_path):
    dialog = TrainDialog(window)
    dialog.dataset_edit.setText(str(tmp_path / "nothing.npz"))
    with qtbot.waitSignal(dialog.failed, timeout=60_000) as failed:
        dialog.start()
    assert failed.args[0] == f"error: no such file or folder, dataset '{tmp_path / 'nothing.npz'}'"
    assert dialog.start_button.isEnabled() and not window.ctl.modified
    dialog.dataset_edit.setText("digits")
    dialog.device_box.setCurrentText("cuda")
    if not torch.cuda.is_available():
        with qtbot.waitSignal(dialog.failed, timeout=60_000) as failed:
            dialog.start()
        assert failed.args[0] == "error: CUDA was requested but no GPU is available, --device"
    dialog.close()


def scheduler_editors(dialog) -> dict:
    """The scheduler parameter editors the dialog shows now, by parameter name."""
    boxes = dialog.findChildren((QSpinBox, QDoubleSpinBox))
    return {box.objectName().split("_", 2)[2]: box for box in boxes
            if box.objectName().startswith("scheduler_") and box.isVisibleTo(dialog)}


def test_train_scheduler_shows_its_parameters_with_defaults(window):
    dialog = TrainDialog(window)
    dialog.show()
    assert dialog.scheduler_box.currentText() == "cosine" and list(scheduler_editors(dialog)) == ["t_max"]
    dialog.scheduler_box.setCurrentText("step")
    editors = scheduler_editors(dialog)
    assert sorted(editors) == ["gamma", "step_size"]
    assert isinstance(editors["step_size"], QSpinBox) and editors["step_size"].value() == 10
    assert isinstance(editors["gamma"], QDoubleSpinBox) and editors["gamma"].value() == pytest.approx(0.1)
    assert dialog.setup_form.labelForField(editors["step_size"]).text().strip() == "Step size"
    assert dialog.overrides()["scheduler"] == {"name": "step"}
    screenshot(dialog, "train_step_scheduler")
    for name, params in SCHEDULER_PARAMS.items():
        dialog.scheduler_box.setCurrentText(name)
        editors = scheduler_editors(dialog)
        assert sorted(editors) == sorted(params)
        for param, default in params.items():
            assert isinstance(editors[param], QSpinBox if isinstance(default, int) else QDoubleSpinBox)
            assert editors[param].value() == pytest.approx(default)
    dialog.scheduler_box.setCurrentText("cyclic")
    scheduler_editors(dialog)["base_lr"].setValue(0.0005)
    assert dialog.overrides()["scheduler"] == {"name": "cyclic", "base_lr": pytest.approx(0.0005)}
    screenshot(dialog, "train_cyclic_scheduler")
    dialog.close()


def test_updated_section_merges_same_scheduler_and_replaces_another():
    section = {"scheduler": {"name": "step", "step_size": 3, "gamma": 0.5}}
    assert updated_section(section, {"scheduler": {"name": "step", "gamma": 0.25}}) == {
        "scheduler": {"name": "step", "step_size": 3, "gamma": 0.25}}
    assert updated_section(section, {"scheduler": {"name": "exponential", "gamma": 0.9}}) == {
        "scheduler": {"name": "exponential", "gamma": 0.9}}


def test_train_scheduler_parameters_prefill_edit_and_write_back(window, qtbot):
    path = window.ctl.design.path
    data = json.loads(Path(path).read_text())
    data["training"]["scheduler"] = {"name": "step", "step_size": 3, "gamma": 0.5}
    Path(path).write_text(json.dumps(data))
    window.ctl.load_design(load(path))
    dialog = TrainDialog(window)
    dialog.show()
    editors = scheduler_editors(dialog)
    assert dialog.scheduler_box.currentText() == "step"
    assert editors["step_size"].value() == 3 and editors["gamma"].value() == pytest.approx(0.5)
    assert dialog.overrides() == {}
    editors["gamma"].setValue(0.25)
    assert dialog.overrides()["scheduler"] == {"name": "step", "gamma": 0.25}
    editors["step_size"].setValue(4)
    assert dialog.overrides()["scheduler"] == {"name": "step", "step_size": 4, "gamma": 0.25}
    dialog.scheduler_box.setCurrentText("exponential")
    dialog.scheduler_box.setCurrentText("step")
    assert dialog.overrides()["scheduler"] == {"name": "step", "step_size": 4, "gamma": 0.25}
    small_run(dialog, 1)
    with qtbot.waitSignal(dialog.finished_run, timeout=120_000) as finished:
        assert dialog.start()
    assert finished.args[0]["config"]["scheduler"] == {"name": "step", "step_size": 4, "gamma": 0.25}
    assert window.ctl.design.training["scheduler"] == {"name": "step", "step_size": 4, "gamma": 0.25}
    window.ctl.undo_stack.undo()
    assert window.ctl.design.training["scheduler"] == {"name": "step", "step_size": 3, "gamma": 0.5}
    dialog.close()
