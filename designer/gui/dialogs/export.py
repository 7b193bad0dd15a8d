"""Export ONNX and Run inference.

Export writes the design with `backends.onnx.export.export_file` (optionally fused, at a chosen or the
lowest covering opset), with the design's weights when it has them. Run inference feeds random input
or an .npy file to an ONNX model through ONNX Runtime (`designer.cli.verb_infer.run_args`, the code of
`convstudio infer`) on a worker thread and shows the provider, the outputs and the latency.
"""

from __future__ import annotations

import tempfile
from argparse import Namespace
from pathlib import Path

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from convstudio.backends.onnx.export import MAX_OPSET, export_file
from convstudio.backends.onnx.ops import FLOOR_OPSET
from convstudio.backends.onnx.runtime import PROVIDERS
from convstudio.backends.weights import has_params, load_design_weights
from convstudio.designer.cli.common import human_bytes
from convstudio.designer.cli.verb_infer import TIME_LIMIT, output_line, run_args
from convstudio.designer.gui.dialogs.common import StatusLabel, ToolDialog, error_line
from convstudio.ir.budget import check_memory
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError

ONNX_FILTER = "ONNX models (*.onnx);;All files (*)"
NPY_FILTER = "NumPy arrays (*.npy);;All files (*)"
MEMORY_HINT = "the command line's --max-memory allows more"


def export_onnx(window) -> ExportDialog:
    dialog = ExportDialog(window)
    dialog.show()
    return dialog


def run_inference(window, model: str | Path | None = None) -> InferenceDialog:
    dialog = InferenceDialog(window, model)
    dialog.show()
    return dialog


def exportable(design: Design) -> tuple[Design, Path | bool | None]:
    """A copy of the design holding its weights (read from its weights file when not loaded yet), and
    where they came from (True: the design held them, a path: the file read, None: it has none); a design
    without any gets seeded initial weights from the exporter.
    A design that needs more memory than the default limit is refused before any weights are read or made."""
    copy = Design(design.graph.copy(), dict(design.training), design.weights, design.path)
    check_memory(copy.graph, where=f"file '{design.path}'" if design.path else f"design '{design.name}'", hint=MEMORY_HINT)
    if has_params(copy.graph):
        return copy, True
    return copy, load_design_weights(copy)


def _path_row(edit: QLineEdit, button: QPushButton) -> QWidget:
    row = QWidget()
    line = QHBoxLayout(row)
    line.setContentsMargins(0, 0, 0, 0)
    line.addWidget(edit, 1)
    line.addWidget(button)
    return row


class ExportDialog(QDialog):
    """Where to write, fused or not, which opset; Export writes the file atomically."""

    def __init__(self, window):
        super().__init__(window)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle("Export ONNX")
        self.main_window = window
        self.ctl = window.ctl
        self.report: dict | None = None
        design = self.ctl.design
        default = design.path.with_suffix(".onnx") if design.path else Path.cwd() / f"{design.name}.onnx"

        self.path_edit = QLineEdit(str(default))
        self.browse_button = QPushButton("Browse...")
        self.fuse_box = QCheckBox("Fold BatchNorm and activations into convs first")
        self.opset_box = QSpinBox()
        self.opset_box.setRange(FLOOR_OPSET - 1, MAX_OPSET)
        self.opset_box.setSpecialValueText("lowest that covers the design")
        self.opset_box.setValue(FLOOR_OPSET - 1)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.infer_button = QPushButton("Run inference...")
        self.infer_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        named = "the design's own when it has them (<design>.safetensors beside it), else seeded initial weights"
        self.status = StatusLabel(f"weights: {named}")

        form = QFormLayout()
        form.addRow("File", _path_row(self.path_edit, self.browse_button))
        form.addRow("Opset", self.opset_box)
        form.addRow("", self.fuse_box)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.infer_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)
        layout.addLayout(buttons)
        self.resize(620, 230)

        self.browse_button.clicked.connect(self.browse)
        self.export_button.clicked.connect(lambda: self.export())
        self.infer_button.clicked.connect(lambda: run_inference(self.main_window, self.report["path"]))
        self.close_button.clicked.connect(self.reject)

    def browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export ONNX", self.path_edit.text(), ONNX_FILTER)
        if path:
            self.path_edit.setText(path)

    def export(self, path: str | Path | None = None) -> dict | None:
        """Write the ONNX file (to `path`, else the path shown); returns the exporter's report."""
        if path is not None:
            self.path_edit.setText(str(path))
        target = Path(self.path_edit.text().strip()).expanduser()
        opset = self.opset_box.value() if self.opset_box.value() >= FLOOR_OPSET else None
        self.setCursor(Qt.CursorShape.WaitCursor)
        try:
            if not target.name or target.is_dir():
                raise DesignError("is a folder; give a file name", f"file '{target}'")
            design, had_weights = exportable(self.ctl.design)
            report = export_file(design, target, opset=opset, fuse=self.fuse_box.isChecked())
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return None
        finally:
            self.unsetCursor()
        self.report = report
        if report["weights_initialized"]:
            weights = f"initialized (seed 0) for {len(report['initialized_nodes'])} nodes; the design has no trained weights"
        else:
            weights = f"from {'the design' if had_weights is True else had_weights}"
        fused = f"; fused {len(report['fused'])} patterns" if self.fuse_box.isChecked() else ""
        self.status.show_info(f"wrote {report['path']} ({human_bytes(report['bytes'])}): opset {report['opset']}, "
                              f"IR version {report['ir_version']}, {report['onnx_nodes']} nodes{fused}\nweights: {weights}")
        self.infer_button.setEnabled(True)
        self.ctl.message.emit(f"exported {report['path']}")
        return report


