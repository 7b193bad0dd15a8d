"""Compression from the canvas: the right-click menu of strategies and the preview dialog.

The menu lists every strategy of `ir.passes.compress.STRATEGIES`; those whose `applies(graph, node)`
gives a reason for every chosen node are disabled with the reasons as tooltip. The preview shows
before / after / delta of params, MACs, FLOPs and memory (`ir.passes.compare.before_after` on the
strategy's result), with the strategy's parameters editable; Apply replaces the graph in one
undoable step.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
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
    QVBoxLayout,
)

from convstudio.designer.gui.dialogs.common import BeforeAfterTable, StatusLabel, error_line
from convstudio.ir.errors import DesignError
from convstudio.ir.ops.activation import FUSED_ACTIVATION_CHOICES
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.compress.pool import KINDS

CHOICES = {"activation": FUSED_ACTIVATION_CHOICES, "kind": tuple(KINDS)}
PARAM_HELP = {
    "groups": "groups of the grouped convs",
    "alpha": "channel multiplier",
    "reduction": "channel reduction of the bottleneck",
    "width": "channels between the stacked 3x3 convs (0 = the output width)",
    "kernel": "pooling window",
}


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


def compress_selection(window) -> CompressDialog:
    """Tools > Compress: preview a strategy on the selected nodes, or everywhere when nothing is selected."""
    names = list(window.ctl.selection)
    first = None
    for strategy in STRATEGIES.values():
        if not names or applicability(window.ctl.graph, strategy, names)[0]:
            first = strategy.name
            break
    return open_preview(window, first or next(iter(STRATEGIES)), names or None)


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
        self.params_box = QGroupBox("Parameters")
        self.params_form = QFormLayout(self.params_box)
        self.table = BeforeAfterTable()
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
        graph = self.ctl.graph
        try:
            result = self.strategy.apply(graph, self.names, **self.params())
            if result.changed:
                self.table.show_data(before_after(graph, result.graph, self.ctl.convention))
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

    def apply(self) -> None:
        """Replace the graph with the previewed one, as one undoable command."""
        if self.result is None:
            return
        self.ctl.replace_graph(self.result.graph, f"{self.strategy.name} on {_targets_text(self.names)}")
        self.ctl.message.emit(f"applied {self.strategy.name} to {_targets_text(self.names)}")
        self.accept()
