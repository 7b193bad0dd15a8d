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
DESCRIBED = 4  # the rank of an entry found only in its description
NO_MATCH = 5  # the rank of an entry (or section) that does not match
DESCRIBED_TITLE = "Found in descriptions"


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
        self.sections = palette_sections()
        self.filter("")
        self.search.textChanged.connect(self.filter)

    def _section(self, title: str) -> QTreeWidgetItem:
        group = QTreeWidgetItem(self.tree, [title])
        group.setFlags(group.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
        return group

    @staticmethod
    def _entry(group: QTreeWidgetItem, kind: str, name: str, tip: str, hidden: bool) -> None:
        item = QTreeWidgetItem(group, [name])
        item.setData(0, ROLE, (kind, name))
        item.setToolTip(0, tip)
        item.setHidden(hidden)

    def entries(self) -> list[tuple[str, str]]:
        """Every (kind, name) the palette offers."""
        found = []
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            found.extend(group.child(i).data(0, ROLE) for i in range(group.childCount()))
        return found

    def visible_entries(self) -> list[tuple[str, str]]:
        """The (kind, name) entries shown now, top to bottom."""
        shown = []
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            if not group.isHidden():
                shown.extend(group.child(i).data(0, ROLE) for i in range(group.childCount()) if not group.child(i).isHidden())
        return shown

    def item_for(self, kind: str, name: str) -> QTreeWidgetItem | None:
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            for i in range(group.childCount()):
                if group.child(i).data(0, ROLE) == (kind, name):
                    return group.child(i)
        return None

    def filter(self, text: str) -> None:
        """Show the entries whose name, section or description contains `text` (case-insensitive), name matches
        first: in each section the exact name, then names starting with it, then names containing it, sections in
        the order of their best match; entries found only in their description follow in a section of their own."""
        needle = text.strip().lower()
        homes, described = [], []
        for order, (title, entries) in enumerate(self.sections):
            section_hit = bool(needle) and needle in title.lower()
            ranked = []
            for kind, name, tip in entries:
                rank = match_rank(needle, name, tip, section_hit)
                if rank == DESCRIBED:
                    described.append((kind, name, tip))
                else:
                    ranked.append((NO_MATCH if rank is None else rank, kind, name, tip))
            if needle:
                ranked.sort(key=lambda row: (row[0], row[2].lower()))
            homes.append((min((row[0] for row in ranked), default=NO_MATCH), order, title, ranked))
        if needle:
            homes.sort(key=lambda home: home[:2])
        self.tree.clear()
        for best, _, title, ranked in homes:
            group = self._section(title)
            for rank, kind, name, tip in ranked:
                self._entry(group, kind, name, tip, rank == NO_MATCH)
            group.setHidden(best == NO_MATCH)
        if described:
            group = self._section(DESCRIBED_TITLE)
            for kind, name, tip in sorted(described, key=lambda row: row[1].lower()):
                self._entry(group, kind, name, tip, False)
        self.tree.expandAll()


def palette_sections() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(section title, [(kind, name, description)]) in the order the palette lists them."""
    sections = []
    for category in sorted(registry.CATEGORIES, key=CATEGORY_ORDER.index):
        if category in CATEGORY_TITLES:
            ops = sorted(registry.CATEGORIES[category])
            sections.append((CATEGORY_TITLES[category], [("op", op, registry.get(op).doc or op) for op in ops]))
    for title, kind, table in (("Templates", "template", TEMPLATES), ("Blocks", "block", BLOCKS)):
        sections.append((title, [(kind, name, table[name].description) for name in sorted(table)]))
    return sections


def match_rank(needle: str, name: str, description: str, section_hit: bool) -> int | None:
    """How well an entry matches the search: 0 the exact name, 1 a name starting with it, 2 a name containing it,
    3 its section's title, DESCRIBED only its description; None when it does not match (all match an empty search)."""
    name = name.lower()
    if not needle or name == needle:
        return 0
    if name.startswith(needle):
        return 1
    if needle in name:
        return 2
    if section_hit:
        return 3
    if needle in description.lower():
        return DESCRIBED
    return None
