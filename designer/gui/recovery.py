"""Crash safety: autosave a modified design to a recovery file, and find one after a crash.

Recovery files live in one folder (default `~/.cache/convstudio/recovery`), named after the design
file's name plus a short hash of its full path (`untitled` for a design never saved). They are
removed when the design is saved or closed normally, so one that survives is a crash's leftover.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from ir.design import write_atomic

DEFAULT_FOLDER = Path.home() / ".cache" / "convstudio" / "recovery"
DEFAULT_INTERVAL_MS = 60_000


def recovery_path(folder: Path, design_path: Path | None) -> Path:
    """Where the recovery copy of the design at `design_path` goes."""
    if design_path is None:
        return Path(folder) / "untitled.recovery.json"
    full = str(Path(design_path).resolve())
    digest = hashlib.sha1(full.encode()).hexdigest()[:10]
    return Path(folder) / f"{Path(design_path).stem}-{digest}.recovery.json"


def pending_recovery(folder: Path, design_path: Path | None) -> Path | None:
    """A recovery file left for this design that is newer than the design file itself."""
    path = recovery_path(folder, design_path)
    if not path.exists():
        return None
    if design_path is not None and Path(design_path).exists() and Path(design_path).stat().st_mtime >= path.stat().st_mtime:
        return None
    return path


class Autosaver(QObject):
    """Writes the controller's design to its recovery file every `interval_ms` while modified."""

    saved = pyqtSignal(str)

    def __init__(self, controller, folder: Path | None = None, interval_ms: int = DEFAULT_INTERVAL_MS, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.folder = Path(folder) if folder else DEFAULT_FOLDER
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.autosave)
        self.timer.start()
        self._saved_index = None

    def path(self) -> Path:
        return recovery_path(self.folder, self.ctl.design.path)

    def autosave(self) -> Path | None:
        """Write the recovery file if the design changed since the last autosave."""
        if not self.ctl.modified or self._saved_index == self.ctl.undo_stack.index():
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path()
        write_atomic(target, self.ctl.dumps())
        self._saved_index = self.ctl.undo_stack.index()
        self.saved.emit(str(target))
        return target

    def discard(self, design_path: Path | None = None) -> None:
        """Remove the recovery file (after a save or a normal close)."""
        target = recovery_path(self.folder, design_path) if design_path is not None else self.path()
        target.unlink(missing_ok=True)
        self._saved_index = None
