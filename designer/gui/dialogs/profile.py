"""Profile: measure the design's per-layer latency off the GUI thread (`backends.profile` on ONNX Runtime or PyTorch),
with progress and a Cancel that stops the run before its next timed run. The result fills the cost panel's measured
column and exports as the JSON `convstudio profile --json` prints. Calibrate fits this machine's latency model
(`backends.latency_model.calibrate`, stored where `profile --calibrate` stores it), which then predicts the panel's
latency column.

The dialog is window-modal: a run measures a copy of the design, which cannot change meanwhile. A design that needs
more memory than the default limit is refused before anything runs.
"""

from __future__ import annotations

import json

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from convstudio.backends.latency_model import calibrate, model_path
from convstudio.backends.profile import MAX_RUNS, PROVIDERS, Cancelled, profile_design
from convstudio.backends.roofline import roofline
from convstudio.designer.gui.dialogs.common import Job, StatusLabel, ToolDialog, error_line
from convstudio.ir.budget import check_memory
from convstudio.ir.design import write_atomic
from convstudio.ir.errors import DesignError

RUNTIMES = {"ONNX Runtime": "ort", "PyTorch": "torch", "both": "both"}
JSON_FILTER = "JSON files (*.json);;All files (*)"
MEMORY_HINT = "a smaller batch needs less"
SLOWEST = 5  # layers the summary names


def profile(window) -> ProfileDialog:
    dialog = ProfileDialog(window)
    dialog.show()
    return dialog


def summary_text(report) -> str:
    """End to end, the layer sum and the slowest layers of one report, as the dialog shows them."""
    e2e = report.end_to_end
    slowest = sorted(report.nodes, key=lambda n: -n.latency_ms)[:SLOWEST]
    lines = [
        f"{report.runtime} on {report.provider}, batch {report.batch}, threads {report.threads or 'default'}: "
        f"end to end median {e2e['median']:.3f} ms (min {e2e['min']:.3f}, max {e2e['max']:.3f}, {e2e['runs']} runs)",
        f"layers sum to {report.node_sum_ms:.3f} ms; unattributed {report.unattributed_ms:+.3f} ms",
        "slowest: " + ", ".join(f"{n.name} {n.latency_ms:.3f} ms ({100 * n.share:.0f}%)" for n in slowest),
    ]
    memory_bound = [n.name for n in report.nodes if n.bound == "memory"]
    if any(n.bound for n in report.nodes):
        lines.append(f"{len(memory_bound)} of {len(report.nodes)} layers memory-bound on this machine's roofline")
    if report.fused_by_runtime:
        lines.append(f"{report.runtime} fused {len(report.fused_by_runtime)} kernels over several layers (time split by FLOPs)")
    if report.note:
        lines.append(report.note)
    return "\n".join(lines)