class InferenceDialog(ToolDialog):
    """Model, input (random or .npy), provider and runs; Run works on a thread and reports back."""

    runs_jobs = True
    ran = pyqtSignal(dict)
    failed = pyqtSignal(str)

    def __init__(self, window, model: str | Path | None = None):
        super().__init__(window)
        self.setWindowTitle("Run inference")
        self.ctl = window.ctl
        self.busy = False
        self.result: dict | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

        self.model_edit = QLineEdit(str(model) if model else "")
        self.model_edit.setPlaceholderText("the current design (exported to a temporary file)")
        self.model_button = QPushButton("Browse...")
        self.random_radio = QRadioButton("Random input (standard normal)")
        self.npy_radio = QRadioButton(".npy file")
        self.random_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.random_radio)
        group.addButton(self.npy_radio)
        self.npy_edit = QLineEdit()
        self.npy_edit.setPlaceholderText("an array shaped like the model's input, batch first")
        self.npy_button = QPushButton("Browse...")
        self.batch_box = QSpinBox()
        self.batch_box.setRange(1, 4096)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.provider_box = QComboBox()
        self.provider_box.addItems(PROVIDERS)
        self.provider_box.setToolTip("auto: CUDA when onnxruntime can use a GPU, else CPU")
        self.runs_box = QSpinBox()
        self.runs_box.setRange(1, 10_000)
        self.runs_box.setValue(10)
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.close_button = QPushButton("Close")
        self.provider_label = QLabel("provider: -")
        self.provider_label.setWordWrap(True)
        self.latency_label = QLabel("latency: -")
        self.outputs = QPlainTextEdit()
        self.outputs.setReadOnly(True)
        self.outputs.setMinimumHeight(90)
        self.status = StatusLabel()

        source = QGroupBox("Input")
        source_form = QFormLayout(source)
        source_form.addRow(self.random_radio)
        random_row = QHBoxLayout()
        random_row.addWidget(QLabel("batch"))
        random_row.addWidget(self.batch_box)
        random_row.addSpacing(12)
        random_row.addWidget(QLabel("seed"))
        random_row.addWidget(self.seed_box)
        random_row.addStretch(1)
        source_form.addRow(random_row)
        source_form.addRow(self.npy_radio)
        source_form.addRow(_path_row(self.npy_edit, self.npy_button))
        form = QFormLayout()
        form.addRow("Model", _path_row(self.model_edit, self.model_button))
        form.addRow("Provider", self.provider_box)
        form.addRow("Timed runs", self.runs_box)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(source)
        layout.addWidget(self.provider_label)
        layout.addWidget(self.latency_label)
        layout.addWidget(QLabel("Outputs"))
        layout.addWidget(self.outputs, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(620, 520)

        self.model_button.clicked.connect(self._browse_model)
        self.npy_button.clicked.connect(self._browse_npy)
        self.npy_edit.textEdited.connect(lambda _text: self.npy_radio.setChecked(True))
        self.run_button.clicked.connect(lambda: self.run())
        self.close_button.clicked.connect(self.reject)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "ONNX model", self.model_edit.text(), ONNX_FILTER)
        if path:
            self.model_edit.setText(path)

    def _browse_npy(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Input array", self.npy_edit.text(), NPY_FILTER)
        if path:
            self.npy_edit.setText(path)
            self.npy_radio.setChecked(True)

    def _model_path(self) -> tuple[Path, bool]:
        """The model to run and whether it is the current design, exported now to a scratch folder."""
        text = self.model_edit.text().strip()
        if text:
            return Path(text).expanduser(), False
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="convstudio-")
        path = Path(self._scratch.name) / f"{self.ctl.design.name}.onnx"
        export_file(exportable(self.ctl.design)[0], path)
        return path, True

    def run(self) -> bool:
        """Start a run on a worker thread; `ran(result)` or `failed(line)` follows."""
        if self.busy:
            return False
        try:
            model, current = self._model_path()
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self._on_failed(error_line(e))
            return False
        if self.npy_radio.isChecked() and not self.npy_edit.text().strip():
            self._on_failed("error: choose an .npy file, or random input")
            return False
        args = Namespace(model=str(model), random=self.random_radio.isChecked(),
                         input=None if self.random_radio.isChecked() else [self.npy_edit.text().strip()],
                         batch=self.batch_box.value(), seed=self.seed_box.value(), provider=self.provider_box.currentText(),
                         runs=self.runs_box.value(), warmup=2, no_optimize=False, max_memory=None, time_limit=TIME_LIMIT)
        self.busy = True
        self.run_button.setEnabled(False)
        self.status.show_info(f"running {'the current design' if current else model} in ONNX Runtime...")
        self.start_job(lambda _job: run_args(args), self._on_done)
        return True

    def _on_done(self, result: dict) -> None:
        self.busy = False
        self.result = result
        self.run_button.setEnabled(True)
        self.provider_label.setText(f"provider: {result['provider']}" + (f"\n{result['note']}" if result["note"] else ""))
        lat = result["latency_ms"]
        self.latency_label.setText(f"latency over {result['runs']} runs: median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms, "
                                   f"min {lat['min']:.3f} ms")
        lines = [f"input {name}: shape {'x'.join(map(str, shape))}" for name, shape in result["inputs"].items()]
        lines += [output_line(o, digits=4) for o in result["outputs"]]
        self.outputs.setPlainText("\n".join(lines))
        self.status.show_info("done")
        self.ran.emit(result)

    def _on_failed(self, line: str) -> None:
        self.busy = False
        self.run_button.setEnabled(True)
        self.status.show_error(line)
        self.failed.emit(line)

    def release(self) -> None:
        """Closing waits for a run in progress, then removes the scratch export."""
        super().release()
        if self._scratch is not None:
            self._scratch.cleanup()
