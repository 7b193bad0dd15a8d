"""The inspector: typed editors for the selected node, generated from its op's attribute schema.

Spin boxes for integers and numbers, combo boxes for choices and booleans, line edits for pairs,
padding, integer lists and optional values. Input is checked as it is typed; an invalid value
turns the field red with the reason beside it and is never applied. A valid value becomes one
undoable command.
"""

from __future__ import annotations

import json
import re

from PyQt6.QtGui import QValidator
from PyQt6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from convstudio.designer.cli.common import human, human_bytes
from convstudio.designer.gui.node_item import shapes_text
from convstudio.ir.errors import DesignError
from convstudio.ir.ops.registry import Attr

INVALID_STYLE = "background: #fde0e0; border: 1px solid #c81e1e;"
INT_LIMIT = 2**31 - 1


def format_value(value, kind: str = "") -> str:
    """An attribute value as the inspector shows it: '3, 5' for pairs and lists, JSON for json attributes."""
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(text: str, whole: bool):
    if whole:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"'{text}' is not an integer")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    return int(value) if value.is_integer() and re.fullmatch(r"[+-]?\d+", text) else value


def parse_value(attr: Attr, text: str):
    """Text typed into a line edit -> the attribute's JSON value (None: back to the default)."""
    text = text.strip()
    if not text:
        if attr.required:
            raise ValueError(f"{attr.name} is required")
        return None
    if attr.kind == "str":
        return text
    if attr.kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"{attr.name} must be JSON, e.g. [[64, 7, 7]]") from None
    if attr.kind == "padding" and text in ("same", "valid"):
        return text
    parts = [p for p in re.split(r"[\s,x×()\[\]]+", text) if p]
    whole = attr.kind in ("int", "pair", "padding", "ints")
    values = [_number(p, whole) for p in parts]
    if attr.kind in ("int", "float", "float_or_none"):
        if len(values) != 1:
            raise ValueError(f"{attr.name} takes one number")
        return values[0]
    if attr.kind == "ints":
        return values
    if len(values) == 1:
        return values[0]
    return values


class NumberBox(QDoubleSpinBox):
    """A spin box for real numbers that shows six significant digits (1e-05, 0.1, 1000) instead of fixed
    decimals, so small values such as a BatchNorm eps of 1e-8 are shown and kept as they are."""

    PARTIAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d*)?([eE][+-]?\d*)?")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(15)

    def textFromValue(self, value: float) -> str:
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:
        return float(text)

    def validate(self, text: str, pos: int):
        try:
            value = float(text)
        except ValueError:
            state = QValidator.State.Intermediate if self.PARTIAL.fullmatch(text.strip()) else QValidator.State.Invalid
            return state, text, pos
        inside = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if inside else QValidator.State.Intermediate), text, pos


