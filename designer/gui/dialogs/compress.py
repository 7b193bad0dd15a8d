"""Compression from the canvas: the right-click menu of strategies and the preview dialog.

The menu lists every strategy of `ir.passes.compress.STRATEGIES`; those whose `applies(graph, node)`
gives a reason for every chosen node are disabled with the reasons as tooltip. The preview shows
before / after / delta of params, MACs, FLOPs and memory (`ir.passes.compare.before_after` on the
strategy's result) and of the latency the controller's latency model predicts at batch 1, with the strategy's
parameters editable; Apply replaces the graph in one undoable step. A strategy that keeps weights rewrites the
trained weights the designer holds (else those in the design's weights file, which the result then holds); the
accuracy measured on the design as it is now (training, explore) shows, or "not measured".
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
)

from convstudio.backends.latency_model import predict as predict_latency
from convstudio.backends.weights import load_design_weights
from convstudio.designer.cli.latency import change
from convstudio.designer.gui.cost_panel import CALIBRATE_HINT
from convstudio.designer.gui.dialogs.common import GAIN, LOSS, BeforeAfterTable, StatusLabel, error_line
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.ops.activation import FUSED_ACTIVATION_CHOICES
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.compress.lowrank import METHODS
from convstudio.ir.passes.compress.pool import KINDS
from convstudio.ir.passes.compress.prune import IMPORTANCE

CHOICES = {"activation": FUSED_ACTIVATION_CHOICES, "kind": tuple(KINDS), "importance": IMPORTANCE, "method": METHODS}
PARAM_HELP = {
    "groups": "groups of the grouped convs",
    "alpha": "channel multiplier",
    "reduction": "channel reduction of the bottleneck",
    "width": "channels between the stacked 3x3 convs (0 = the output width)",
    "kernel": "pooling window",
    "ratio": "share of each channel group removed",
    "importance": "which channels stay: l1 = largest L1 norm of their filters, bn = largest BatchNorm scale",
    "method": "spatial = kxk as kx1 then 1xk; tucker = 1x1, kxk, 1x1",
    "rank": "rank kept (0 = the smallest that keeps the energy below)",
    "energy": "share of the squared singular values kept when rank is 0",
}


def accuracy_text(ctl) -> str:
    """The accuracy measured on the design as it is now, or 'not measured'."""
    measured = ctl.measured_accuracy()
    if measured is None:
        return "not measured (train the design, or explore compression variants)"
    accuracy, source = measured
    return f"{100 * accuracy:.2f} % ({source}); after compression: not measured"


LATENCY_ROW = "pred. latency (batch 1)"


def add_latency_row(table: BeforeAfterTable) -> int:
    """A row under the counts for the predicted latency; returns its index."""
    row = table.rowCount()
    table.insertRow(row)
    table.setVerticalHeaderItem(row, QTableWidgetItem(LATENCY_ROW))
    return row


def applicability(graph, strategy, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the nodes `strategy` applies to, {node: reason} for the others), with its default parameters."""
    ok, reasons = [], {}
    for name in names:
        try:
            reason = strategy.applies(graph, name, **strategy.params)
        except DesignError as e:
            reason = e.what
        except Exception as e:  # a strategy failing on this node shows as not applying, with why
            reason = error_line(e).removeprefix("error: ")
        if reason:
            reasons[name] = reason
        else:
            ok.append(name)
    return ok, reasons


def _targets_text(names: list[str] | None) -> str:
    if not names:
        return "everywhere it applies"
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def context_menu(window, names: list[str]) -> QMenu:
    """The right-click menu for `names`: one entry per strategy (disabled ones say why) and Fuse preview."""
    graph = window.ctl.graph
    menu = QMenu(window)
    menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    menu.setToolTipsVisible(True)
    header = menu.addAction(f"Compress {_targets_text(names)}")
    header.setEnabled(False)
    for strategy in STRATEGIES.values():
        ok, reasons = applicability(graph, strategy, names)
        action = menu.addAction(f"{strategy.name}...")
        action.setObjectName(f"strategy_{strategy.name}")
        if ok:
            tip = strategy.summary
            if reasons:
                tip += "\nskips " + "; ".join(reasons.values())
            action.setToolTip(tip)
            action.triggered.connect(lambda _checked=False, s=strategy.name, n=ok: open_preview(window, s, n))
        else:
            action.setEnabled(False)
            action.setToolTip("\n".join(reasons.values()))
    menu.addSeparator()
    fuse = menu.addAction("Fuse preview...")
    fuse.triggered.connect(lambda _checked=False: window.fuse_preview())
    return menu


