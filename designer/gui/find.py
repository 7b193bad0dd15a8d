"""The find bar (Ctrl+F): a query (see convstudio.ir.query) and a walk through its hits, each selected and centred."""

from __future__ import annotations

from PyQt6.QtCore import QEvent, Qt
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QToolButton, QWidget

from convstudio.designer.gui.canvas import READABLE_SCALE
from convstudio.designer.gui.node_item import DETAIL_THRESHOLD
from convstudio.ir.groups import visible_owner
from convstudio.ir.query import find_nodes


class FindBar(QWidget):
    """A bar above the canvas: type a query, Enter/F3 for the next hit, Shift+Enter/Shift+F3 for the previous, Escape closes.

    Each hit is selected and centred in the view; the bar counts "3 of 17"."""

    def __init__(self, view, parent=None):
        super().__init__(parent)
        self.view = view
        self.ctl = view.ctl
        self.hits: list[str] = []
        self.current = -1
        self.field = QLineEdit()
        self.field.setPlaceholderText("Find nodes: conv, op:BatchNorm2d, kernel_size=3")
        self.field.setClearButtonEnabled(True)
        self.field.installEventFilter(self)
        self.count = QLabel()
        self.count.setMinimumWidth(90)
        self.previous_button = QToolButton()
        self.previous_button.setText("▲")
        self.previous_button.setToolTip("Previous hit (Shift+F3)")
        self.next_button = QToolButton()
        self.next_button.setText("▼")
        self.next_button.setToolTip("Next hit (F3)")
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Close (Escape)")
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 3, 8, 3)
        row.addWidget(QLabel("Find"))
        row.addWidget(self.field, 1)
        row.addWidget(self.count)
        row.addWidget(self.previous_button)
        row.addWidget(self.next_button)
        row.addWidget(self.close_button)
        self.field.textChanged.connect(self._on_text)
        self.previous_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        self.close_button.clicked.connect(self.close_bar)
        self.ctl.graph_changed.connect(self._on_graph_changed)
        self.hide()

    def open(self) -> None:
        """Show the bar with its text selected, ready to type."""
        self.show()
        self.field.setFocus()
        self.field.selectAll()

    def close_bar(self) -> None:
        self.hide()
        self.view.setFocus()

    def eventFilter(self, watched, event) -> bool:
        if watched is self.field and event.type() == QEvent.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                    self.previous()
                else:
                    self.next()
                return True
            if event.key() == Qt.Key.Key_Escape:
                self.close_bar()
                return True
        return super().eventFilter(watched, event)

    def search(self, query: str) -> list[str]:
        """Set the query and go to its first hit; returns the hits."""
        if self.field.text() != query:
            self.field.setText(query)  # searches through _on_text
        else:
            self._on_text(query)
        return self.hits

    def _on_text(self, text: str) -> None:
        self.hits = find_nodes(self.ctl.graph, text)
        self.current = -1
        if self.hits:
            self.next()
        else:
            self._show_count()

    def _on_graph_changed(self, _change) -> None:
        if self.isVisible() and self.field.text().strip():
            self._refresh_hits()

    def _refresh_hits(self) -> None:
        """Keep the hits (and the current one, when it survives) true to the edited graph."""
        name = self.hits[self.current] if 0 <= self.current < len(self.hits) else None
        self.hits = find_nodes(self.ctl.graph, self.field.text())
        self.current = self.hits.index(name) if name in self.hits else -1
        self._show_count()

    def next(self) -> str | None:
        return self._step(1)

    def previous(self) -> str | None:
        return self._step(-1)

    def _step(self, direction: int) -> str | None:
        """Go to the next (1) or previous (-1) hit, wrapping around; opens the bar when nothing has been searched yet."""
        if not self.field.text().strip():
            self.open()
            return None
        if not self.isVisible():  # F3 after Escape: the bar comes back, its hits brought up to date
            self.show()
            self._refresh_hits()
        if not self.hits:
            self._show_count()
            return None
        if self.current < 0:
            self.current = 0 if direction > 0 else len(self.hits) - 1
        else:
            self.current = (self.current + direction) % len(self.hits)
        name = self.hits[self.current]
        self.ctl.select([name])
        if self.view.zoom() < DETAIL_THRESHOLD:
            self.view.set_zoom(READABLE_SCALE)  # a hit too small to read its text is no help
        owner = visible_owner(self.ctl.graph.groups, name)
        folded = self.view.scene().folds.items.get(owner) if owner else None
        if folded is not None:  # a hit inside a folded group: show the group drawn in its place
            self.view.centerOn(folded.sceneBoundingRect().center())
        else:
            self.view.centre_on_node(name)
        self._show_count(owner)
        return name

    def _show_count(self, folded_in: str | None = None) -> None:
        if not self.field.text().strip():
            self.count.setText("")
        elif not self.hits:
            self.count.setText("no match")
        elif self.current < 0:
            self.count.setText(f"{len(self.hits)} hits")
        else:
            self.count.setText(f"{self.current + 1} of {len(self.hits)}" + (f" (in folded {folded_in})" if folded_in else ""))
        self.field.setStyleSheet("QLineEdit { background: #fde2e2; }" if self.field.text().strip() and not self.hits else "")
