"""Train: the design's training section as a form, a run off the GUI thread with live curves and Cancel.

The run is `backends.torch.train.fit` on a copy of the design (the dialog is window-modal, so the
design cannot change meanwhile), writing only into a scratch folder. A run that finishes becomes one
undoable step: the trained graph and the training section as edited here replace the design's, and the
weights file the design uses (<design>.safetensors) gets the run's weights; undo brings back the old
weights in memory and on disk. A cancelled run (Cancel, or the dialog closed mid-run) writes nothing
and adds no undo step. The spin boxes only offer values `ir.training.RANGES` accepts.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from pathlib import Path

import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from convstudio.backends.torch.train import RunOptions, default_weights_path, fit, merged_config
from convstudio.designer.gui.commands import ReplaceGraphAndFile
from convstudio.designer.gui.dialogs.common import Job, StatusLabel, ToolDialog, error_line
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.training import LOSSES, OPTIMIZERS, RANGES, SCHEDULER_PARAMS, SCHEDULERS, training_config, validate_training

PLAIN_FIELDS = ("dataset", "loss", "l1", "epochs", "batch_size", "val_split", "seed")
OPTIMIZER_FIELDS = ("name", "lr", "momentum", "nesterov", "weight_decay")
STEPS = 1000  # progress-bar resolution per epoch
FULL_BATCH = 0  # the batch-size spin box value that means 'full' (batch gradient descent)
DEVICES = ("auto", "cpu", "cuda")
ZERO_MEANS = {"t_max": "0 (the number of epochs)"}  # scheduler parameters whose 0 stands for something else
SPIN_MAX = 2**31 - 1  # the largest value a QSpinBox holds


def train(window) -> TrainDialog:
    dialog = TrainDialog(window)
    dialog.show()
    return dialog


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def updated_section(section: dict, overrides: dict) -> dict:
    """The training section with the fields the dialog changed; a new scheduler starts from its defaults."""
    out = copy.deepcopy(section)
    for key, value in overrides.items():
        if key == "optimizer":
            out["optimizer"] = {**out.get("optimizer", {}), **value}
        elif key == "scheduler":
            old = out.get("scheduler", {})
            same = old.get("name", "none") == value["name"]
            out["scheduler"] = {**old, **value} if same else dict(value)
        else:
            out[key] = value
    return validate_training(out)


def fit_range(box: QAbstractSpinBox, field: str) -> QAbstractSpinBox:
    """Limit `box` to what RANGES[field] accepts: an excluded end moves in by one step of the box's precision."""
    lo, hi, lo_open, hi_open, _ = RANGES[field]
    if isinstance(box, QSpinBox):
        box.setRange(int(lo) + lo_open, min(int(hi) - hi_open, SPIN_MAX))
    else:
        step = 10.0 ** -box.decimals()
        box.setRange(lo + step if lo_open else lo, hi - step if hi_open else hi)
    return box


