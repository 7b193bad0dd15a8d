"""What the dialogs share: the before / after / delta table, the one-line error label, a worker thread, and how a dialog
that holds a run or a chart shuts down."""

from __future__ import annotations

import pyqtgraph as pg
from PyQt6.QtCore import QSize, Qt, QThread, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import QAbstractItemView, QApplication, QDialog, QHeaderView, QLabel, QSizePolicy, QTableWidget, QTableWidgetItem

from convstudio.designer.cli.common import METRIC_ROWS, signed
from convstudio.designer.gui.charts import close_chart
from convstudio.ir.errors import DesignError, printable

GAIN = "#1b7f3b"
LOSS = "#b42318"


def error_line(err: Exception) -> str:
    """One line for any failure: a DesignError's 'what, where', else the exception's type and first line."""
    if isinstance(err, DesignError):
        return f"error: {err.line()}"
    first = printable((str(err).strip().splitlines() or [""])[0][:200])
    return f"error: {type(err).__name__}: {first}" if first else f"error: {type(err).__name__}"


class StatusLabel(QLabel):
    """A word-wrapped status line; errors show in red, everything else in the default colour."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def show_error(self, text: str) -> None:
        self.setStyleSheet(f"color: {LOSS};")
        self.setText(text)

    def show_info(self, text: str) -> None:
        self.setStyleSheet("")
        self.setText(text)

    def is_error(self) -> bool:
        return bool(self.styleSheet())


class BeforeAfterTable(QTableWidget):
    """Rows: the metrics of `ir.passes.compare.before_after`; columns: before, after, delta, delta %."""

    HEADERS = ("before", "after", "delta", "delta %")

    def __init__(self, headers: tuple[str, ...] = HEADERS, parent=None):
        super().__init__(len(METRIC_ROWS), len(headers), parent)
        self.headers = tuple(headers)
        self.setHorizontalHeaderLabels(list(headers))
        self.setVerticalHeaderLabels([label for _, label, _ in METRIC_ROWS])
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fit_height()
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def show_data(self, data: dict) -> None:
        """Fill from before_after's {'before', 'after', 'delta'}."""
        for row, (key, _, fmt) in enumerate(METRIC_ROWS):
            d = data["delta"][key]
            pct = "" if d["pct"] is None else f"{d['pct']:+.1f}%"
            cells = (fmt(data["before"][key]), fmt(data["after"][key]), signed(d["abs"], fmt), pct)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col >= 2 and d["abs"]:
                    item.setForeground(QColor(GAIN if d["abs"] < 0 else LOSS))
                self.setItem(row, col, item)
        self._fit_height()

    def _fit_height(self) -> None:
        self.resizeRowsToContents()
        self.updateGeometry()

    def sizeHint(self) -> QSize:
        """Tall enough for the header and every row, so the table never scrolls."""
        rows = sum(self.rowHeight(i) for i in range(self.rowCount()))
        header = max(self.horizontalHeader().height(), self.horizontalHeader().sizeHint().height())
        return QSize(super().sizeHint().width(), header + rows + 2 * self.frameWidth() + 2)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def clear_data(self) -> None:
        self.clearContents()

    def cell_text(self, key: str, column: str) -> str:
        row = [k for k, _, _ in METRIC_ROWS].index(key)
        item = self.item(row, self.headers.index(column))
        return item.text() if item else ""


class Job(QThread):
    """Runs `work(job)` off the GUI thread; `done(result)` or `failed(one line)` follows.

    `work` may call `job.progress.emit(...)`; the signals reach the GUI thread queued."""

    done = pyqtSignal(object)
    failed = pyqtSignal(str)
    progress = pyqtSignal(object)

    def __init__(self, work, parent=None):
        super().__init__(parent)
        self.work = work
        self.result = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = self.work(self)
        except Exception as err:  # every failure becomes one line in the dialog, never a traceback
            self.error = error_line(err)
            self.failed.emit(self.error)
            return
        self.done.emit(self.result)

    def detach(self) -> None:
        """Wait for the run to end and drop the results it still has queued (their receiver is going away)."""
        self.wait()
        for signal in (self.done, self.failed, self.progress):
            if self.receivers(signal):
                signal.disconnect()


class ToolDialog(QDialog):
    """A dialog of the designer window that may hold runs and charts. However it closes (its buttons, Esc,
    close(), or its window closing, shown or never shown) `release` runs once, before it is deleted.

    A dialog with `runs_jobs` starts its runs with `start_job`; closing it, or quitting the application,
    stops the run (`stop_requested`) and waits for its thread (`stop_and_wait`)."""

    runs_jobs = False

    def __init__(self, window):
        super().__init__(window)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.is_shut_down = False
        self.job: Job | None = None
        self.stop_requested = False
        if self.runs_jobs:
            QApplication.instance().aboutToQuit.connect(self.stop_and_wait)

    def shut_down(self) -> None:
        if not self.is_shut_down:
            self.is_shut_down = True
            self.release()

    def release(self) -> None:
        """Stop the dialog's run and wait for it, drop what its runs still have queued for it, then take its charts down."""
        if self.runs_jobs:
            self.stop_and_wait()
            QApplication.instance().aboutToQuit.disconnect(self.stop_and_wait)
        for job in self.findChildren(Job):
            job.detach()
        for plot in self.findChildren(pg.PlotWidget):
            close_chart(plot)

    def start_job(self, work, on_done, on_progress=None) -> Job:
        """Run `work(job)` in a Job of this dialog: its result goes to `on_done`, a failure's line to `_on_failed`."""
        self.job = Job(work, self)
        if on_progress is not None:
            self.job.progress.connect(on_progress)
        self.job.done.connect(on_done)
        self.job.failed.connect(self._on_failed)
        self.job.start()
        return self.job

    def stop_and_wait(self) -> None:
        """Stop the run and wait for its thread; then `stopped` deals with what the run left."""
        if self.job is not None:
            self.stop_requested = True
            self.job.wait()
            self.stopped(self.job)

    def stopped(self, job: Job) -> None:
        """What a run stopped by `stop_and_wait` leaves behind (its result, its files); nothing here."""

    def request_stop(self, text: str) -> None:
        """Ask the running job to stop at its next check (`stop_requested`); the label says what happens next."""
        if self.running():
            self.stop_requested = True
            self.cancel_button.setEnabled(False)
            self.progress_label.setText(text)

    def done(self, code: int) -> None:
        self.shut_down()
        super().done(code)

    def closeEvent(self, event) -> None:
        self.shut_down()  # QDialog's closeEvent calls done() only for a dialog on screen
        super().closeEvent(event)
