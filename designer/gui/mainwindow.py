"""The main window: palette (left), canvas (centre), inspector (right), cost panel (bottom),
menus and toolbar, status bar, the recovery banner and the prompt for unsaved changes."""

from __future__ import annotations

import importlib
from pathlib import Path

from PyQt6.QtCore import QEvent, QSettings, Qt
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from convstudio.designer.gui import theme
from convstudio.designer.gui.canvas import ZOOM_STEP, GraphScene, GraphView
from convstudio.designer.gui.controller import Controller
from convstudio.designer.gui.cost_panel import CostPanel
from convstudio.designer.gui.find import FindBar
from convstudio.designer.gui.groups import group_selection, rename_group
from convstudio.designer.gui.inspector import Inspector
from convstudio.designer.gui.messages import for_people
from convstudio.designer.gui.minimap import Minimap
from convstudio.designer.gui.palette import Palette
from convstudio.designer.gui.picture import export_picture
from convstudio.designer.gui.recovery import Autosaver, pending_recovery
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import paused_gc
from convstudio.ir.groups import group_of
from convstudio.ir.templates import TEMPLATES

DESIGN_FILTER = "ConvStudio designs (*.json);;All files (*)"
SETTINGS_ORGANIZATION = "ConvStudio"
SETTINGS_APPLICATION = "designer"
LAYOUT_KEY = "window/panels"
LAYOUT_VERSION = 1  # bump when the docks change, so an old saved layout is ignored
PICTURE_FILTER = "PNG image (*.png);;SVG drawing (*.svg)"
TINT_TIP = ("Colour each node by its latency, from white (none) to orange (the slowest node): measured ms where the design "
            "was profiled (Tools > Profile), else the latency model's prediction")
DIALOG_ACTIONS = {
    "compress_selection": ("compress", "Compress"),
    "fuse_preview": ("fuse", "Fuse preview"),
    "compare": ("compare", "Compare"),
    "export_onnx": ("export", "Export ONNX"),
    "run_inference": ("export", "Run inference"),
    "train": ("train", "Train"),
    "profile": ("profile", "Profile"),
    "explore": ("explore", "Explore compression…"),
}


