"""The main window: palette (left), canvas (centre), inspector (right), cost panel (bottom),
menus and toolbar, status bar, the recovery banner and the prompt for unsaved changes."""

from __future__ import annotations

import importlib
from pathlib import Path

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from convstudio.designer.gui.canvas import GraphScene, GraphView
from convstudio.designer.gui.controller import Controller
from convstudio.designer.gui.cost_panel import CostPanel
from convstudio.designer.gui.inspector import Inspector
from convstudio.designer.gui.palette import Palette
from convstudio.designer.gui.recovery import Autosaver, pending_recovery
from convstudio.ir.design import Design
from convstudio.ir.templates import TEMPLATES

DESIGN_FILTER = "ConvStudio designs (*.json);;All files (*)"
DIALOG_ACTIONS = {
    "compress_selection": ("compress", "Compress"),
    "fuse_preview": ("fuse", "Fuse preview"),
    "compare": ("compare", "Compare"),
    "export_onnx": ("export", "Export ONNX"),
    "run_inference": ("export", "Run inference"),
    "train": ("train", "Train"),
}


class RecoveryBanner(QFrame):
    """A non-blocking bar above the canvas offering to recover an autosaved copy."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setStyleSheet("RecoveryBanner { background: #fff4cc; border-bottom: 1px solid #d9b64c; }")
        self.label = QLabel()
        self.recover_button = QPushButton("Recover")
        self.discard_button = QPushButton("Discard")
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        row.addWidget(self.label, 1)
        row.addWidget(self.recover_button)
        row.addWidget(self.discard_button)
        self.hide()


class MainWindow(QMainWindow):
    """The designer window around one Controller."""

    def __init__(self, design: Design | None = None, recovery_folder: Path | None = None, autosave_ms: int = 60_000, autosave: bool = True):
        super().__init__()
        self.is_shut_down = False
        self.ctl = Controller(design, self)
        self.ctl.commit()
        self.scene = GraphScene(self.ctl, self)
        self.view = GraphView(self.scene)
        self.palette = Palette()
        self.inspector = Inspector(self.ctl)
        self.cost_panel = CostPanel(self.ctl)
        self.banner = RecoveryBanner()
        self.recovery_file: Path | None = None
        self.node_menu = None
        self.close_prompt = self._ask_save
        self.autosaver = Autosaver(self.ctl, recovery_folder, autosave_ms, self) if autosave else None

        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.banner)
        column.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self._dock("Palette", self.palette, Qt.DockWidgetArea.LeftDockWidgetArea, 220)
        self._dock("Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea, 300)
        self._dock("Cost", self.cost_panel, Qt.DockWidgetArea.BottomDockWidgetArea, 260)
        self._build_actions()
        self.statusBar().showMessage("Ready")

        self.ctl.message.connect(self.show_message)
        self.ctl.modified_changed.connect(self._update_title)
        self.ctl.design_replaced.connect(self._on_design_replaced)
        self.cost_panel.node_activated.connect(self.view.centre_on_node)
        self.zoom_label = QLabel()
        self.statusBar().addPermanentWidget(self.zoom_label)
        self.view.zoom_changed.connect(self._show_zoom)
        if self.autosaver is not None:
            self.autosaver.saved.connect(self._on_autosaved)
            self.autosaver.failed.connect(self.show_message)
        self.view.node_menu_requested.connect(self.show_node_menu)
        self.banner.recover_button.clicked.connect(self.recover)
        self.banner.discard_button.clicked.connect(self.discard_recovery)
        self._update_title()
        if self.autosaver is not None:
            self._offer_recovery()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, size: int) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        orientation = Qt.Orientation.Vertical if area == Qt.DockWidgetArea.BottomDockWidgetArea else Qt.Orientation.Horizontal
        self.resizeDocks([dock], [size], orientation)
        return dock

    # ---- actions ---------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcuts=(), tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcuts:
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(tip or text)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        stack = self.ctl.undo_stack
        self.undo_action = stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Y"), QKeySequence("Ctrl+Shift+Z")])
        self.addActions([self.undo_action, self.redo_action])
        self.open_action = self._action("Open...", self.open_file, ["Ctrl+O"])
        self.save_action = self._action("Save", self.save_file, ["Ctrl+S"])
        self.save_as_action = self._action("Save As...", self.save_as, ["Ctrl+Shift+S"])
        self.layout_action = self._action("Auto-layout", self.ctl.auto_layout, ["Ctrl+L"], "Lay the graph out in layers")
        self.fit_action = self._action("Fit", self.view.fit_all, ["F"], "Show the whole graph")
        self.delete_action = self._action("Delete", self.delete_selection, ["Delete", "Backspace"])
        self.copy_action = self._action("Copy", self.copy_selection, ["Ctrl+C"])
        self.paste_action = self._action("Paste", self.paste, ["Ctrl+V"])
        self.select_all_action = self._action("Select all", lambda: self.ctl.select(list(self.ctl.graph.nodes)), ["Ctrl+A"])
        self.dialog_actions = {name: self._action(label, getattr(self, name)) for name, (_, label) in DIALOG_ACTIONS.items()}

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        self.new_menu = file_menu.addMenu("New from template")
        self.new_menu.setToolTipsVisible(True)
        for name in sorted(TEMPLATES):
            action = self.new_menu.addAction(name)
            action.setToolTip(TEMPLATES[name].description)
            action.triggered.connect(lambda _checked=False, n=name: self.new_from_template(n))
        file_menu.addActions([self.open_action, self.save_action, self.save_as_action])
        file_menu.addSeparator()
        file_menu.addActions([self.dialog_actions["export_onnx"], self.dialog_actions["run_inference"]])
        file_menu.addSeparator()
        self.quit_action = self._action("Quit", self.close, ["Ctrl+Q"])
        file_menu.addAction(self.quit_action)
        edit_menu = menus.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.copy_action, self.paste_action, self.delete_action, self.select_all_action])
        view_menu = menus.addMenu("&View")
        view_menu.addActions([self.layout_action, self.fit_action])
        tools = menus.addMenu("&Tools")
        tools.addActions([self.dialog_actions[n] for n in ("fuse_preview", "compress_selection", "compare", "train")])

        bar = self.addToolBar("Main")
        bar.setObjectName("Main")
        new_button = QToolButton()
        new_button.setText("New")
        new_button.setToolTip("New from template")
        new_button.setMenu(self.new_menu)
        new_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        bar.addWidget(new_button)
        bar.addActions([self.open_action, self.save_action, self.undo_action, self.redo_action, self.layout_action, self.fit_action])
        bar.addSeparator()
        bar.addActions([self.dialog_actions[n] for n in DIALOG_ACTIONS])

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 10_000)

    def _show_zoom(self, zoom: float) -> None:
        self.zoom_label.setText(f"Zoom {zoom:.0%}")

    def _on_autosaved(self, path: str) -> None:
        self.show_message(f"Autosaved a recovery copy to {path}")

    def _update_title(self, *_args) -> None:
        design = self.ctl.design
        where = str(design.path) if design.path else "unsaved"
        self.setWindowTitle(f"{design.name} — {where}[*] — ConvStudio")
        self.setWindowModified(self.ctl.modified)

    def _on_design_replaced(self) -> None:
        self._update_title()
        self.view.show_readable()

    # ---- files -----------------------------------------------------------------------------
    def _may_discard_changes(self) -> bool:
        if not self.ctl.modified:
            return True
        choice = self.close_prompt()
        if choice == "save":
            return self.save_file()
        return choice == "discard"

    def _ask_save(self) -> str:
        """Ask what to do with unsaved changes: 'save', 'discard' or 'cancel'."""
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self,
            "Unsaved changes",
            f"Save the changes to {self.ctl.design.name}?",
            buttons.Save | buttons.Discard | buttons.Cancel,
            buttons.Save,
        )
        return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")

    def new_from_template(self, name: str) -> None:
        if self._may_discard_changes():
            error = self.ctl.new_from_template(name)
            self.show_message(error or f"New design from template {name}")

    def open_file(self, path: str | Path | None = None) -> bool:
        """Open a design; a file that fails to load leaves the current design untouched."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open design", "", DESIGN_FILTER)
            if not path:
                return False
        if not self._may_discard_changes():
            return False
        self._discard_recovery_file()
        error = self.ctl.open(path)
        if error:
            self.show_message(f"error: {error}")
            return False
        self.show_message(f"Opened {path}")
        self._offer_recovery()
        return True

    def save_file(self) -> bool:
        if self.ctl.design.path is None:
            return self.save_as()
        return self._save_to(self.ctl.design.path)

    def save_as(self, path: str | Path | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save design", f"{self.ctl.design.name}.json", DESIGN_FILTER)
            if not path:
                return False
        return self._save_to(Path(path))

    def _save_to(self, path: Path) -> bool:
        old_path = self.ctl.design.path
        error = self.ctl.save(path)
        if error:
            self.show_message(f"error: {error}")
            return False
        if self.autosaver is not None:
            self.autosaver.discard(old_path)
            self.autosaver.discard(Path(path))
        self._update_title()
        self.show_message(f"Saved {path}")
        return True

    def closeEvent(self, event) -> None:
        focus = self.focusWidget()
        if focus is not None:
            focus.clearFocus()  # a field being edited applies its value now, before the unsaved-changes question
        if not self._may_discard_changes():
            event.ignore()
            return
        self._discard_recovery_file()
        self.shut_down()
        event.accept()

    def shut_down(self) -> None:
        """End what would outlive the window: its dialogs (a run is waited for) and menus, the autosave timer,
        the cost chart and the controller's watch on the graph. Whoever owns the window deletes it."""
        if self.is_shut_down:
            return
        self.is_shut_down = True
        for child in self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
            if child.isWindow():  # a dialog, the node menu: closed even when never shown, so each shuts down
                child.close()
        if self.autosaver is not None:
            self.autosaver.stop()
        self.statusBar().clearMessage()  # and its timeout timer
        self.cost_panel.shut_down()
        self.ctl.close()

    # ---- recovery --------------------------------------------------------------------------
    def _discard_recovery_file(self) -> None:
        if self.autosaver is not None:
            self.autosaver.discard()

    def _offer_recovery(self) -> None:
        found = pending_recovery(self.autosaver.folder, self.ctl.design.path)
        self.recovery_file = found
        if found is None:
            self.banner.hide()
            return
        self.banner.label.setText(f"An autosaved copy of this design ({found.name}) is newer than the file. Recover it?")
        self.banner.show()

    def recover(self) -> bool:
        """Replace the design with the autosaved copy (one undoable step)."""
        if self.recovery_file is None:
            return False
        try:
            error = self.ctl.recover(self.recovery_file.read_text(encoding="utf-8"), f"'{self.recovery_file}'")
        except (OSError, UnicodeDecodeError) as e:
            error = f"cannot read: {e}, recovery file '{self.recovery_file}'"
        self.banner.hide()
        self.show_message(f"error: {error}" if error else "Recovered the autosaved design")
        return error is None

    def discard_recovery(self) -> None:
        if self.recovery_file is not None:
            self.recovery_file.unlink(missing_ok=True)
        self.recovery_file = None
        self.banner.hide()

    # ---- editing ---------------------------------------------------------------------------
    def delete_selection(self) -> None:
        edges = self.scene.selected_edges()
        names = self.scene.selected_names()
        if names:
            self.ctl.delete(names)
        elif edges:
            for edge in sorted(edges, key=lambda e: -e.index):
                self.ctl.disconnect(edge.dst.name, edge.index)

    def copy_selection(self) -> None:
        count = self.ctl.copy(self.scene.selected_names())
        self.show_message(f"Copied {count} node{'s' if count != 1 else ''}")

    def paste(self) -> None:
        names = self.ctl.paste()
        if names:
            self.show_message(f"Pasted {len(names)} node{'s' if len(names) != 1 else ''}")

    # ---- the dialogs (imported on first use: they load torch and onnx) ----------------------
    def _open_dialog(self, action: str) -> None:
        """Call designer.gui.dialogs.<module>.<action>(window)."""
        module = importlib.import_module(f"convstudio.designer.gui.dialogs.{DIALOG_ACTIONS[action][0]}")
        getattr(module, action)(self)

    def show_node_menu(self, names: list[str], global_pos) -> None:
        """Right-click on nodes: the compression strategies for them and Fuse preview."""
        module = importlib.import_module("convstudio.designer.gui.dialogs.compress")
        self.node_menu = module.context_menu(self, names)
        self.node_menu.popup(global_pos)

    def compress_selection(self) -> None:
        self._open_dialog("compress_selection")

    def fuse_preview(self) -> None:
        self._open_dialog("fuse_preview")

    def compare(self) -> None:
        self._open_dialog("compare")

    def export_onnx(self) -> None:
        self._open_dialog("export_onnx")

    def run_inference(self) -> None:
        self._open_dialog("run_inference")

    def train(self) -> None:
        self._open_dialog("train")
