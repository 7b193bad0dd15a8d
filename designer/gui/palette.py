"""The palette: every op by category, every template and block, filtered by a search box.

Dragging an entry starts a real QDrag carrying MIME_TYPE data "kind:name" (kind is op, template
or block); the canvas's drop handler turns it into an undoable command.
"""

from __future__ import annotations

from PyQt6.QtCore import QMimeData, Qt
from PyQt6.QtWidgets import QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from convstudio.ir.ops import registry
from convstudio.ir.templates import BLOCKS, TEMPLATES

MIME_TYPE = "application/x-convstudio-palette"
ROLE = Qt.ItemDataRole.UserRole


def encode_mime(kind: str, name: str) -> QMimeData:
    data = QMimeData()
    data.setData(MIME_TYPE, f"{kind}:{name}".encode())
    data.setText(name)
    return data


def decode_mime(data: QMimeData) -> tuple[str, str]:
    kind, _, name = bytes(data.data(MIME_TYPE)).decode().partition(":")
    return kind, name


# Palette sections in the order a network is usually built; opaque (imported, unmapped) ops are not offered.
CATEGORY_TITLES = {
    "io": "Input / Output",
    "conv": "Convolution",
    "normalization": "Normalization",
    "activation": "Activation",
    "pooling": "Pooling and resampling",
    "linear": "Linear",
    "elementwise": "Elementwise",
    "structure": "Structure",
}
CATEGORY_ORDER = [*CATEGORY_TITLES, "opaque"]


class PaletteTree(QTreeWidget):
    """The tree whose drags carry palette MIME data."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QTreeWidget.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def mimeTypes(self) -> list[str]:
        return [MIME_TYPE]

    def mimeData(self, items) -> QMimeData:
        entry = items[0].data(0, ROLE) if items else None
        if entry is None:
            return QMimeData()
        return encode_mime(*entry)


class Palette(QWidget):
    """Search box over a tree of ops (by category), templates and blocks."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search ops, templates, blocks")
        self.search.setClearButtonEnabled(True)
        self.tree = PaletteTree()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self._fill()
        self.search.textChanged.connect(self.filter)

    def _fill(self) -> None:
        for category in sorted(registry.CATEGORIES, key=CATEGORY_ORDER.index):
            if category not in CATEGORY_TITLES:
                continue
            group = QTreeWidgetItem(self.tree, [CATEGORY_TITLES[category]])
            group.setFlags(group.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
            for op in sorted(registry.CATEGORIES[category]):
                opdef = registry.get(op)
                item = QTreeWidgetItem(group, [op])
                item.setData(0, ROLE, ("op", op))
                item.setToolTip(0, opdef.doc or op)
        for title, kind, table in (("Templates", "template", TEMPLATES), ("Blocks", "block", BLOCKS)):
            group = QTreeWidgetItem(self.tree, [title])
            group.setFlags(group.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
            for name in sorted(table):
                item = QTreeWidgetItem(group, [name])
                item.setData(0, ROLE, (kind, name))
                item.setToolTip(0, table[name].description)
        self.tree.expandAll()

    def entries(self) -> list[tuple[str, str]]:
        """Every (kind, name) the palette offers."""
        found = []
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            found.extend(group.child(i).data(0, ROLE) for i in range(group.childCount()))
        return found

    def item_for(self, kind: str, name: str) -> QTreeWidgetItem | None:
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            for i in range(group.childCount()):
                if group.child(i).data(0, ROLE) == (kind, name):
                    return group.child(i)
        return None

    def filter(self, text: str) -> None:
        """Show entries whose name, category or description contains `text` (case-insensitive)."""
        needle = text.strip().lower()
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            group_hit = needle in group.text(0).lower()
            visible = 0
            for i in range(group.childCount()):
                child = group.child(i)
                hit = not needle or group_hit or needle in child.text(0).lower() or needle in child.toolTip(0).lower()
                child.setHidden(not hit)
                visible += hit
            group.setHidden(visible == 0)