def open_preview(window, strategy: str, names: list[str] | None) -> CompressDialog:
    dialog = CompressDialog(window, strategy, names)
    dialog.show()
    return dialog


def first_applying(graph, names: list[str]) -> str | None:
    """The first strategy that applies to one of `names` at least, or None."""
    return next((s.name for s in STRATEGIES.values() if applicability(graph, s, names)[0]), None)


def compress_selection(window) -> CompressDialog:
    """Tools > Compress: preview the first strategy that applies to the selected nodes; with nothing selected, or
    when none applies to them, the first that applies somewhere in the design, everywhere it applies."""
    graph, names = window.ctl.graph, list(window.ctl.selection)
    chosen = first_applying(graph, names) if names else None
    if chosen is not None:
        return open_preview(window, chosen, names)
    everywhere = first_applying(graph, list(graph.nodes))
    if names and everywhere is not None:
        window.show_message(f"no strategy applies to {_targets_text(names)}; showing {everywhere} everywhere it applies")
    return open_preview(window, everywhere or next(iter(STRATEGIES)), None)


class CompressDialog(QDialog):
    """Preview of one strategy on chosen nodes (or everywhere); Apply pushes one ReplaceGraph command."""

    def __init__(self, window, strategy: str, names: list[str] | None):
        super().__init__(window)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setWindowTitle("Compress")
        self.ctl = window.ctl
        self.names = list(names) if names else None
        self.result = None
        self.editors: dict = {}
        self.weights_read = False
        self.weighted_graph = None  # the design's graph with the weights read from its weights file
        self.weights_source = ""

        self.strategy_box = QComboBox()
        for index, s in enumerate(STRATEGIES.values()):
            self.strategy_box.addItem(s.name)
            if self.names:
                ok, reasons = applicability(self.ctl.graph, s, self.names)
                if not ok:
                    self.strategy_box.model().item(index).setEnabled(False)
                    self.strategy_box.setItemData(index, "\n".join(reasons.values()), Qt.ItemDataRole.ToolTipRole)
                    continue
            self.strategy_box.setItemData(index, s.summary, Qt.ItemDataRole.ToolTipRole)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.weights_label = QLabel()
        self.weights_label.setWordWrap(True)
        self.accuracy_label = QLabel(accuracy_text(self.ctl))
        self.accuracy_label.setWordWrap(True)
        self.params_box = QGroupBox("Parameters")
        self.params_form = QFormLayout(self.params_box)
        self.table = BeforeAfterTable()
        self.latency_row = add_latency_row(self.table)
        self.latency_before: float | None = None  # predicted ms of the design (modal: it does not change meanwhile)
        self.latency: dict | None = None  # the predicted change shown: before, after, delta, pct
        self.report = QListWidget()
        self.report.setMinimumHeight(70)
        self.status = StatusLabel()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.clicked.connect(self.apply)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Nodes", QLabel(_targets_text(self.names)))
        form.addRow("Strategy", self.strategy_box)
        form.addRow("Weights", self.weights_label)
        form.addRow("Accuracy", self.accuracy_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.params_box)
        layout.addWidget(QLabel(f"Cost before and after (convention {self.ctl.convention}, per sample)"))
        layout.addWidget(self.table)
        layout.addWidget(QLabel("What the strategy did"))
        layout.addWidget(self.report, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(560, 600)

        self.strategy_box.setCurrentText(strategy)
        self.strategy_box.currentTextChanged.connect(self._on_strategy)
        self._on_strategy(strategy)

    @property
    def strategy(self):
        return STRATEGIES[self.strategy_box.currentText()]

    def _on_strategy(self, _name: str) -> None:
        strategy = self.strategy
        self.summary.setText(strategy.summary)
        self.weights_label.setText(self.weights_text())
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.editors = {key: self._editor(key, default) for key, default in strategy.params.items()}
        for key, editor in self.editors.items():
            self.params_form.addRow(key, editor)
        self.params_box.setVisible(bool(self.editors))
        self.preview()

    def _editor(self, key: str, default):
        if isinstance(default, bool):
            editor = QCheckBox()
            editor.setChecked(default)
            editor.toggled.connect(self.preview)
        elif isinstance(default, int):
            editor = QSpinBox()
            editor.setRange(0, 4096)
            editor.setValue(default)
            editor.valueChanged.connect(self.preview)
        elif isinstance(default, float):
            editor = QDoubleSpinBox()
            editor.setRange(0.01, 4.0)
            editor.setSingleStep(0.05)
            editor.setDecimals(3)
            editor.setValue(default)
            editor.valueChanged.connect(self.preview)
        elif key in CHOICES:
            editor = QComboBox()
            editor.addItems(CHOICES[key])
            editor.setCurrentText(default)
            editor.currentTextChanged.connect(self.preview)
        else:
            editor = QLineEdit(default)
            editor.editingFinished.connect(self.preview)
        editor.setToolTip(PARAM_HELP.get(key, key))
        return editor

    def source_graph(self):
        """The graph the strategy rewrites: the design's; for a strategy that keeps weights, with the trained weights read
        from the design's weights file when the designer holds none (the result then holds them too)."""
        graph = self.ctl.graph
        if not self.strategy.keeps_weights or any(node.params for node in graph.nodes.values()):
            return graph
        if not self.weights_read:
            self.weights_read = True
            design = self.ctl.design
            copy = Design(graph.copy(), dict(design.training), design.weights, design.path)
            try:
                path = load_design_weights(copy)
            except DesignError as e:
                self.weights_source = f"not read: {e.line()}"
            else:
                self.weighted_graph = copy.graph if path is not None else None
                self.weights_source = f"read from {path.name}" if path is not None else ""
        return self.weighted_graph or graph

    def weights_text(self) -> str:
        """What happens to the trained weights under the chosen strategy."""
        if not self.strategy.keeps_weights:
            return "the layers it rewrites start from fresh weights; the others keep theirs"
        graph = self.source_graph()
        if any(node.params for node in graph.nodes.values()):
            where = self.weights_source if graph is self.weighted_graph else "held by the designer"
            return f"kept: rewritten layers start from the trained ones ({where})"
        if self.weights_source:
            return f"the design's weights file was {self.weights_source}; the result has no weights"
        return "the design has no trained weights yet, so the result has none (train it first to carry them)"

    def params(self) -> dict:
        """The parameter values the editors hold."""
        out = {}
        for key, editor in self.editors.items():
            if isinstance(editor, QCheckBox):
                out[key] = editor.isChecked()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                out[key] = editor.value()
            elif isinstance(editor, QComboBox):
                out[key] = editor.currentText()
            else:
                out[key] = editor.text()
        return out

    def set_param(self, key: str, value) -> None:
        """Set one parameter editor (the preview follows)."""
        editor = self.editors[key]
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            editor.setValue(value)
        elif isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        else:
            editor.setText(str(value))
            self.preview()

    def preview(self, *_args) -> None:
        """Run the strategy on a copy of the graph and show what it would change."""
        self.result = None
        self.apply_button.setEnabled(False)
        self.report.clear()
        self.table.clear_data()
        graph = self.source_graph()
        try:
            result = self.strategy.apply(graph, self.names, **self.params())
            if result.changed:
                self.table.show_data(before_after(graph, result.graph, self.ctl.convention))
                self.show_latency(graph, result.graph)
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return
        self.report.addItems(result.report)
        if not result.changed:
            self.status.show_error(f"{self.strategy.name} changes nothing here")
            return
        self.result = result
        changed = result.data.get("changed", [])
        nodes = f"{len(changed)} node{'s' if len(changed) != 1 else ''}"
        self.status.show_info(f"{nodes} added or rewritten; Apply to keep it (undo with Ctrl+Z)")
        self.apply_button.setEnabled(True)

    def show_latency(self, before, after) -> None:
        """Fill the latency row with the model's prediction for both graphs, or say how to get a model."""
        model = self.ctl.latency_model
        self.latency = None
        if model is None:
            item = QTableWidgetItem("no latency model")
            item.setToolTip(CALIBRATE_HINT)
            self.table.setItem(self.latency_row, 0, item)
            return
        if self.latency_before is None:
            self.latency_before = predict_latency(before, 1, model)[1]
        self.latency = c = change(self.latency_before, predict_latency(after, 1, model)[1])
        cells = (f"{c['before']:.3f} ms", f"{c['after']:.3f} ms", f"{c['delta']:+.3f} ms", "" if c["pct"] is None else f"{c['pct']:+.1f}%")
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setToolTip(f"predicted by the latency model for {model.runtime} on {model.provider}, without running either design")
            if col >= 2 and c["delta"]:
                item.setForeground(QColor(GAIN if c["delta"] < 0 else LOSS))
            self.table.setItem(self.latency_row, col, item)

    def apply(self) -> None:
        """Replace the graph with the previewed one, as one undoable command."""
        if self.result is None:
            return
        self.ctl.replace_graph(self.result.graph, f"{self.strategy.name} on {_targets_text(self.names)}")
        self.ctl.message.emit(f"applied {self.strategy.name} to {_targets_text(self.names)}")
        self.accept()