def _double(field: str, decimals: int, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setSingleStep(step)
    return fit_range(box, field)


def _param_label(name: str) -> str:
    """'step_size' -> 'Step size', 'max_lr' -> 'Max LR'."""
    text = " ".join("LR" if word == "lr" else word for word in name.split("_"))
    return text[:1].upper() + text[1:]


def _param_box(name: str, default: float) -> QAbstractSpinBox:
    """A spin box for one scheduler parameter: whole numbers for integer defaults, else six decimals."""
    if isinstance(default, int):
        box = fit_range(QSpinBox(), name)
    else:
        box = _double(name, 6, 0.01)
        box.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
    if name in ZERO_MEANS:
        box.setSpecialValueText(ZERO_MEANS[name])
    return box


def weights_target(design: Design) -> str:
    """Where a run writes the design's weights, or the one line saying why it cannot (weights named outside its folder)."""
    try:
        return f"weights go to {default_weights_path(design)}"
    except DesignError as e:
        return f"weights: {e.line()}"


class TrainDialog(ToolDialog):
    """The training form, Start / Cancel, a progress bar and the loss and accuracy curves."""

    runs_jobs = True

    epoch_done = pyqtSignal(dict)
    finished_run = pyqtSignal(dict)
    failed = pyqtSignal(str)

    def __init__(self, window):
        super().__init__(window)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setWindowTitle("Train")
        self.ctl = window.ctl
        self.busy = False
        self.run_design: Design | None = None
        self.run_overrides: dict = {}
        self.scratch: Path | None = None  # the run's own folder for its weights and checkpoints, removed after it
        self.target: Path | None = None  # the weights file the design uses, which a finished run replaces
        self.history: list[dict] = []
        self.result: dict | None = None
        self.epochs = 0

        self.dataset_edit = QLineEdit()
        self.dataset_edit.setToolTip("digits (scikit-learn), an .npz file with arrays x and y, or a folder of class subfolders")
        self.npz_button = QPushButton(".npz...")
        self.folder_button = QPushButton("Folder...")
        self.loss_box = QComboBox()
        self.loss_box.addItems(LOSSES)
        self.optimizer_box = QComboBox()
        self.optimizer_box.addItems(OPTIMIZERS)
        self.lr_box = _double("lr", 6, 0.001)
        self.momentum_box = _double("momentum", 3, 0.05)
        self.nesterov_box = QCheckBox("Nesterov momentum (sgd)")
        self.weight_decay_box = _double("weight_decay", 6, 0.0001)
        self.l1_box = _double("l1", 6, 0.0001)
        self.scheduler_box = QComboBox()
        self.scheduler_box.addItems(SCHEDULERS)
        self.scheduler_params = {name: {param: _param_box(param, default) for param, default in params.items()}
                                 for name, params in SCHEDULER_PARAMS.items()}
        self.epochs_box = fit_range(QSpinBox(), "epochs")
        self.batch_box = fit_range(QSpinBox(), "batch_size")
        self.batch_box.setMinimum(FULL_BATCH)
        self.batch_box.setSpecialValueText("full (batch gradient descent)")
        self.batch_box.setToolTip("1 = stochastic gradient descent, n = mini-batch, full = batch gradient descent")
        self.val_box = _double("val_split", 2, 0.05)
        self.seed_box = fit_range(QSpinBox(), "seed")
        self.prefill(training_config(self.ctl.design.training))
        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.device_box.setToolTip("auto: the GPU when there is one, else the CPU")
        self.scratch_box = QCheckBox("Start from fresh weights (ignore the design's saved ones)")

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.progress_label = QLabel("not started")
        self.weights_label = QLabel(weights_target(self.ctl.design))
        self.weights_label.setWordWrap(True)
        self.status = StatusLabel()

        self.loss_plot = pg.PlotWidget(background="w")
        self.loss_plot.setTitle("loss", color="#333")
        self.loss_plot.addLegend(offset=(-10, 10), labelTextColor="#222")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_plot.setLabel("bottom", "epoch")
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#4c78a8", width=2), symbol="o", symbolSize=6,
                                              symbolBrush="#4c78a8", name="training")
        self.val_loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#f58518", width=2), symbol="o", symbolSize=6,
                                                  symbolBrush="#f58518", name="validation")
        self.accuracy_plot = pg.PlotWidget(background="w")
        self.accuracy_plot.setTitle("validation accuracy", color="#333")
        self.accuracy_plot.showGrid(x=True, y=True, alpha=0.3)
        self.accuracy_plot.setLabel("bottom", "epoch")
        self.accuracy_plot.setYRange(0, 1)
        self.accuracy_curve = self.accuracy_plot.plot([], [], pen=pg.mkPen("#54a24b", width=2), symbol="o", symbolSize=6,
                                                      symbolBrush="#54a24b")

        data_row = QWidget()
        row = QHBoxLayout(data_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.dataset_edit, 1)
        row.addWidget(self.npz_button)
        row.addWidget(self.folder_button)
        setup = QGroupBox("Training section")
        left, right = QFormLayout(), QFormLayout()
        left.addRow("Dataset", data_row)
        left.addRow("Loss", self.loss_box)
        left.addRow("Optimizer", self.optimizer_box)
        left.addRow("Learning rate", self.lr_box)
        left.addRow("Momentum", self.momentum_box)
        left.addRow("", self.nesterov_box)
        left.addRow("Weight decay (L2)", self.weight_decay_box)
        left.addRow("L1 penalty", self.l1_box)
        right.addRow("Scheduler", self.scheduler_box)
        for name, boxes in self.scheduler_params.items():
            for param, box in boxes.items():
                box.setObjectName(f"scheduler_{name}_{param}")
                box.setToolTip(f"{name} scheduler: {param}")
                right.addRow(f"    {_param_label(param)}", box)
        right.addRow("Epochs", self.epochs_box)
        right.addRow("Batch size", self.batch_box)
        right.addRow("Validation split", self.val_box)
        right.addRow("Seed", self.seed_box)
        self.setup_form = right
        self._show_scheduler_params(self.scheduler_box.currentText())
        columns = QHBoxLayout(setup)
        columns.addLayout(left, 1)
        columns.addSpacing(16)
        columns.addLayout(right, 1)
        run_box = QGroupBox("Run")
        run_row = QHBoxLayout(run_box)
        run_row.addWidget(QLabel("Device"))
        run_row.addWidget(self.device_box)
        run_row.addSpacing(16)
        run_row.addWidget(self.scratch_box)
        run_row.addStretch(1)
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.accuracy_plot)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress_label, 1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(setup)
        layout.addWidget(run_box)
        layout.addWidget(self.weights_label)
        layout.addLayout(plots, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(900, 740)

        self.scheduler_box.currentTextChanged.connect(self._show_scheduler_params)
        self.npz_button.clicked.connect(self._browse_npz)
        self.folder_button.clicked.connect(self._browse_folder)
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)

    # ---- the form ---------------------------------------------------------------------------
    def prefill(self, config: dict) -> None:
        """Show a full training configuration (`training_config` output) in the editors."""
        opt = config["optimizer"]
        self.dataset_edit.setText(str(config["dataset"]))
        self.loss_box.setCurrentText(config["loss"])
        self.optimizer_box.setCurrentText(opt["name"])
        self.lr_box.setValue(opt["lr"])
        self.momentum_box.setValue(opt["momentum"])
        self.nesterov_box.setChecked(bool(opt["nesterov"]))
        self.weight_decay_box.setValue(opt["weight_decay"])
        self.l1_box.setValue(config["l1"])
        sched = config["scheduler"]
        self.scheduler_box.setCurrentText(sched["name"])
        for name, boxes in self.scheduler_params.items():
            defaults = SCHEDULER_PARAMS[name]
            source = sched if name == sched["name"] else defaults
            for param, box in boxes.items():
                value = source.get(param, defaults[param])
                box.setValue(round(value) if isinstance(box, QSpinBox) else float(value))
        self.epochs_box.setValue(config["epochs"])
        self.batch_box.setValue(FULL_BATCH if config["batch_size"] == "full" else config["batch_size"])
        self.val_box.setValue(config["val_split"])
        self.seed_box.setValue(config["seed"])

    def values(self) -> dict:
        """What the editors hold, in the training section's shape."""
        return {
            "dataset": self.dataset_edit.text().strip(),
            "loss": self.loss_box.currentText(),
            "optimizer": {"name": self.optimizer_box.currentText(), "lr": self.lr_box.value(), "momentum": self.momentum_box.value(),
                          "nesterov": self.nesterov_box.isChecked(), "weight_decay": self.weight_decay_box.value()},
            "l1": self.l1_box.value(),
            "scheduler": self.scheduler_values(),
            "epochs": self.epochs_box.value(),
            "batch_size": "full" if self.batch_box.value() == FULL_BATCH else self.batch_box.value(),
            "val_split": self.val_box.value(),
            "seed": self.seed_box.value(),
        }

    def overrides(self) -> dict:
        """The fields that differ from the design's training configuration."""
        base = training_config(self.ctl.design.training)
        now = self.values()
        out = {key: now[key] for key in PLAIN_FIELDS if not _same(now[key], base[key])}
        optimizer = {k: now["optimizer"][k] for k in OPTIMIZER_FIELDS if not _same(now["optimizer"][k], base["optimizer"][k])}
        if optimizer:
            out["optimizer"] = optimizer
        name = now["scheduler"]["name"]
        start = base["scheduler"] if name == base["scheduler"]["name"] else SCHEDULER_PARAMS[name]
        changed = {k: v for k, v in now["scheduler"].items() if k != "name" and not _same(v, start[k])}
        if changed or name != base["scheduler"]["name"]:
            out["scheduler"] = {"name": name, **changed}
        return out

    def scheduler_values(self) -> dict:
        """The chosen scheduler's name and the values of its parameter editors."""
        name = self.scheduler_box.currentText()
        return {"name": name, **{param: box.value() for param, box in self.scheduler_params[name].items()}}

    def _show_scheduler_params(self, chosen: str) -> None:
        for name, boxes in self.scheduler_params.items():
            for box in boxes.values():
                self.setup_form.setRowVisible(box, name == chosen)

    def _browse_npz(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Dataset", "", "NumPy archives (*.npz);;All files (*)")
        if path:
            self.dataset_edit.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder (one subfolder per class)")
        if path:
            self.dataset_edit.setText(path)

    # ---- the run ----------------------------------------------------------------------------
    def running(self) -> bool:
        """True from Start until the run's result or failure has been shown."""
        return self.busy

    def start(self) -> bool:
        """Check the form and start training on a worker thread."""
        if self.running():
            return False
        design = self.ctl.design
        try:
            overrides = self.overrides()
            merged_config(design.training, overrides)
            self.target = default_weights_path(design)
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return False
        self.scratch = Path(tempfile.mkdtemp(prefix="convstudio-train-"))
        self.run_overrides = overrides
        self.run_design = Design(design.graph.copy(), copy.deepcopy(design.training), design.weights, design.path)
        self.stop_requested = False
        self.history = []
        self.result = None
        for curve in (self.loss_curve, self.val_loss_curve, self.accuracy_curve):
            curve.setData([], [])
        self.epochs = self.epochs_box.value()
        self.progress.setRange(0, self.epochs * STEPS)
        self.progress.setValue(0)
        self.progress_label.setText("preparing data and model...")
        self.status.show_info("")
        self._set_running(True)
        run_design = self.run_design
        options = RunOptions(device=self.device_box.currentText(), from_scratch=self.scratch_box.isChecked(),
                             weights_out=self.scratch / "weights.safetensors", checkpoint=self.scratch / "run.ckpt")

        def work(job: Job) -> dict:
            return fit(run_design, overrides, options=options,
                       on_epoch=lambda row: job.progress.emit(("epoch", row)),
                       on_step=lambda step, steps: job.progress.emit(("step", step, steps)),
                       should_stop=lambda: self.stop_requested)

        self.start_job(work, self._on_done, self._on_progress)
        return True

    def cancel(self) -> None:
        """Ask the run to stop at its next step; what it trained is dropped (nothing written, no undo step)."""
        self.request_stop("stopping after this step...")

    def _set_running(self, running: bool) -> None:
        self.busy = running
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for box in self.findChildren(QGroupBox):
            box.setEnabled(not running)

    def _on_progress(self, event: tuple) -> None:
        if event[0] == "step":
            _, step, steps = event
            self.progress.setValue(min(len(self.history) * STEPS + step * STEPS // max(steps, 1), self.epochs * STEPS))
            if not self.stop_requested:
                self.progress_label.setText(f"epoch {len(self.history) + 1}/{self.epochs}, step {step}/{steps}")
            return
        row = event[1]
        self.history.append(row)
        epochs = [h["epoch"] for h in self.history]
        self.loss_curve.setData(epochs, [h["loss"] for h in self.history])
        val = [(h["epoch"], h["val_loss"]) for h in self.history if h["val_loss"] is not None]
        self.val_loss_curve.setData([e for e, _ in val], [v for _, v in val])
        acc = [(h["epoch"], h["accuracy"]) for h in self.history if h["accuracy"] is not None]
        self.accuracy_curve.setData([e for e, _ in acc], [a for _, a in acc])
        self.progress.setValue(len(self.history) * STEPS)
        parts = [f"epoch {row['epoch']}/{self.epochs}", f"loss {row['loss']:.4f}"]
        if row["val_loss"] is not None:
            parts.append(f"val loss {row['val_loss']:.4f}")
        if row["accuracy"] is not None:
            parts.append(f"accuracy {row['accuracy']:.3f}")
        self.status.show_info(", ".join(parts))
        self.epoch_done.emit(row)

    def _on_done(self, result: dict) -> None:
        if self.result is not None:
            return
        self.result = result
        self._set_running(False)
        done = len(result["history"])
        epochs = f"{done} epoch{'s' if done != 1 else ''}"
        if result["stopped_early"]:
            self._drop_scratch()
            result.update(weights=None, checkpoint=None)
            self.progress_label.setText(f"cancelled after {epochs} of {self.epochs}: nothing written, the design is unchanged")
            self.finished_run.emit(result)
            return
        try:
            data = Path(result["weights"]).read_bytes()
        except OSError as e:
            self._on_failed(f"error: cannot read the trained weights: {e.strerror or e}, file '{result['weights']}'")
            return
        self._drop_scratch()
        self.progress_label.setText(f"finished {epochs} on {result['device']}")
        design = self.run_design
        section = updated_section(self.ctl.design.training, self.run_overrides)
        self.ctl.push(ReplaceGraphAndFile(self.ctl, design.graph, f"Train {epochs}", section, design.weights, self.target, data))
        last = result["history"][-1]["accuracy"] if result["history"] else None
        if last is not None:
            self.ctl.record_accuracy(last, f"validation after training {epochs}")
        result.update(weights=str(self.target), checkpoint=None)
        self.weights_label.setText(f"weights written to {self.target} (undo brings back the ones before)")
        self.ctl.message.emit(f"trained {epochs}; weights written to {self.target}")
        self.finished_run.emit(result)

    def _drop_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def _on_failed(self, line: str) -> None:
        self._drop_scratch()
        self._set_running(False)
        self.progress_label.setText("stopped")
        self.status.show_error(line)
        self.failed.emit(line)

    def stopped(self, job: Job) -> None:
        """A run stopped by closing or quitting is cancelled: its result is shown (nothing kept) and its folder removed."""
        if job.result is not None:
            self._on_done(job.result)
        self._drop_scratch()
