"""The designer window as the GUI tests open it: it closes without asking, and is shown when given a size."""

from PyQt6.QtCore import QPointF

from convstudio.designer.gui.mainwindow import MainWindow


def make_window(qtbot, design, folder, size: tuple[int, int] | None = None, **kwargs) -> MainWindow:
    """A MainWindow on `design` with recovery files in `folder`; with `size`, resized, shown and exposed."""
    win = MainWindow(design, recovery_folder=folder, **kwargs)
    win.close_prompt = lambda: "discard"
    qtbot.addWidget(win)
    if size is not None:
        win.resize(*size)
        with qtbot.waitExposed(win, timeout=60_000):
            win.show()
    return win


def view_centre(view) -> QPointF:
    """The scene point at the middle of `view`'s viewport."""
    return view.mapToScene(view.viewport().rect().center())