class ProfileDialog(ToolDialog):
    """Options, Profile / Calibrate model / Cancel run, a progress bar, the summary and Export JSON."""

    runs_jobs = True

    def __init__(self, window):
        super().__init__(window)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setWindowTitle("Profile")
        self.ctl = window.ctl
        self.busy = False
        self.reports: list = []

        self.runtime_box = QComboBox()
        self.runtime_box.addItems(RUNTIMES)
        self.provider_box = QComboBox()
        self.provider_box.addItems(PROVIDERS)
        self.provider_box.setToolTip("auto: CUDA when usable, else the CPU")
        self.batch_box = QSpinBox()
        self.batch_box.setRange(1, 4096)
        self.threads_box = QSpinBox()
        self.threads_box.setRange(0, 1024)
        self.threads_box.setSpecialValueText("default")
        self.runs_box = QSpinBox()
        self.runs_box.setRange(1, MAX_RUNS)
        self.runs_box.setValue(10)
        self.runs_box.setToolTip("timed runs after a warm-up")
        self.fuse_box = QCheckBox("Fuse conv+BN+activation first (as deployed)")
        self.roofline_box = QCheckBox("Mark memory-bound layers (this machine's roofline, probed once and cached)")
        self.roofline_box.setChecked(True)
        self.quick_box = QCheckBox("Quick calibration (a tiny grid: seconds, for a first look)")

        self.profile_button = QPushButton("Profile")
        self.profile_button.setDefault(True)
        self.calibrate_button = QPushButton("Calibrate model")
        self.calibrate_button.setToolTip("Run micro-benchmarks and store this machine's latency model (as `convstudio profile --calibrate`)")
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.export_button = QPushButton("Export JSON...")
        self.export_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.progress = QProgressBar()
        self.progress_label = QLabel("not started")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = StatusLabel()

        self.options = QGroupBox("Run")
        form = QFormLayout(self.options)
        form.addRow("Runtime", self.runtime_box)
        form.addRow("Provider", self.provider_box)
        form.addRow("Batch", self.batch_box)
        form.addRow("Threads", self.threads_box)
        form.addRow("Runs", self.runs_box)
        form.addRow("", self.fuse_box)
        form.addRow("", self.roofline_box)
        form.addRow("", self.quick_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress_label, 1)
        buttons.addWidget(self.profile_button)
        buttons.addWidget(self.calibrate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.options)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(640, 460)

        self.profile_button.clicked.connect(lambda: self.start())
        self.calibrate_button.clicked.connect(lambda: self.start_calibration())
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(lambda: self.export_json())
        self.close_button.clicked.connect(self.reject)

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.runtime_box.currentText()]

    def running(self) -> bool:
        """True from a start until its result, cancellation or failure has been shown."""
        return self.busy

    def start(self) -> bool:
        """Check the memory budget and start profiling a copy of the design on a worker thread."""
        if self.running():
            return False
        graph = self.ctl.graph.copy()
        batch = self.batch_box.value()
        try:
            check_memory(graph, batch, where=f"design '{self.ctl.design.name}'", hint=MEMORY_HINT)
        except Exception as e:  # shown as one line; a design that cannot be analysed must not take the designer down
            self.status.show_error(error_line(e))
            return False
        runtime, provider, threads, runs = self.runtime, self.provider_box.currentText(), self.threads_box.value(), self.runs_box.value()
        fuse, use_roofline = self.fuse_box.isChecked(), self.roofline_box.isChecked()

        def work(job: Job):
            return profile_design(graph, runtime, provider, batch, threads, runs, fuse, progress=lambda d, t: job.progress.emit((d, t)),
                                  cancel=lambda: self.stop_requested, roofline=roofline if use_roofline else None)

        self._run(work, self._on_profiled, f"profiling {self.ctl.design.name}...")
        return True

    def start_calibration(self) -> bool:
        """Fit this machine's latency model for the chosen runtime (and provider) on a worker thread."""
        if self.running():
            return False
        runtime = self.runtime
        if runtime == "both":
            self.status.show_error(error_line(DesignError("calibrate one runtime at a time: ONNX Runtime or PyTorch", "Runtime")))
            return False
        provider = "cpu" if self.provider_box.currentText() == "auto" else self.provider_box.currentText()
        threads, quick = self.threads_box.value(), self.quick_box.isChecked()

        def work(job: Job):
            return calibrate(runtime, provider, threads, quick, progress=lambda d, t: job.progress.emit((d, t)), cancel=lambda: self.stop_requested)

        self._run(work, self._on_calibrated, "calibrating the latency model...")
        return True

    def _run(self, work, on_done, text: str) -> None:
        self.stop_requested = False
        self.progress.setRange(0, 0)
        self.progress_label.setText(text)
        self.status.show_info("")
        self._set_running(True)

        def guarded(job: Job):
            try:
                return work(job)
            except Cancelled:
                return None

        self.start_job(guarded, on_done, self._on_progress)

    def cancel(self) -> None:
        """Ask the run to stop before its next timed run (or calibration network)."""
        self.request_stop("stopping...")

    def _set_running(self, running: bool) -> None:
        self.busy = running
        for button in (self.profile_button, self.calibrate_button, self.close_button):
            button.setEnabled(not running)
        self.options.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.export_button.setEnabled(not running and bool(self.reports))

    def _on_progress(self, event: tuple) -> None:
        done, total = event
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _finished(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0 if self.stop_requested else 1)
        self.progress_label.setText(text)

    def _on_profiled(self, reports) -> None:
        if reports is None:
            self._finished("cancelled; nothing measured")
            self._set_running(False)
            return
        self.reports = reports
        self._set_running(False)
        self._finished("done")
        self.summary.setText("\n\n".join(summary_text(r) for r in reports))
        self.ctl.set_profile(reports[0])
        shown = f"{reports[0].runtime} on {reports[0].provider}"
        self.status.show_info(f"the cost panel's meas. ms column shows {shown}" + ("" if len(reports) == 1 else " (the first of both)"))
        self.ctl.message.emit(f"profiled {self.ctl.design.name} on {shown}: {reports[0].end_to_end['median']:.3f} ms end to end")

    def _on_calibrated(self, table) -> None:
        self._set_running(False)
        if table is None:
            self._finished("cancelled; no model stored")
            return
        self._finished("done")
        path = model_path(table.runtime, table.provider, table.threads)
        self.ctl.set_latency_model(table)
        self.status.show_info(f"latency model for {table.runtime} on {table.provider} ({len(table.families)} op families) written to {path}; "
                              "the cost panel's pred. ms column uses it")

    def _on_failed(self, line: str) -> None:
        self._set_running(False)
        self._finished("stopped")
        self.status.show_error(line)

    def export_json(self, path: str | None = None) -> bool:
        """Write the last profile as `convstudio profile --json` prints it (a list for both runtimes), atomically."""
        if not self.reports:
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export profile", f"{self.ctl.design.name}-profile.json", JSON_FILTER)
            if not path:
                return False
        data = [r.to_json() for r in self.reports]
        try:
            write_atomic(path, json.dumps(data if len(data) > 1 else data[0], indent=2) + "\n")
        except DesignError as e:
            self.status.show_error(error_line(e))
            return False
        self.status.show_info(f"profile written to {path}")
        return True
