"""The diff of two designs, side by side: design A on the left, B on the right, each laid out in layers;
removed nodes red (in A), added green (in B), changed amber (in both), each with its cost delta; below,
the list of differences and the totals. The matching and the deltas come from `ir.diff`."""

from __future__ import annotations

from PyQt6.QtCore import QPointF, Qt
from PyQt6.QtGui import QColor, QFont, QPainter
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from convstudio.designer.cli.common import human, signed
from convstudio.designer.gui import theme
from convstudio.designer.gui.dialogs.common import ToolDialog
from convstudio.designer.gui.edge_item import EdgeItem
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH, layered_layout
from convstudio.designer.gui.node_item import NodeItem, compact
from convstudio.ir.diff import DesignDiff, diff
from convstudio.ir.graph import Graph, parse_ref

STATUS_FILL = {"added": QColor(198, 239, 198), "removed": QColor(248, 200, 200), "changed": QColor(255, 224, 150)}
STATUS_WORD = {"added": "added", "removed": "removed", "changed": "changed"}
SIDE_GAP = 260.0
TITLE_FONT = QFont("Sans Serif", 14, QFont.Weight.Bold)


def delta_text(d) -> str:
    """'Δ -32.8 k params · -103 M MACs' (zeros left out; the FLOPs when both are zero; 'no cost change' when all are)."""
    terms = [(d.params, "params"), (d.macs, "MACs")]
    if not (d.params or d.macs):
        terms = [(d.flops, "FLOPs")]
    parts = [f"{'+' if v > 0 else '-'}{compact(abs(v))} {unit}" for v, unit in terms if v]
    return "Δ " + " · ".join(parts) if parts else "no cost change"


class DiffScene(QGraphicsScene):
    """Both designs' nodes and edges, coloured by what the diff says about each."""

    def __init__(self, result: DesignDiff, label_a: str, label_b: str, parent=None):
        super().__init__(parent)
        self.result = result
        self.items_a: dict[str, NodeItem] = {}
        self.items_b: dict[str, NodeItem] = {}
        status_a = {d.a: d for d in result.nodes if d.a}
        status_b = {d.b: d for d in result.nodes if d.b}
        width = self._draw(result.graph_a, status_a, 0.0, self.items_a, label_a)
        self._draw(result.graph_b, status_b, width + SIDE_GAP, self.items_b, label_b)
        self.setSceneRect(self.itemsBoundingRect().adjusted(-60, -60, 60, 60))

    def _draw(self, graph: Graph, status: dict, x0: float, items: dict, title: str) -> float:
        """Draw `graph` with its left edge at `x0`; returns the width it took."""
        layout = layered_layout(graph)
        positions = layout.positions
        left = min((x for x, _ in positions.values()), default=0.0)
        dx = x0 - left
        for name, node in graph.nodes.items():
            item = NodeItem(name)
            item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, False)
            x, y = positions[name]
            item.setPos(x + dx, y)
            item.sync(node, 0.0)
            item.setToolTip(item.toolTip())  # this scene shows the tooltips set on items
            d = status.get(name)
            if d is not None and d.status in STATUS_FILL:
                item.fill = STATUS_FILL[d.status]
                item.texts[3] = delta_text(d)
                item.lines = []
                tip = [f"<b>{STATUS_WORD[d.status]}</b>: {delta_text(d)}"] + d.changes
                item.setToolTip(item.toolTip() + "<br>" + "<br>".join(tip))
            self.addItem(item)
            items[name] = item

        def route(dst: str, index: int):
            points = layout.routes.get((dst, index))
            return [(px + dx, py) for px, py in points] if points else None

        for name, node in graph.nodes.items():
            for index, ref in enumerate(node.inputs):
                if ref is not None:
                    src, out = parse_ref(ref)
                    self.addItem(EdgeItem(items[src], out, items[name], index, route))
        label = QGraphicsSimpleTextItem(title)
        label.setFont(TITLE_FONT)
        label.setPos(x0, min((y for _, y in positions.values()), default=0.0) - 48)
        self.addItem(label)
        right = max((x + dx + NODE_WIDTH for x, _ in positions.values()), default=x0)
        return right - x0


