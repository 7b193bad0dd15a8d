"""Explore compression: sweep variants of the design in the background into a live accuracy-versus-cost chart.

The sweep is `convstudio explore ... --json` (backends/explore.py) run as a child process in a session of its
own. Every task it finishes is appended to results.jsonl in the output folder; the dialog reads the file as
it grows and adds each point to the scatter, with the Pareto front of what has arrived. The final JSON holds
the sweep's own Pareto marks. Cancel, and closing the dialog or its window, kill the child's whole process
group (its worker processes with it) and wait for it. Clicking a point, or double-clicking a row, opens that
variant's saved design in a new designer window, deleted when it is closed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyqtgraph as pg
from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from convstudio.backends.explore import INT8, LATENCY_MODES, RESULTS, Settings, mark_pareto, parse_variants, read_results, task_keys
from convstudio.backends.weights import has_params, load_design_weights, save_design_and_weights
from convstudio.designer.cli.common import human
from convstudio.designer.gui.dialogs.common import LOSS, StatusLabel, ToolDialog, error_line
from convstudio.designer.gui.dialogs.compare import HumanAxis
from convstudio.ir.design import Design, load
from convstudio.ir.errors import DesignError
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.training import training_config

# name: (values, checked) of the variants listed first, as in the example of `convstudio explore --help`
DEFAULT_VARIANTS = {"prune": ("0.25,0.5", True), "lowrank": ("energy=0.9", True), "separable": ("", True), "width": ("0.5", True),
                    INT8: ("", True)}
POLL_MS = 200
KILL_WAIT_S = 10.0
COLUMNS = ("#", "variant", "params", "MACs", "latency ms", "accuracy", "front", "design or error")
POINT, FRONT, BASE = "#4c78a8", "#d62728", "#2ca02c"
AXES = {"macs": ("MACs", "pareto"), "latency_ms": ("latency (ms)", "pareto_latency")}
OPEN_WINDOWS: set = set()  # the variant windows open now (a top-level window needs a reference to stay alive)


def explore(window) -> ExploreDialog:
    dialog = ExploreDialog(window)
    dialog.show()
    return dialog


def default_out_dir(design: Design) -> Path:
    """Where the CLI puts a sweep of a saved design (<design>_explore beside it); a scratch folder for an unsaved one."""
    if design.path is not None:
        return design.path.with_name(design.path.stem + "_explore")
    return Path(tempfile.gettempdir()) / "convstudio-explore" / design.name


def sweep_source(ctl, out_dir: Path) -> Path:
    """The design file the sweep reads: the open file when it is saved as shown and its weights are beside it, else a
    copy of the design as it is now with its weights (held in the designer, or read from its weights file) in `out_dir`."""
    design = ctl.design
    held = any(node.params for node in design.graph.nodes.values())
    if not held and design.path is not None and not ctl.modified:
        load_design_weights(Design(design.graph.copy(), dict(design.training), design.weights, design.path), required=True)
        return design.path
    snapshot = Design(design.graph.copy(), copy.deepcopy(design.training), design.weights, design.path)
    if not held and design.path is not None:
        load_design_weights(snapshot, required=True)
    if not has_params(snapshot.graph):
        what = ("not every layer holds trained weights (train the design again)" if held
                else "the design holds no trained weights (train it, or open a trained design)")
        raise DesignError(what, f"design '{design.name}'")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{design.name}_source.json"
    save_design_and_weights(snapshot, path, snapshot.graph)
    return path


def front_line(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The Pareto points (cost, accuracy) joined as a staircase: each holds its accuracy until the next one's cost."""
    xs, ys = [], []
    for i, (x, y) in enumerate(sorted(points)):
        if i:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    return xs, ys


