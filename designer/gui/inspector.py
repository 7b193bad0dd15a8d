"""The inspector: typed editors for the selected node, generated from its op's attribute schema.

Spin boxes for integers and numbers, combo boxes for choices and booleans, line edits for pairs,
padding, integer lists and optional values. Input is checked as it is typed; an invalid value
turns the field red with the reason beside it and is never applied. A valid value becomes one
undoable command.
"""

from __future__ import annotations

import json
import re

from PyQt6.QtCore import QEvent, Qt
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
from convstudio.designer.gui import theme
from convstudio.designer.gui.messages import for_people, unknown_shape_text, upstream_errors
from convstudio.designer.gui.node_item import scope, shapes_text
from convstudio.ir.errors import DesignError
from convstudio.ir.ops.registry import Attr

INVALID_STYLE = "background: #fde0e0; border: 1px solid #c81e1e; color: #1a1a1a;"  # dark text on the pink, in a dark theme too
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


def shared_attrs(nodes: list) -> list[Attr]:
    """The attributes every node in `nodes` has, alike in kind and choices (in the first node's order)."""
    first, *rest = nodes
    schemas = [{a.name: (a.kind, a.choices) for a in node.opdef.attrs} for node in rest]
    return [attr for attr in first.opdef.attrs if all(schema.get(attr.name) == (attr.kind, attr.choices) for schema in schemas)]


