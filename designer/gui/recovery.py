"""Crash safety: autosave a modified design to a recovery file, and find one after a crash.

Recovery files live in one folder (default `~/.cache/convstudio/recovery`), named after the design
file's name plus a short hash of its full path (`untitled` for a design never saved). They are
removed when the design is saved or closed normally, so one that survives is a crash's leftover.

A recovery file keeps the design exactly as it was being edited, work in progress included
(unconnected inputs, no Output yet), which a design file cannot hold: every node in graph order
with its op, attributes, inputs (null when unconnected) and share group, plus groups (folded or not),
layout, training section and weights file name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from convstudio.designer.gui.fragments import node_spec
from convstudio.ir.design import Design, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.groups import check_groups
from convstudio.ir.training import validate_training

RECOVERY_FORMAT = "convstudio.recovery"
RECOVERY_VERSION = 1

DEFAULT_FOLDER = Path.home() / ".cache" / "convstudio" / "recovery"
DEFAULT_INTERVAL_MS = 60_000


def recovery_path(folder: Path, design_path: Path | None) -> Path:
    """Where the recovery copy of the design at `design_path` goes."""
    if design_path is None:
        return Path(folder) / "untitled.recovery.json"
    full = str(Path(design_path).resolve())
    digest = hashlib.sha1(full.encode()).hexdigest()[:10]
    return Path(folder) / f"{Path(design_path).stem}-{digest}.recovery.json"


def recovery_text(design: Design) -> str:
    """The recovery file's text for `design`, work in progress included."""
    graph = design.graph
    nodes = []
    for node in graph.nodes.values():
        spec = node_spec(node)
        del spec["params"]
        nodes.append(spec)
    data = {
        "format": RECOVERY_FORMAT,
        "version": RECOVERY_VERSION,
        "name": graph.name,
        "nodes": nodes,
        "layout": {name: list(pos) for name, pos in graph.layout.items() if name in graph.nodes},
        "groups": [group.as_dict() for group in graph.groups.values()],
        "training": design.training,
        "weights": design.weights,
    }
    return json.dumps(data, indent=1) + "\n"


def read_recovery(text: str, source: str) -> Design:
    """The design a recovery file holds; a damaged file is a DesignError naming `source`."""
    where = f"recovery file {source}"
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DesignError(f"damaged ({e})", where) from None
    if not isinstance(data, dict) or data.get("format") != RECOVERY_FORMAT or data.get("version") != RECOVERY_VERSION:
        raise DesignError(f"not a {RECOVERY_FORMAT} version {RECOVERY_VERSION} file", where)
    try:
        graph = Graph(str(data["name"]))
        for spec in data["nodes"]:
            graph.add(spec["op"], [None] * len(spec["inputs"]), name=spec["name"], attrs=spec["attrs"], share=spec["share"])
        for spec in data["nodes"]:
            for index, ref in enumerate(spec["inputs"]):
                if ref is not None:
                    graph.set_input(spec["name"], index, ref)
        graph.topo_order()
        for name, (x, y) in data["layout"].items():
            if name not in graph.nodes:
                raise DesignError(f"layout names unknown node '{name}'", "field layout")
            graph.layout[name] = (float(x), float(y))
        graph.groups = check_groups(data.get("groups", []), graph.nodes)  # files written before groups were kept have none
        training = validate_training(data["training"], "field training")
        weights = data["weights"]
        if weights is not None and not isinstance(weights, str):
            raise DesignError("weights must be a file name", "field weights")
        return Design(graph, training, weights)
    except DesignError as e:
        raise DesignError(e.what, f"{e.where} in {where}".strip()) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DesignError(f"damaged ({type(e).__name__}: {e})", where) from None


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
    failed = pyqtSignal(str)

    def __init__(self, controller, folder: Path | None = None, interval_ms: int = DEFAULT_INTERVAL_MS, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.folder = Path(folder) if folder else DEFAULT_FOLDER
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.autosave)
        self.timer.start()
        self._saved_index = None

    def stop(self) -> None:
        """No more autosaves (the window is closing)."""
        self.timer.stop()

    def path(self) -> Path:
        return recovery_path(self.folder, self.ctl.design.path)

    def autosave(self) -> Path | None:
        """Write the recovery file if the design changed since the last autosave."""
        if not self.ctl.modified or self._saved_index == self.ctl.undo_stack.index():
            return None
        target = self.path()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(target, recovery_text(self.ctl.design))
        except (DesignError, OSError) as e:
            self.failed.emit(f"autosave failed: {e.line() if isinstance(e, DesignError) else e}")
            return None
        self._saved_index = self.ctl.undo_stack.index()
        self.saved.emit(str(target))
        return target

    def discard(self, design_path: Path | None = None) -> None:
        """Remove the recovery file (after a save or a normal close)."""
        target = recovery_path(self.folder, design_path) if design_path is not None else self.path()
        target.unlink(missing_ok=True)
        self._saved_index = None