def running_processes(group: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group `group` (read from /proc; none where there is no /proc)."""
    out = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == group and fields[0] not in "ZX":
            out.append(int(entry.name))
    return out


class Sweep(QObject):
    """One `convstudio explore` child process, followed through its results file.

    `row(dict)` for each task done (those a former run of the same source and settings finished come first),
    then `finished(summary or None, error line or '')` once, unless `stop` came first."""

    row = pyqtSignal(dict)
    finished = pyqtSignal(object, str)

    def __init__(self, settings: Settings, variants: list, jobs: int, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.variants = variants
        self.jobs = jobs
        self.keys = {key: variant for variant, key in task_keys(settings, variants).items()}
        self.results = settings.out_dir / RESULTS
        self.process: subprocess.Popen | None = None
        self.offset = 0
        self.outputs: tuple = ()
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)

    def command(self) -> list[str]:
        s = self.settings
        return [sys.executable, "-m", "convstudio.designer.cli.main", "explore", str(s.design), "--data", s.data,
                "--variants", " ".join(v.name for v in self.variants), "--finetune-epochs", str(s.epochs), "--alpha", str(s.alpha),
                "--temperature", str(s.temperature), "--latency", s.latency, "--jobs", str(self.jobs), "--out-dir", str(s.out_dir),
                "--json", "--no-progress"]

    def start(self) -> None:
        self.settings.out_dir.mkdir(parents=True, exist_ok=True)
        done = read_results(self.results)
        self.offset = self.results.stat().st_size if self.results.is_file() else 0
        self.outputs = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self.outputs[0], stderr=self.outputs[1], env=env,
                                        start_new_session=True)
        for key in self.keys:
            if key in done:
                self.row.emit(done[key])
        self.timer.start()

    def running(self) -> bool:
        return self.timer.isActive()

    def _read_rows(self) -> None:
        """Emit the rows of this sweep's tasks appended since the last read (whole lines only)."""
        if not self.results.is_file():
            return
        with open(self.results, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if isinstance(row, dict) and row.get("key") in self.keys:
                    self.row.emit(row)

    def _poll(self) -> None:
        self._read_rows()
        code = self.process.poll()
        if code is None:
            return
        self._read_rows()
        self._end()
        out, err = (self._text(f) for f in self.outputs)
        self._close_outputs()
        if code == 0:
            try:
                summary = json.loads(out)
            except json.JSONDecodeError:
                summary = None
            if isinstance(summary, dict) and "baseline" in summary:
                self.finished.emit(summary, "")
                return
        lines = [line for line in err.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else ""
        self.finished.emit(None, last if last.startswith("error:") else f"error: the sweep stopped with exit code {code}{': ' + last if last else ''}")

    @staticmethod
    def _text(f) -> str:
        f.seek(0)
        return f.read().decode("utf-8", "replace")

    def _end(self) -> None:
        """Stop following, kill what is left of the child's process group (its workers, if it died first) and wait until it is gone."""
        self.timer.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + KILL_WAIT_S
        while running_processes(self.process.pid) and time.monotonic() < deadline:  # workers die as the signal reaches them
            time.sleep(0.02)

    def _close_outputs(self) -> None:
        for f in self.outputs:
            f.close()
        self.outputs = ()

    def stop(self) -> None:
        """Kill the sweep (the child and its workers) and wait for it; nothing more is reported."""
        if self.process is None or not self.running():
            return
        self._end()
        self._close_outputs()


class ExploreDialog(ToolDialog):
    """Variants, data and settings on the left; Run / Cancel, the live chart and the results table on the right."""

    row_arrived = pyqtSignal(dict)
    sweep_done = pyqtSignal(str)

    def __init__(self, window):
        super().__init__(window)
        self.setWindowTitle("Explore compression")
        self.origin = window
        self.ctl = window.ctl
        self.sweep: Sweep | None = None
        self.order: list[str] = []  # keys: the baseline, then the variants as listed
        self.names: dict[str, str] = {}
        self.rows: dict[str, dict] = {}
        self.final = False
        self.run_state: tuple | None = None

        self.variant_table = QTableWidget(0, 2)
        self.variant_table.setHorizontalHeaderLabels(["variant", "values (V,V,... or k=v+k=v)"])
        self.variant_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.variant_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.variant_table.verticalHeader().setVisible(False)
        for name in [*DEFAULT_VARIANTS, *(s for s in STRATEGIES if s not in DEFAULT_VARIANTS)]:
            values, checked = DEFAULT_VARIANTS.get(name, ("", False))
            self.add_variant_row(name, values, checked)
        self.data_edit = QLineEdit(training_config(self.ctl.design.training)["dataset"])
        self.data_edit.setToolTip("digits (scikit-learn, built in), an .npz file with arrays x and y, or a folder of class subfolders")
        self.npz_button = QPushButton(".npz...")
        self.epochs_box = QSpinBox()
        self.epochs_box.setRange(0, 10_000)
        self.epochs_box.setValue(1)
        self.epochs_box.setToolTip("epochs of fine-tuning with distillation from the design per variant (0: none)")
        self.jobs_box = QSpinBox()
        self.jobs_box.setRange(1, os.cpu_count() or 1)
        self.jobs_box.setToolTip("variants run in this many worker processes")
        self.latency_box = QComboBox()
        self.latency_box.addItems(LATENCY_MODES)
        self.latency_box.setToolTip("predicted by this machine's latency model, or measured in ONNX Runtime (auto: predicted when calibrated)")
        self.out_edit = QLineEdit(str(default_out_dir(self.ctl.design)))
        self.out_edit.setToolTip("variants and results.jsonl go here; a run with the same design and settings resumes")
        self.out_button = QPushButton("Folder...")

        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.progress = QProgressBar()
        self.progress_label = QLabel("not started")
        self.status = StatusLabel()

        self.axis_box = QComboBox()
        self.axis_box.addItem("accuracy against MACs", "macs")
        self.axis_box.addItem("accuracy against latency", "latency_ms")
        self.axis_box.setEnabled(False)
        self.plot = pg.PlotWidget(background="w", axisItems={"bottom": HumanAxis("bottom")})
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setLabel("left", "accuracy (%)")
        self.plot.setLabel("bottom", "MACs")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)  # the axis writes k, M, G itself
        self.plot.addLegend(offset=(-10, -10), labelTextColor="#222")
        self.caption = QLabel("red: on the Pareto front (joined), star: the baseline (dashed: its accuracy); numbers as in the table. "
                              "Click a point to open that variant in a new window.")
        self.caption.setWordWrap(True)
        self.front_curve = self.plot.plot([], [], pen=pg.mkPen(FRONT, width=2), name="Pareto front")
        self.base_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(BASE, width=1, style=Qt.PenStyle.DashLine))
        self.base_line.setVisible(False)
        self.plot.addItem(self.base_line)
        self.scatter = pg.ScatterPlotItem(hoverable=True, tip=self._tip, name="variants")
        self.plot.addItem(self.scatter)
        self.point_labels: list[pg.TextItem] = []
        self.scatter.sigClicked.connect(self._on_points_clicked)
        self.results_table = QTableWidget(0, len(COLUMNS))
        self.results_table.setHorizontalHeaderLabels(list(COLUMNS))
        self.results_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.horizontalHeader().setStretchLastSection(True)
        self.results_table.setToolTip("double-click a variant to open its design in a new window")

        data_row = QWidget()
        row = QHBoxLayout(data_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.data_edit, 1)
        row.addWidget(self.npz_button)
        out_row = QWidget()
        row = QHBoxLayout(out_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.out_edit, 1)
        row.addWidget(self.out_button)
        self.setup = QGroupBox("Sweep")
        setup = QVBoxLayout(self.setup)
        setup.addWidget(QLabel("Variants (checked ones run; each value is one variant)"))
        setup.addWidget(self.variant_table, 1)
        form = QFormLayout()
        form.addRow("Data", data_row)
        form.addRow("Fine-tune epochs", self.epochs_box)
        form.addRow("Jobs", self.jobs_box)
        form.addRow("Latency", self.latency_box)
        form.addRow("Output folder", out_row)
        setup.addLayout(form)
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.setup, 1)
        column.addWidget(self.progress)
        column.addWidget(self.progress_label)
        column.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        column.addLayout(buttons)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.axis_box)
        column.addWidget(self.plot, 3)
        column.addWidget(self.caption)
        column.addWidget(self.results_table, 2)
        left.setMinimumWidth(360)
        left.setMaximumWidth(560)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self.resize(1180, 720)
        splitter.setSizes([420, 760])

        self.npz_button.clicked.connect(self._browse_npz)
        self.out_button.clicked.connect(self._browse_out)
        self.run_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)
        self.axis_box.currentIndexChanged.connect(lambda _i: self.redraw())
        self.results_table.cellDoubleClicked.connect(lambda r, _c: self.open_variant(self.order[r]) if r < len(self.order) else None)
        QApplication.instance().aboutToQuit.connect(self.cancel)

    # ---- the form ---------------------------------------------------------------------------
    def add_variant_row(self, name: str, values: str, checked: bool) -> None:
        row = self.variant_table.rowCount()
        self.variant_table.insertRow(row)
        item = QTableWidgetItem(name)
        item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        strategy = STRATEGIES.get(name)
        tip = "the design exported to ONNX and quantized to int8 by ONNX Runtime" if strategy is None else strategy.summary
        if strategy is not None and strategy.params:
            tip += "\nparameters: " + ", ".join(f"{k} (default {v})" for k, v in strategy.params.items())
        item.setToolTip(tip)
        self.variant_table.setItem(row, 0, item)
        value = QTableWidgetItem(values)
        if strategy is None or not strategy.params:
            value.setFlags(Qt.ItemFlag.ItemIsEnabled)
        value.setToolTip(tip)
        self.variant_table.setItem(row, 1, value)

    def set_variants(self, chosen: dict[str, str]) -> None:
        """Check exactly the variants named in `chosen` ({name: values}) and set their values."""
        for row in range(self.variant_table.rowCount()):
            name = self.variant_table.item(row, 0).text()
            self.variant_table.item(row, 0).setCheckState(Qt.CheckState.Checked if name in chosen else Qt.CheckState.Unchecked)
            if name in chosen:
                self.variant_table.item(row, 1).setText(chosen[name])

    def variant_items(self) -> list[str]:
        """The checked rows as `explore --variants` items."""
        items = []
        for row in range(self.variant_table.rowCount()):
            name_item, value_item = self.variant_table.item(row, 0), self.variant_table.item(row, 1)
            if name_item.checkState() == Qt.CheckState.Checked:
                values = "".join(value_item.text().split())
                items.append(f"{name_item.text()}:{values}" if values else name_item.text())
        return items

    def _browse_npz(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data", "", "NumPy archives (*.npz);;All files (*)")
        if path:
            self.data_edit.setText(path)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.out_edit.setText(path)

    # ---- the run ----------------------------------------------------------------------------
    def running(self) -> bool:
        return self.sweep is not None and self.sweep.running()

    def start(self) -> bool:
        """Check the form, write the design's source file if needed and start the sweep in the background."""
        if self.running():
            return False
        try:
            variants = parse_variants(self.variant_items(), "variants")
            data = self.data_edit.text().strip()
            if not data:
                raise DesignError("give 'digits', an .npz file or an image folder", "data")
            out_text = self.out_edit.text().strip()
            if not out_text:
                raise DesignError("give a folder", "output folder")
            out_dir = Path(out_text).expanduser()
            if out_dir.exists() and not out_dir.is_dir():
                raise DesignError("is a file, not a folder", f"output folder '{out_dir}'")
            source = sweep_source(self.ctl, out_dir)
            if data != "digits":
                from convstudio.backends.torch.data import resolve_data_path

                resolved = resolve_data_path(data, self.ctl.design)
                if not resolved.exists():
                    raise DesignError("no such file or folder", f"data '{data}'")
                data = str(resolved.absolute())  # the sweep may read a copy of the design elsewhere
            settings = Settings(source, data, out_dir, epochs=self.epochs_box.value(), latency=self.latency_box.currentText())
            sweep = Sweep(settings, variants, self.jobs_box.value(), self)
        except Exception as e:  # shown as one line: a bad value or unreadable weights must not take the designer down
            self.status.show_error(error_line(e))
            return False
        self.run_state = self.ctl.state()  # the baseline's accuracy is that of the design as it is now
        if self.sweep is not None:
            self.sweep.deleteLater()
        self.sweep = sweep
        self.order = list(sweep.keys)
        self.names = {key: "baseline" if v is None else v.name for key, v in sweep.keys.items()}
        self.rows = {}
        self.final = False
        self.progress.setRange(0, len(self.order))
        self.progress.setValue(0)
        self.progress_label.setText(f"starting {len(variants)} variant{'s' if len(variants) != 1 else ''} and the baseline...")
        self.status.show_info(f"results go to {sweep.results}")
        self.redraw()
        sweep.row.connect(self._on_row)
        sweep.finished.connect(self._on_finished)
        self._set_running(True)
        try:
            sweep.start()
        except OSError as e:
            self._set_running(False)
            self.status.show_error(f"error: cannot start the sweep: {e.strerror or e}")
            return False
        return True

    def cancel(self) -> None:
        """Stop the sweep now: its process and workers are killed; what finished stays in results.jsonl (a rerun resumes)."""
        if not self.running():
            return
        self.sweep.stop()
        self._set_running(False)
        self.progress_label.setText(f"cancelled after {len(self.rows)} of {len(self.order)}")
        self._fill_table()

    def _set_running(self, running: bool) -> None:
        self.setup.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_row(self, row: dict) -> None:
        key = row["key"]
        self.rows[key] = row
        self.progress.setValue(len(self.rows))
        what = f"{row['name']} failed: {row['error']}" if "error" in row else f"{row['name']} done"
        self.progress_label.setText(f"{len(self.rows)}/{len(self.order)}: {what}")
        if key == self.order[0] and row.get("accuracy") is not None and self.run_state is not None:
            self.ctl.record_accuracy(row["accuracy"], "explore baseline", self.run_state)
        self.redraw()
        self.row_arrived.emit(row)

    def _on_finished(self, summary: dict | None, error: str) -> None:
        self._set_running(False)
        if summary is None:
            self.progress_label.setText("stopped")
            self.status.show_error(error)
            self.sweep_done.emit(error)
            return
        for row in [summary["baseline"], *summary["variants"]]:
            self.rows[row["key"]] = row
        self.final = True
        failed = sum("error" in r for r in self.rows.values())
        self.progress.setValue(len(self.order))
        self.progress_label.setText(f"finished: {len(self.order) - failed} measured" + (f", {failed} failed" if failed else ""))
        self.redraw()
        self.sweep_done.emit("")

    # ---- chart and table --------------------------------------------------------------------
    def shown_rows(self) -> list[tuple[str, dict]]:
        """(key, row) of what has arrived, in the sweep's order, Pareto marks over those (the sweep's own once it finished)."""
        rows = [(key, self.rows[key]) for key in self.order if key in self.rows]
        if not self.final:
            marked = [copy.copy(row) for _, row in rows]
            mark_pareto(marked)
            rows = [(key, row) for (key, _), row in zip(rows, marked)]
        return rows

    def points(self) -> list[tuple[str, float, float, bool]]:
        """(key, cost, accuracy %, on the front) of the measured rows on the chosen axis."""
        axis = self.axis_box.currentData()
        flag = AXES[axis][1]
        return [(key, float(row[axis]), 100.0 * row["accuracy"], bool(row[flag])) for key, row in self.shown_rows()
                if row.get("accuracy") is not None and row.get(axis) is not None]

    def redraw(self) -> None:
        axis = self.axis_box.currentData()
        points = self.points()
        base = self.order[0] if self.order else None
        spots = [{"pos": (x, y), "data": key, "symbol": "star" if key == base else "o", "size": 18 if key == base else 11,
                  "brush": pg.mkBrush(FRONT if front else POINT), "pen": pg.mkPen(BASE if key == base else "w", width=2 if key == base else 1)}
                 for key, x, y, front in points]
        self.scatter.setData(spots)
        for label in self.point_labels:
            self.plot.removeItem(label)
        numbers: dict[tuple, list[str]] = {}
        for key, x, y, _ in points:  # variants with the same cost and accuracy share one label
            numbers.setdefault((x, y), []).append(str(self.order.index(key)))
        self.point_labels = [pg.TextItem(",".join(n), color="#333", anchor=(-0.2, 1.0)) for n in numbers.values()]
        for label, (x, y) in zip(self.point_labels, numbers):
            label.setPos(x, y)
            self.plot.addItem(label, ignoreBounds=True)
        self.front_curve.setData(*front_line([(x, y) for _, x, y, front in points if front]))
        baseline = [y for key, _, y, _ in points if key == base]
        self.base_line.setVisible(bool(baseline))
        if baseline:
            self.base_line.setValue(baseline[0])
        label = AXES[axis][0]
        sources = sorted({row["latency_source"] for _, row in self.shown_rows() if row.get("latency_source")})
        if axis == "latency_ms" and sources:
            label = f"latency (ms, {' and '.join(sources)})"
        self.plot.setLabel("bottom", label)
        self.axis_box.setEnabled(any(r.get("latency_ms") is not None for _, r in self.shown_rows()))
        self._fill_table()

    def _fill_table(self) -> None:
        table = self.results_table
        table.setRowCount(len(self.order))
        shown = dict(self.shown_rows())
        for index, key in enumerate(self.order):
            row = shown.get(key)
            name = self.names[key]
            if row is None:
                cells = (str(index), name, "", "", "", "", "", "pending" if self.running() else "not run")
            elif "error" in row:
                cells = (str(index), name, "", "", "", "failed", "", row["error"])
            else:
                front = ("*" if row["pareto"] else "") + (" lat" if row["pareto_latency"] else "")
                cells = (str(index), name, human(row["params"]), human(row["macs"]), f"{row['latency_ms']:.3f}", f"{100 * row['accuracy']:.2f}%",
                         front, row["design"])
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column in (0, 2, 3, 4, 5):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row is not None and "error" in row and column >= 5:
                    item.setForeground(QColor(LOSS))
                item.setToolTip(text)
                table.setItem(index, column, item)
        table.resizeColumnsToContents()

    def _tip(self, x: float, y: float, data: str) -> str:
        row = self.rows.get(data, {})
        return f"{self.names.get(data, data)}\naccuracy {y:.2f} %\nMACs {human(row.get('macs', 0))}, latency {row.get('latency_ms', 0):.3f} ms"

    def _on_points_clicked(self, _item, points, _event=None) -> None:
        if len(points):
            self.open_variant(points[0].data())

    # ---- opening a variant ------------------------------------------------------------------
    def open_variant(self, key: str):
        """Open the design a variant was saved as in a new designer window; returns the window.

        The window stands beside the one the sweep came from, as a window of its own (it asks about its own unsaved
        changes and outlives the other); OPEN_WINDOWS holds it until it is closed, which deletes it."""
        from convstudio.designer.gui.mainwindow import MainWindow

        row = self.rows.get(key)
        if row is None or "error" in row:
            return None
        self.results_table.selectRow(self.order.index(key))
        path = Path(row["design"])
        if path.suffix.lower() != ".json":
            self.status.show_info(f"{row['name']} is an ONNX model ({path}); run it with `convstudio infer`, the designer opens design files")
            return None
        try:
            design = load(path)
        except DesignError as e:
            self.status.show_error(f"error: {e.line()}")
            return None
        origin = self.origin
        autosaver = origin.autosaver
        window = MainWindow(design, recovery_folder=autosaver.folder if autosaver else None, autosave=autosaver is not None)
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        OPEN_WINDOWS.add(window)
        window.destroyed.connect(lambda _obj=None, w=window: OPEN_WINDOWS.discard(w))
        if row.get("accuracy") is not None:
            window.ctl.record_accuracy(row["accuracy"], f"explore: {row['name']}")
        window.resize(origin.size())
        window.show()
        window.show_message(f"variant {row['name']} of {self.ctl.design.name}")
        return window

    def release(self) -> None:
        """Closing kills a sweep still running and waits for it, then the chart goes."""
        self.cancel()
        QApplication.instance().aboutToQuit.disconnect(self.cancel)
        super().release()