class DiffView(QGraphicsView):
    """The diff's canvas: drag to pan, the wheel zooms."""

    def wheelEvent(self, event) -> None:
        factor = 1.15 ** (event.angleDelta().y() / 120)
        scale = self.transform().m11() * factor
        if 0.02 <= scale <= 4.0:
            self.scale(factor, factor)


class DiffDialog(ToolDialog):
    """Two designs side by side with their differences coloured, the list of differences and the totals."""

    def __init__(self, window, result: DesignDiff, label_a: str, label_b: str):
        super().__init__(window)
        self.setWindowTitle(f"Diff: {label_a} → {label_b}")
        self.result = result
        self.scene = DiffScene(result, f"A: {label_a}", f"B: {label_b}", self)
        self.view = DiffView(self.scene)
        self.view.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.view.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.view.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.view.setBackgroundBrush(theme.active().canvas)
        counts = result.counts()
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setText(
            f"<span style='background:#c6efc6'>&nbsp;{counts['added']} added&nbsp;</span> "
            f"<span style='background:#f8c8c8'>&nbsp;{counts['removed']} removed&nbsp;</span> "
            f"<span style='background:#ffe096'>&nbsp;{counts['changed']} changed&nbsp;</span> "
            f"&nbsp; {counts['same']} unchanged &nbsp;·&nbsp; " + " &nbsp; ".join(self.total_texts())
            + f" &nbsp; <i>(per sample, {result.convention})</i>")
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.fill_table()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(self.table)
        split.setSizes([560, 200])
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        self.resize(1400, 900)
        self.table.itemSelectionChanged.connect(self._on_row)

    def total_texts(self) -> list[str]:
        """One 'Params 11.69 M → 1.95 M (-9.74 M, -83.3%)' per metric."""
        out = []
        for key, title in (("params", "Params"), ("macs", "MACs"), ("flops", "FLOPs")):
            a, b = self.result.total_a[key], self.result.total_b[key]
            pct = f", {100 * (b - a) / a:+.1f}%" if a else ""
            out.append(f"<b>{title}</b> {human(a)} → {human(b)} ({signed(b - a, human)}{pct})")
        return out

    def rows(self) -> list:
        return [d for d in self.result.nodes if d.status != "same"]

    def fill_table(self) -> None:
        rows = self.rows()
        headers = ("Status", "Node", "Op", "Δ params", "Δ MACs", "Δ FLOPs", "What changed")
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(rows))
        for r, d in enumerate(rows):
            name = d.b if d.a in (None, d.b) else f"{d.a} → {d.b}" if d.b else d.a
            cells = (d.status, name, d.op, signed(d.params, human), signed(d.macs, human), signed(d.flops, human), "; ".join(d.changes))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setBackground(STATUS_FILL[d.status])
                if 3 <= c <= 5:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

    def _on_row(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            d = self.rows()[rows[0].row()]
            item = self.scene.items_b.get(d.b) if d.b else self.scene.items_a.get(d.a)
            if item is not None:
                self.view.centerOn(item.pos() + QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2))

    def fit(self) -> None:
        """Show both designs whole, but never larger than life."""
        self.view.fitInView(self.scene.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        if self.view.transform().m11() > 1.0:
            self.view.resetTransform()


def open_diff(parent, a: Graph, b: Graph, label_a: str, label_b: str, convention: str = "flops") -> DiffDialog:
    """Diff design `a` against `b` and show it in a dialog of `parent` (None: a window of its own)."""
    dialog = DiffDialog(parent, diff(a, b, convention), label_a, label_b)
    dialog.show()
    dialog.fit()
    return dialog