def layout_settings() -> QSettings:
    """The designer's settings (an ini file under the user's configuration folder, ConvStudio/designer.ini)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, SETTINGS_ORGANIZATION, SETTINGS_APPLICATION)


class RecoveryBanner(QFrame):
    """A non-blocking bar above the canvas offering to recover an autosaved copy."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setStyleSheet("RecoveryBanner { background: #fff4cc; border-bottom: 1px solid #d9b64c; } "
                           "RecoveryBanner QLabel { color: #3a2e00; }")  # dark text on the pale bar, in a dark theme too
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

    @paused_gc()  # opening builds an item per node and edge: the collector would rescan the design again and again
    def __init__(self, design: Design | None = None, recovery_folder: Path | None = None, autosave_ms: int = 60_000, autosave: bool = True,
                 remember_layout: bool = True):
        super().__init__()
        self.is_shut_down = False
        theme.apply()
        self.ctl = Controller(design, self)
        self.ctl.commit()
        self.scene = GraphScene(self.ctl, self)
        self.view = GraphView(self.scene)
        self.palette = Palette()
        self.inspector = Inspector(self.ctl)
        self.cost_panel = CostPanel(self.ctl)
        self.banner = RecoveryBanner()
        self.find_bar = FindBar(self.view)
        self.minimap = Minimap(self.view)
        self.recovery_file: Path | None = None
        self.node_menu = None
        self.close_prompt = self._ask_save
        self.autosaver = Autosaver(self.ctl, recovery_folder, autosave_ms, self) if autosave else None

        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.banner)
        column.addWidget(self.find_bar)
        column.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.docks: dict[str, QDockWidget] = {}
        self._dock("Palette", self.palette, Qt.DockWidgetArea.LeftDockWidgetArea, 220)
        self._dock("Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea, 300)
        self._dock("Cost", self.cost_panel, Qt.DockWidgetArea.BottomDockWidgetArea, 260)
        self._dock("Overview", self.minimap, Qt.DockWidgetArea.LeftDockWidgetArea, 220)
        self._build_actions()
        self.statusBar().showMessage("Ready")

        self.ctl.message.connect(self.show_message)
        self.ctl.modified_changed.connect(self._update_title)
        self.ctl.modified_changed.connect(self._on_modified)
        self.ctl.graph_changed.connect(self._update_title)  # the design may have been renamed
        self.ctl.design_replaced.connect(self._on_design_replaced)
        self.cost_panel.node_activated.connect(self.view.centre_on_node)
        self.zoom_label = QLabel()
        self.statusBar().addPermanentWidget(self.zoom_label)
        self.view.zoom_changed.connect(self._show_zoom)
        self.tint_legend = QLabel()
        self.tint_legend.setToolTip(TINT_TIP)
        self.statusBar().addPermanentWidget(self.tint_legend)
        self.tint_before = "macs"
        for signal in (self.ctl.heatmap_changed, self.ctl.report_changed, self.ctl.measured_changed):
            signal.connect(lambda *_args: self._show_tint())
        self._show_tint()
        if self.autosaver is not None:
            self.autosaver.saved.connect(self._on_autosaved)
            self.autosaver.failed.connect(self.show_message)
        self.view.node_menu_requested.connect(self.show_node_menu)
        self.banner.recover_button.clicked.connect(self.recover)
        self.banner.discard_button.clicked.connect(self.discard_recovery)
        self._update_title()
        self.default_layout = self.saveState(LAYOUT_VERSION)
        self.remember_layout = remember_layout  # False: neither read nor write the saved panel layout (screenshots)
        if remember_layout:
            self.restore_layout()
        if self.autosaver is not None:
            self._offer_recovery()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, size: int) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        feature = QDockWidget.DockWidgetFeature
        dock.setFeatures(feature.DockWidgetMovable | feature.DockWidgetFloatable | feature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        self.docks[title] = dock
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
        self.new_action = self._action("New", self.new_blank, ["Ctrl+N"], "New blank design (the arrow: new from a template)")
        self.rename_design_action = self._action("Rename design...", self.rename_design, tip="Rename the design (Save As proposes its name)")
        self.open_action = self._action("Open...", self.open_file, ["Ctrl+O"])
        self.save_action = self._action("Save", self.save_file, ["Ctrl+S"])
        self.save_as_action = self._action("Save As...", self.save_as, ["Ctrl+Shift+S"])
        self.layout_action = self._action("Auto-layout", self.ctl.auto_layout, ["Ctrl+L"], "Lay the graph out in layers")
        self.fit_action = self._action("Fit", self.view.fit_all, ["F"], "Show the whole graph")
        self.delete_action = self._action("Delete", self.delete_selection, ["Delete", "Backspace"])
        self.copy_action = self._action("Copy", self.copy_selection, ["Ctrl+C"])
        self.paste_action = self._action("Paste", self.paste, ["Ctrl+V"])
        self.select_all_action = self._action("Select all", lambda: self.ctl.select(list(self.ctl.graph.nodes)), ["Ctrl+A"])
        self.group_action = self._action("Group selection...", lambda: group_selection(self), ["Ctrl+G"], "Make a named group of the selected nodes")
        self.rename_group_action = self._action("Rename group...", self.rename_selected_group, tip="Rename the innermost group of the selected node")
        self.collapse_all_action = self._action("Collapse all groups", lambda: self._refold(self.ctl.collapse_all), tip="Fold every group into one node")
        self.expand_all_action = self._action("Expand all groups", lambda: self._refold(self.ctl.expand_all))
        self.dialog_actions = {name: self._action(label, getattr(self, name)) for name, (_, label) in DIALOG_ACTIONS.items()}
        self.tint_latency_action = self._action("Tint by latency", self.toggle_latency_tint, tip=TINT_TIP)
        self.tint_latency_action.setCheckable(True)
        self.find_action = self._action("Find...", self.find_bar.open, ["Ctrl+F"], "Find nodes by name, op or attribute (conv, op:BatchNorm2d, kernel_size=3)")
        self.find_next_action = self._action("Find next", self.find_bar.next, ["F3"])
        self.find_previous_action = self._action("Find previous", self.find_bar.previous, ["Shift+F3"])
        self.zoom_in_action = self._action("Zoom in", lambda: self.view.zoom_by(ZOOM_STEP), ["Ctrl++", "Ctrl+="])
        self.zoom_out_action = self._action("Zoom out", lambda: self.view.zoom_by(1 / ZOOM_STEP), ["Ctrl+-"])
        self.zoom_actual_action = self._action("Actual size", self.view.zoom_actual, ["Ctrl+0"], "Zoom to 100% (F fits the whole design)")
        self.edge_shapes_action = self._action("Edge shapes", lambda: self.scene.set_edge_shapes(self.edge_shapes_action.isChecked()),
                                               tip="Label every edge with the shape of the tensor it carries")
        self.edge_shapes_action.setCheckable(True)
        self.export_picture_action = self._action("Export picture...", self.export_picture, tip="Save the whole design as a PNG or SVG picture")
        self.export_selection_picture_action = self._action("Export selection as picture...", lambda: self.export_picture(selection=True),
                                                            tip="Save the selected nodes as a PNG or SVG picture")

        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        file_menu.addAction(self.new_action)
        self.new_menu = file_menu.addMenu("New from template")
        self.new_menu.setToolTipsVisible(True)
        for name in sorted(TEMPLATES):
            action = self.new_menu.addAction(name)
            action.setToolTip(TEMPLATES[name].description)
            action.triggered.connect(lambda _checked=False, n=name: self.new_from_template(n))
        file_menu.addActions([self.open_action, self.save_action, self.save_as_action])
        file_menu.addSeparator()
        file_menu.addActions([self.dialog_actions["export_onnx"], self.dialog_actions["run_inference"]])
        file_menu.addActions([self.export_picture_action, self.export_selection_picture_action])
        file_menu.addSeparator()
        self.quit_action = self._action("Quit", self.close, ["Ctrl+Q"])
        file_menu.addAction(self.quit_action)
        edit_menu = menus.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.copy_action, self.paste_action, self.delete_action, self.select_all_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.find_action, self.find_next_action, self.find_previous_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.group_action, self.rename_group_action])
        edit_menu.addSeparator()
        edit_menu.addAction(self.rename_design_action)
        view_menu = menus.addMenu("&View")
        view_menu.addActions([self.layout_action, self.fit_action, self.zoom_in_action, self.zoom_out_action, self.zoom_actual_action])
        view_menu.addSeparator()
        view_menu.addAction(self.edge_shapes_action)
        view_menu.addAction(self.tint_latency_action)
        view_menu.addActions([self.collapse_all_action, self.expand_all_action])
        view_menu.addSeparator()
        self.panels_menu = view_menu.addMenu("Panels")
        for dock in self.docks.values():
            self.panels_menu.addAction(dock.toggleViewAction())
        self.panels_menu.addSeparator()
        self.reset_layout_action = self.panels_menu.addAction("Reset panel layout", self.reset_layout)
        tools = menus.addMenu("&Tools")
        tools.addActions([self.dialog_actions[n] for n in ("fuse_preview", "compress_selection", "compare", "train", "explore", "profile")])

        bar = self.addToolBar("Main")
        bar.setObjectName("Main")
        new_button = QToolButton()
        new_button.setDefaultAction(self.new_action)
        new_button.setMenu(self.new_menu)
        new_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.new_button = new_button
        bar.addWidget(new_button)
        stack = self.ctl.undo_stack
        self.undo_tool = self._fixed_label("Undo", stack.undo, stack.canUndo(), stack.canUndoChanged, stack.undoTextChanged)
        self.redo_tool = self._fixed_label("Redo", stack.redo, stack.canRedo(), stack.canRedoChanged, stack.redoTextChanged)
        bar.addActions([self.open_action, self.save_action, self.undo_tool, self.redo_tool, self.layout_action, self.fit_action])
        self.toolbar = bar
        bar.addSeparator()
        bar.addActions([self.dialog_actions[n] for n in DIALOG_ACTIONS])
        bar.addAction(self.tint_latency_action)

    def _fixed_label(self, text: str, slot, enabled: bool, enabled_changed, what_changed) -> QAction:
        """A toolbar twin of Undo or Redo whose label stays put (the menu's says what it undoes; a label that grew
        with it would move every button after it); it is disabled, never hidden, when there is nothing to do."""
        action = QAction(text, self)
        action.triggered.connect(lambda _checked=False: slot())
        action.setEnabled(enabled)
        enabled_changed.connect(action.setEnabled)
        what_changed.connect(lambda what: action.setToolTip(f"{text} {what}".strip()))
        return action

    def _refold(self, fold) -> None:
        """Fold or unfold every group, then fit the view: what was on screen may have moved away."""
        fold()
        self.view.fit_all()

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(for_people(text), 10_000)

    def toggle_latency_tint(self) -> None:
        """View > Tint by latency: on, the nodes' tint shows latency; off, what it showed before."""
        if self.tint_latency_action.isChecked():
            if self.ctl.heatmap != "latency":
                self.tint_before = self.ctl.heatmap
            self.ctl.set_heatmap("latency")
        elif self.ctl.heatmap == "latency":
            self.ctl.set_heatmap(self.tint_before)

    def _show_tint(self) -> None:
        """The legend of the latency tint in the status bar (hidden while the tint shows something else)."""
        on = self.ctl.heatmap == "latency"
        self.tint_latency_action.setChecked(on)
        self.tint_legend.setVisible(on)
        if not on:
            return
        slowest = max((self.ctl.latency_of(name) or 0.0 for name in self.ctl.analyzer.costs), default=0.0)
        if not slowest:
            self.tint_legend.setText("Tint: latency unknown (no profile, no latency model: Tools > Profile)")
            return
        source = "measured where profiled, else predicted" if self.ctl.measured else "predicted"
        colours = theme.active()
        self.tint_legend.setText(f"Tint: latency ({source}) <span style='background:{colours.node.name()}'>&nbsp;0 ms&nbsp;</span>"
                                 f"<span style='background:{colours.hot.name()}'>&nbsp;{slowest:.3f} ms&nbsp;</span>")

    def _show_zoom(self, zoom: float) -> None:
        self.zoom_label.setText(f"Zoom {zoom:.0%}")

    def _on_autosaved(self, path: str) -> None:
        self.show_message(f"Autosaved a recovery copy to {path}")

    def _on_modified(self, modified: bool) -> None:
        """Clean again (saved, or undone back to the saved state): an 'Autosaved' note no longer applies."""
        if not modified and self.statusBar().currentMessage().startswith("Autosaved"):
            self.statusBar().clearMessage()

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

    def new_blank(self) -> bool:
        """File > New: an empty design (after asking about unsaved changes)."""
        if not self._may_discard_changes():
            return False
        self.ctl.new_blank()
        self.show_message("New blank design: drag ops from the palette onto the canvas")
        return True

    def rename_design(self, name: str | None = None) -> bool:
        """Edit > Rename design: one undoable step; asks for the name when not given."""
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename design", "Design name:", text=self.ctl.design.name)
            if not ok:
                return False
        reason = self.ctl.rename_design(name)
        if reason:
            self.show_message(reason)
        return reason is None

    def proposed_path(self) -> str:
        """Where Save As starts: the design's name as the file name, in its folder (or the working folder)."""
        folder = self.ctl.design.path.parent if self.ctl.design.path else Path.cwd()
        return str(folder / f"{self.ctl.design.name}.json")

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
            path, _ = QFileDialog.getSaveFileName(self, "Save design", self.proposed_path(), DESIGN_FILTER)
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

    def changeEvent(self, event) -> None:
        """A new palette (the system switched between light and dark): the canvas takes the theme's colours."""
        if event.type() == QEvent.Type.PaletteChange and not self.is_shut_down and theme.apply(QMainWindow.palette(self)):  # self.palette is the op palette
            self.scene.restyle()
            self.cost_panel.restyle()
            self._show_tint()
        super().changeEvent(event)

    def closeEvent(self, event) -> None:
        focus = self.focusWidget()
        if focus is not None:
            focus.clearFocus()  # a field being edited applies its value now, before the unsaved-changes question
        if not self._may_discard_changes():
            event.ignore()
            return
        self._discard_recovery_file()
        if self.remember_layout:
            self.save_layout()
        self.shut_down()
        event.accept()

    # ---- the panels' layout ----------------------------------------------------------------
    def restore_layout(self) -> bool:
        """Put the docks and toolbar back where the last window closed with them (from the settings)."""
        state = layout_settings().value(LAYOUT_KEY)
        return bool(state) and self.restoreState(state, LAYOUT_VERSION)

    def save_layout(self) -> None:
        settings = layout_settings()
        settings.setValue(LAYOUT_KEY, self.saveState(LAYOUT_VERSION))
        settings.sync()

    def reset_layout(self) -> None:
        """View > Panels > Reset panel layout: every dock shown where it started."""
        self.restoreState(self.default_layout, LAYOUT_VERSION)

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
        self.minimap.shut_down()
        self.ctl.close()

    def export_picture(self, path: str | Path | None = None, selection: bool = False) -> bool:
        """Save a PNG or SVG (by the file name) of the whole design, or of the selected nodes."""
        names = list(self.ctl.selection) if selection else None
        if selection and not names:
            self.show_message("select the nodes to export first")
            return False
        if path is None:
            folder = self.ctl.design.path.parent if self.ctl.design.path else Path.cwd()
            path, _ = QFileDialog.getSaveFileName(self, "Export picture", str(folder / f"{self.ctl.design.name}.png"), PICTURE_FILTER)
            if not path:
                return False
        try:
            size = export_picture(self.scene, path, names, title=self.ctl.design.name)
        except DesignError as e:
            self.show_message(f"error: {e.line()}")
            return False
        what = f"{len(names)} selected node{'s' if len(names) != 1 else ''}" if names else "the design"
        self.show_message(f"Exported a picture of {what} to {path} ({size.width()}×{size.height()})")
        return True

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

    def rename_selected_group(self) -> None:
        group = group_of(self.ctl.graph.groups, self.ctl.selection[0]) if self.ctl.selection else None
        if group is None:
            self.show_message("select a node of the group to rename")
            return
        rename_group(self, self.ctl, group)

    def copy_selection(self) -> None:
        count = self.ctl.copy(self.scene.selected_names())
        self.show_message(f"Copied {count} node{'s' if count != 1 else ''}")

    def paste(self) -> None:
        """Ctrl+V: the copied nodes land with their top-left at the mouse when it is over the canvas, else at its centre."""
        point = self.view.paste_point()
        names = self.ctl.paste_at((point.x(), point.y()))
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

    def profile(self) -> None:
        self._open_dialog("profile")

    def explore(self) -> None:
        self._open_dialog("explore")
