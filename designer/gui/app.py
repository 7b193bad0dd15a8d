"""Starting the designer: the QApplication, the display check, and headless screenshots."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from convstudio.ir.design import Design, load
from convstudio.ir.errors import DesignError
from convstudio.ir.templates import build_template

NO_DISPLAY = (
    "no display to open the designer on (DISPLAY and WAYLAND_DISPLAY are unset); "
    "run `convstudio design FILE --screenshot out.png` for a picture of the design instead"
)


def has_display() -> bool:
    """Whether Qt can open a window here: a platform plugin that needs no display was chosen, or the
    X or Wayland display the chosen (or default) plugin needs exists."""
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    x11, wayland = bool(os.environ.get("DISPLAY")), bool(os.environ.get("WAYLAND_DISPLAY"))
    if platform == "xcb":
        return x11
    if platform.startswith("wayland"):
        return wayland
    if platform or not sys.platform.startswith("linux"):
        return True
    return x11 or wayland


_KEEP_ALIVE: list = []  # the QApplication must outlive every caller's local reference
QUIET_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)


def _qt_message(mode, context, message: str) -> None:
    """Pass Qt's messages on to stderr, minus the offscreen plugin's harmless notices."""
    if message not in QUIET_QT_MESSAGES:
        sys.stderr.write(message + "\n")


def application():
    """The process's QApplication (created on first use)."""
    from PyQt6.QtCore import qInstallMessageHandler
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        qInstallMessageHandler(_qt_message)
        app = QApplication(sys.argv[:1])
        app.setApplicationName("ConvStudio")
        app.setOrganizationName("ConvStudio")
        from convstudio.designer.gui.theme import follow_system

        follow_system(app)
        _KEEP_ALIVE.append(app)
    return app


def open_design(path: str | Path | None, template: str | None = None) -> Design | None:
    """The design to show: a file, a template, or None for the window's default example."""
    if path is not None:
        return load(path)
    return Design(build_template(template)) if template else None


def _report_bug(kind, value, tb) -> None:
    """Keep the window alive after an unexpected error in a Qt callback: print it, say it in the status bar."""
    traceback.print_exception(kind, value, tb)
    from convstudio.designer.gui.mainwindow import MainWindow

    for widget in application().topLevelWidgets():
        if isinstance(widget, MainWindow):
            widget.show_message(f"internal error: {value}")


def show_selected(window, select: list[str] | None) -> None:
    """Show the design readably with the nodes `select` selected and the first of them in the middle of the canvas.

    Without `select`, the most expensive layer is selected (so the inspector shows it) and scrolled into view."""
    window.view.show_readable()
    if select:
        window.ctl.select(select)
        window.view.centre_on_node(select[0])
        return
    if not window.ctl.selection and window.ctl.report is not None and window.ctl.report.nodes:
        window.ctl.select([max(window.ctl.report.nodes, key=lambda c: c.macs).name])
    if window.ctl.selection:
        item = window.scene.nodes.get(window.ctl.selection[0])
        if item is not None and not window.view.mapToScene(window.view.viewport().rect()).boundingRect().contains(item.sceneBoundingRect()):
            window.view.centre_on_node(item.name)


def take_screenshot(window, out: str | Path, select: list[str] | None = None) -> Path:
    """Lay the window out, render it and save a PNG of the whole window, the selected node (`select`, else the
    most expensive layer) in view and shown in the inspector."""
    app = application()
    for _ in range(3):
        app.processEvents()
    show_selected(window, select)
    app.processEvents()
    out = Path(out)
    if not window.grab().save(str(out), "PNG"):
        raise DesignError("cannot write the screenshot", f"file '{out}'")
    return out


def run(
    path: str | Path | None = None,
    screenshot: str | Path | None = None,
    size: tuple[int, int] = (1600, 1000),
    template: str | None = None,
    select: list[str] | None = None,
) -> int:
    """Open the designer on a design file (or the default example); with `screenshot`, save a PNG and exit.
    `select` names nodes to select, the first centred on the canvas."""
    if screenshot is not None and not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if not has_display():
        raise DesignError(NO_DISPLAY)
    if screenshot is not None and Path(screenshot).is_dir():
        raise DesignError("is a folder; give a file name", f"file '{screenshot}'")
    if screenshot is not None and not Path(screenshot).resolve().parent.is_dir():
        raise DesignError("folder does not exist", f"file '{screenshot}'")
    design = open_design(path, template)
    if select:
        from convstudio.designer.gui.controller import default_design

        design = design or default_design()
        unknown = [name for name in select if name not in design.graph.nodes]
        if unknown:
            raise DesignError(f"no node named '{unknown[0]}' in the design", "--select")
    app = application()
    from convstudio.designer.gui.mainwindow import MainWindow

    window = MainWindow(design, autosave=screenshot is None, remember_layout=screenshot is None)
    window.resize(*size)
    window.show()
    if screenshot is not None:
        out = take_screenshot(window, screenshot, select)
        window.close()
        print(f"wrote {out} ({size[0]}x{size[1]})")
        return 0
    sys.excepthook = _report_bug
    if select:
        show_selected(window, select)
    else:
        window.view.show_readable()
    return app.exec()