class Inspector(QWidget):
    """Shows and edits the node selected in the controller; with several selected, the attributes they share."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.node_name: str | None = None
        self.names: list[str] = []  # the nodes the attribute editors change (one, or a multi-selection)
        self.editors: dict[str, QWidget] = {}
        self.reasons: dict[str, QLabel] = {}
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        controller.selection_changed.connect(lambda _names: self.show_selection())
        controller.graph_changed.connect(self._on_graph_changed)
        controller.report_changed.connect(lambda _report: self._show_info())
        self.show_node(None)

    def _selected(self) -> str | None:
        return self.ctl.selection[0] if self.ctl.selection else None

    def show_selection(self) -> None:
        """The form for what is selected: the design (nothing), one node, or what several nodes share."""
        selected = [n for n in self.ctl.selection if n in self.ctl.graph.nodes]
        if len(selected) > 1:
            self.show_many(selected)
        else:
            self.show_node(selected[0] if selected else None)

    def _on_graph_changed(self, change) -> None:
        selected = [n for n in self.ctl.selection if n in self.ctl.graph.nodes]
        if len(selected) > 1 or len(self.names) > 1:
            if change.reset or selected != self.names:
                self.show_selection()
            elif set(selected) & change.touched():
                self._show_values()
                self._show_info()
            return
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
        self.names = [self.node_name] if self.node_name else []
        self.editors = {}
        self.reasons = {}
        page = QWidget()
        form = QFormLayout(page)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {theme.active().error_text.name()}; font-weight: bold;")
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        if self.node_name is None:
            design_name = QLineEdit(self.ctl.design.name)
            design_name.setToolTip("The design's name: the window title, and the file name Save As proposes")
            design_name.textEdited.connect(lambda text: self._check("design_name", self.ctl.design_name_error(text.strip())))
            design_name.editingFinished.connect(self._apply_design_name)
            self._add_row(form, "design_name", "Design", design_name)
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

    def show_many(self, names: list[str]) -> None:
        """The form for several nodes: the attributes they all have; a change goes to all of them in one undoable step."""
        self.node_name = None
        self.names = list(names)
        self.editors = {}
        self.reasons = {}
        nodes = [self.ctl.graph.nodes[n] for n in names]
        page = QWidget()
        form = QFormLayout(page)
        self.error_label = QLabel()
        self.error_label.hide()
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        ops = sorted({node.op for node in nodes})
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        header = QLabel(f"<b>{len(names)} nodes</b> ({', '.join(ops)}): {shown}")
        header.setWordWrap(True)
        form.addRow(header)
        attrs = shared_attrs(nodes)
        for attr in attrs:
            self._add_row(form, attr.name, attr.name, self._editor_for(attr))
        hint = QLabel("A change here applies to every selected node (one undo step)." if attrs
                      else "The selected nodes share no attribute; select one to edit it.")
        hint.setWordWrap(True)
        form.addRow(hint)
        self.mixed_label = QLabel()
        self.mixed_label.setWordWrap(True)
        form.addRow(self.mixed_label)
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
        reason.setStyleSheet(f"color: {theme.active().error_text.name()};")
        reason.setWordWrap(True)
        reason.hide()
        box = QWidget()
        col = QVBoxLayout(box)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(1)
        col.addWidget(editor)
        col.addWidget(reason)
        form.addRow(label, box)
        editor.installEventFilter(self)
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
        for key in self.editors:
            self.revert(key)

    def revert(self, key: str) -> None:
        """Show field `key` as the design has it, dropping what was typed there and its complaint (Escape)."""
        editor = self.editors.get(key)
        if editor is None:
            return
        if key == "design_name":
            editor.setText(self.ctl.design.name)
            self._check(key, None)
            return
        name = self.node_name or (self.names[0] if self.names else None)
        if name not in self.ctl.graph.nodes:
            return
        node = self.ctl.graph.nodes[name]
        editor.blockSignals(True)
        if key == "name":
            editor.setText(node.name)
        elif key == "share":
            editor.setText(node.share or "")
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            editor.setValue(node.resolved[key])
            editor.lineEdit().setText(editor.textFromValue(node.resolved[key]))
        elif isinstance(editor, QComboBox):
            editor.setCurrentIndex(max(0, editor.findData(node.resolved[key])))
        elif len(self.names) > 1 and len({repr(self.ctl.graph.nodes[n].attrs.get(key)) for n in self.names}) > 1:
            nodes = [self.ctl.graph.nodes[n] for n in self.names]
            if len({repr(other.resolved.get(key)) for other in nodes}) > 1:
                editor.setText("")  # left empty, the field changes nothing
                editor.setPlaceholderText("differs between the selected nodes")
            else:
                editor.setText(format_value(node.resolved.get(key), node.opdef.attr(key).kind))
        else:
            editor.setText(format_value(node.attrs.get(key), node.opdef.attr(key).kind))
        editor.blockSignals(False)
        self._check(key, None)

    def eventFilter(self, watched, event) -> bool:
        """Escape in a field puts back the design's value."""
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape:
            key = next((k for k, editor in self.editors.items() if editor is watched), None)
            if key is not None:
                self.revert(key)
                return True
        return super().eventFilter(watched, event)

    def _show_info(self) -> None:
        if len(self.names) > 1:
            self._show_many_info()
            return
        if self.node_name not in self.ctl.graph.nodes:
            return
        node = self.ctl.graph.nodes[self.node_name]
        error = for_people(node.meta.get("error"))
        shown = error or for_people(node.meta.get("share_error"))  # a member that cannot use its group's parameters
        self.error_label.setText(shown or "")
        self.error_label.setVisible(bool(shown))
        cost = node.meta.get("cost")
        shapes = node.meta.get("shapes")
        batch = self.ctl.batch
        n, each = batch or 1, scope(batch)
        if shapes:
            rows = [f"<b>Output</b> ({each}): " + shapes_text(shapes, f"{batch}×" if batch else "N×")]
        elif error:
            rows = ["<b>Output</b>: unknown"]
        else:
            rows = ["<b>Output</b>: " + unknown_shape_text(upstream_errors(self.ctl.graph, self.node_name, {}))]
        if not shapes and not error:
            rows.append("<b>Cost</b>: unknown until the input shapes are known")
        elif cost is not None and not error:
            rows += [
                f"<b>Params</b>: {cost.params:,} ({human(cost.params)})",
                f"<b>MACs</b> ({each}): {cost.macs * n:,} ({human(cost.macs * n)})",
                f"<b>FLOPs</b> ({self.ctl.convention}, {each}): {cost.flops * n:,}",
                f"<b>Activation</b> ({each}): {human_bytes(cost.activation_bytes * n)}",
            ]
            if cost.formula:
                rows.append(f"<b>Formula</b> (per sample): {cost.formula}")
        self.info_label.setText("<br>".join(rows))

    def _show_many_info(self) -> None:
        """The selected nodes' summed cost, and which shared attributes differ between them."""
        nodes = [self.ctl.graph.nodes[n] for n in self.names if n in self.ctl.graph.nodes]
        costs = [node.meta.get("cost") for node in nodes if node.meta.get("shapes") and not node.meta.get("error")]
        n, each = self.ctl.batch or 1, scope(self.ctl.batch)
        params = sum(c.params for c in costs if c is not None)
        macs = sum(c.macs for c in costs if c is not None) * n
        self.info_label.setText(f"<b>Params</b>: {params:,} ({human(params)})<br><b>MACs</b> ({each}): {macs:,} ({human(macs)})")
        mixed = [key for key in self.editors if len({repr(node.resolved.get(key)) for node in nodes}) > 1]
        self.mixed_label.setText(f"Differ between them: {', '.join(mixed)} (a field left as it is changes nothing)" if mixed else "")

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
            return None, for_people(e.what) if isinstance(e, DesignError) else str(e)
        return value, self._attr_error(attr.name, value)

    def _attr_error(self, key: str, value) -> str | None:
        """Why `value` does not suit attribute `key` of the node (of one of the nodes, named) being edited, or None."""
        if len(self.names) == 1:
            return for_people(self.ctl.attr_error(self.names[0], key, value))
        for name in self.names:
            reason = self.ctl.attr_error(name, key, value)
            if reason:
                return f"{name}: {for_people(reason)}"
        return None

    def _apply_to_many(self, attr: Attr, value) -> None:
        if self._check(attr.name, self._attr_error(attr.name, value)):
            self._check(attr.name, for_people(self.ctl.set_attr_of_many(self.names, attr.name, value)))

    def _validate_text(self, attr: Attr, text: str) -> None:
        self._check(attr.name, self._text_error(attr, text)[1])

    def _apply_text(self, attr: Attr, text: str) -> None:
        if len(self.names) > 1:
            value, reason = self._text_error(attr, text)
            nodes = [self.ctl.graph.nodes[n] for n in self.names]
            if not self._check(attr.name, reason) or not text.strip():  # an empty field of differing values changes nothing
                return
            if all(attr.normalize(value) == node.resolved.get(attr.name) for node in nodes):
                return  # what they all compute with already
            self._apply_to_many(attr, value)
            return
        if self.node_name is None:
            return
        value, reason = self._text_error(attr, text)
        if self._check(attr.name, reason) and value != self.ctl.graph.nodes[self.node_name].attrs.get(attr.name):
            self.ctl.set_attr(self.node_name, attr.name, value)

    def _apply(self, attr: Attr, value) -> None:
        if len(self.names) > 1:
            self._apply_to_many(attr, value)
            return
        if self.node_name is None or value == self.ctl.graph.nodes[self.node_name].resolved.get(attr.name):
            self._check(attr.name, None)
            return
        if self._check(attr.name, for_people(self.ctl.attr_error(self.node_name, attr.name, value))):
            self.ctl.set_attr(self.node_name, attr.name, value)

    def _apply_name(self) -> None:
        editor = self.editors.get("name")
        if editor is None or self.node_name is None:
            return
        old, new = self.node_name, editor.text().strip()
        if self._check("name", self.ctl.rename_error(old, new)) and new != old:
            self.node_name = new
            self.ctl.rename(old, new)

    def _apply_design_name(self) -> None:
        editor = self.editors.get("design_name")
        if editor is not None and self.node_name is None:
            self._check("design_name", self.ctl.rename_design(editor.text()))

    def _apply_share(self) -> None:
        editor = self.editors.get("share")
        if editor is not None and self.node_name is not None:
            self._check("share", self.ctl.set_share(self.node_name, editor.text()))