class Inspector(QWidget):
    """Shows and edits the node selected in the controller."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.node_name: str | None = None
        self.editors: dict[str, QWidget] = {}
        self.reasons: dict[str, QLabel] = {}
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        controller.selection_changed.connect(lambda _names: self.show_node(self._selected()))
        controller.graph_changed.connect(self._on_graph_changed)
        controller.report_changed.connect(lambda _report: self._show_info())
        self.show_node(None)

    def _selected(self) -> str | None:
        return self.ctl.selection[0] if self.ctl.selection else None

    def _on_graph_changed(self, change) -> None:
        name = self._selected()
        if change.reset or name != self.node_name or name is None:
            self.show_node(name)
        elif name in change.touched() or change.renamed:
            self._show_values()
            self._show_info()

    # ---- building the form -----------------------------------------------------------------
    def show_node(self, name: str | None) -> None:
        """Build the form for node `name` (or an empty hint)."""
        self.node_name = name if name in self.ctl.graph.nodes else None
        self.editors = {}
        self.reasons = {}
        page = QWidget()
        form = QFormLayout(page)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c81e1e; font-weight: bold;")
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        if self.node_name is None:
            hint = QLabel("Select a node to see and edit its attributes.")
            hint.setWordWrap(True)
            form.addRow(hint)
            self._show_page(page)
            return
        node = self.ctl.graph.nodes[self.node_name]
        form.addRow("Op", QLabel(f"<b>{node.op}</b> ({node.opdef.category})"))
        name_edit = QLineEdit(node.name)
        name_edit.textEdited.connect(lambda text: self._check("name", self.ctl.rename_error(self.node_name, text.strip())))
        name_edit.editingFinished.connect(self._apply_name)
        self._add_row(form, "name", "Name", name_edit)
        share_edit = QLineEdit(node.share or "")
        share_edit.setPlaceholderText("none")
        share_edit.setToolTip("Nodes in one sharing group use the same parameters")
        share_edit.editingFinished.connect(self._apply_share)
        self._add_row(form, "share", "Share group", share_edit)
        for attr in node.opdef.attrs:
            self._add_row(form, attr.name, attr.name, self._editor_for(attr))
        form.addRow(self.error_label)
        form.addRow(self.info_label)
        self._show_page(page)
        self._show_values()
        self._show_info()

    def _show_page(self, page: QWidget) -> None:
        """Show the new form. The old one is deleted at the event loop's next turn, not now: one of its editors may be
        inside an event (focus leaving a field finishes an edit, and the edit rebuilds the form)."""
        old = self.scroll.takeWidget()
        self.scroll.setWidget(page)
        if old is not None:
            old.deleteLater()

    def _add_row(self, form: QFormLayout, key: str, label: str, editor: QWidget) -> None:
        reason = QLabel()
        reason.setStyleSheet("color: #c81e1e;")
        reason.setWordWrap(True)
        reason.hide()
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(1)
        col.addWidget(editor)
        col.addWidget(reason)
        form.addRow(label, box)
        self.editors[key] = editor
        self.reasons[key] = reason

    def _editor_for(self, attr: Attr) -> QWidget:
        tip = attr.doc or attr.name
        if attr.kind == "int" and not attr.optional:
            editor = QSpinBox()
            editor.setRange(int(attr.min) if attr.min is not None else -INT_LIMIT, int(attr.max) if attr.max is not None else INT_LIMIT)
            editor.setKeyboardTracking(False)
            editor.valueChanged.connect(lambda value, a=attr: self._apply(a, value))
        elif attr.kind == "float" and not attr.optional:
            editor = NumberBox()
            editor.setRange(attr.min if attr.min is not None else -1e12, attr.max if attr.max is not None else 1e12)
            editor.setSingleStep(0.01)
            editor.setKeyboardTracking(False)
            editor.valueChanged.connect(lambda value, a=attr: self._apply(a, value))
        elif attr.kind in ("bool", "choice"):
            editor = QComboBox()
            choices = (True, False) if attr.kind == "bool" else attr.choices
            for choice in choices:
                editor.addItem(format_value(choice), choice)
            editor.activated.connect(lambda index, a=attr, e=editor: self._apply(a, e.itemData(index)))
        else:
            editor = QLineEdit()
            default = "auto" if attr.required or attr.default is None else format_value(attr.default, attr.kind)
            editor.setPlaceholderText(f"default: {default}" if not attr.required else "")
            editor.textEdited.connect(lambda text, a=attr: self._validate_text(a, text))
            editor.returnPressed.connect(lambda a=attr, e=editor: self._apply_text(a, e.text()))
            editor.editingFinished.connect(lambda a=attr, e=editor: self._apply_text(a, e.text()))
        editor.setToolTip(tip)
        return editor

    # ---- values ----------------------------------------------------------------------------
    def _show_values(self) -> None:
        if self.node_name not in self.ctl.graph.nodes:
            return
        node = self.ctl.graph.nodes[self.node_name]
        for key, editor in self.editors.items():
            editor.blockSignals(True)
            if key == "name":
                editor.setText(node.name)
            elif key == "share":
                editor.setText(node.share or "")
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.setValue(node.resolved[key])
            elif isinstance(editor, QComboBox):
                editor.setCurrentIndex(max(0, editor.findData(node.resolved[key])))
            else:
                editor.setText(format_value(node.attrs.get(key), node.opdef.attr(key).kind))
            editor.blockSignals(False)
            self._check(key, None)

    def _show_info(self) -> None:
        if self.node_name not in self.ctl.graph.nodes:
            return
        node = self.ctl.graph.nodes[self.node_name]
        error = node.meta.get("error")
        self.error_label.setText(error or "")
        self.error_label.setVisible(bool(error))
        cost = node.meta.get("cost")
        shapes = node.meta.get("shapes")
        rows = ["<b>Output</b>: " + (shapes_text(shapes, "N×") if shapes else "unknown")]
        if not shapes and not error:
            rows.append("<b>Cost</b>: unknown until the input shapes are known")
        elif cost is not None and not error:
            rows += [
                f"<b>Params</b>: {cost.params:,} ({human(cost.params)})",
                f"<b>MACs</b>: {cost.macs:,} ({human(cost.macs)})",
                f"<b>FLOPs</b> ({self.ctl.convention}): {cost.flops:,}",
                f"<b>Activation</b>: {human_bytes(cost.activation_bytes)}",
            ]
            if cost.formula:
                rows.append(f"<b>Formula</b>: {cost.formula}")
        self.info_label.setText("<br>".join(rows))

    def _check(self, key: str, reason: str | None) -> bool:
        editor = self.editors.get(key)
        label = self.reasons.get(key)
        if editor is None:
            return reason is None
        editor.setStyleSheet(INVALID_STYLE if reason else "")
        label.setText(reason or "")
        label.setVisible(bool(reason))
        return reason is None

    def reason(self, key: str) -> str:
        """The reason shown under field `key` ('' when the field is valid)."""
        return self.reasons[key].text() if key in self.reasons else ""

    # ---- applying --------------------------------------------------------------------------
    def _text_error(self, attr: Attr, text: str) -> tuple[object, str | None]:
        try:
            value = parse_value(attr, text)
            attr.check(value, "") if value is not None else None
        except (ValueError, DesignError) as e:
            return None, e.what if isinstance(e, DesignError) else str(e)
        return value, self.ctl.attr_error(self.node_name, attr.name, value)

    def _validate_text(self, attr: Attr, text: str) -> None:
        self._check(attr.name, self._text_error(attr, text)[1])

    def _apply_text(self, attr: Attr, text: str) -> None:
        if self.node_name is None:
            return
        value, reason = self._text_error(attr, text)
        if self._check(attr.name, reason) and value != self.ctl.graph.nodes[self.node_name].attrs.get(attr.name):
            self.ctl.set_attr(self.node_name, attr.name, value)

    def _apply(self, attr: Attr, value) -> None:
        if self.node_name is None or value == self.ctl.graph.nodes[self.node_name].resolved.get(attr.name):
            self._check(attr.name, None)
            return
        if self._check(attr.name, self.ctl.attr_error(self.node_name, attr.name, value)):
            self.ctl.set_attr(self.node_name, attr.name, value)

    def _apply_name(self) -> None:
        editor = self.editors.get("name")
        if editor is None or self.node_name is None:
            return
        old, new = self.node_name, editor.text().strip()
        if self._check("name", self.ctl.rename_error(old, new)) and new != old:
            self.node_name = new
            self.ctl.rename(old, new)

    def _apply_share(self) -> None:
        editor = self.editors.get("share")
        if editor is not None and self.node_name is not None:
            self._check("share", self.ctl.set_share(self.node_name, editor.text()))
