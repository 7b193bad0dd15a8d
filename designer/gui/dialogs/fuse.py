"""Fuse preview: the fused graph's cost next to the current one, the fused and declined patterns.

Fusion is `ir.passes.fuse.fuse` on the current graph (a pure pass); Apply replaces the graph in one
undoable step.
"""

from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QListWidget, QSplitter, QVBoxLayout, QWidget

from convstudio.designer.gui.dialogs.common import BeforeAfterTable, StatusLabel, error_line
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.fuse import fuse


def fuse_preview(window) -> FuseDialog:
    dialog = FuseDialog(window)
    dialog.show()
    return dialog


class FuseDialog(QDialog):
    """Current vs fused cost, what fused and what was declined (with the reason)."""

    def __init__(self, window):
        super().__init__(window)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setWindowTitle("Fuse preview")
        self.ctl = window.ctl
        self.result = None
        self.table = BeforeAfterTable(("current", "fused", "delta", "delta %"))
        self.fused_list = QListWidget()
        self.declined_list = QListWidget()
        self.status = StatusLabel()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.clicked.connect(self.apply)
        self.buttons.rejected.connect(self.reject)

        self.fused_title = QLabel("Fused")
        self.declined_title = QLabel("Declined")
        lists = QSplitter(Qt.Orientation.Vertical)
        for title, widget in ((self.fused_title, self.fused_list), (self.declined_title, self.declined_list)):
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.addWidget(title)
            column.addWidget(widget)
            lists.addWidget(box)
        layout = QVBoxLayout(self)
        scope = f"convention {self.ctl.convention}, per sample"
        layout.addWidget(QLabel(f"Conv / linear + BatchNorm (+ activation) folded for inference ({scope})"))
        layout.addWidget(self.table)
        layout.addWidget(lists, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(640, 620)
        self.preview()

    def preview(self) -> None:
        """Fuse a copy of the current graph and show both costs and the pattern lists."""
        self.result = None
        self.apply_button.setEnabled(False)
        graph = self.ctl.graph
        try:
            result = fuse(graph)
            data = before_after(graph, result.graph, self.ctl.convention)
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return
        self.table.show_data(data)
        fused, declined = result.data["fused"], result.data["declined"]
        self.fused_title.setText(f"Fused ({len(fused)})")
        self.declined_title.setText(f"Declined ({len(declined)})")
        self.fused_list.clear()
        self.fused_list.addItems([f"{' + '.join(f['nodes'])} -> {f['into']}   ({f['pattern']})" for f in fused])
        self.declined_list.clear()
        for d in declined:
            self.declined_list.addItem(f"{' + '.join(d['nodes'])}: {d['reason']}")
            self.declined_list.item(self.declined_list.count() - 1).setToolTip(d["reason"])
        if not result.changed:
            self.status.show_info("nothing to fuse in this design")
            return
        self.result = result
        patterns = f"{len(fused)} pattern{'s' if len(fused) != 1 else ''}"
        self.status.show_info(f"{patterns} fuse; Apply to keep the fused graph (undo with Ctrl+Z)")
        self.apply_button.setEnabled(True)

    def apply(self) -> None:
        """Replace the graph with the fused one, as one undoable command."""
        if self.result is None:
            return
        count = len(self.result.data["fused"])
        self.ctl.replace_graph(self.result.graph, f"Fuse {count} pattern{'s' if count != 1 else ''}")
        self.ctl.message.emit(f"fused {count} pattern{'s' if count != 1 else ''}")
        self.accept()
