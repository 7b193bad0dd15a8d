"""The cost panel: totals with a convention selector and batch size, a sortable per-layer table and
a pyqtgraph bar chart of the most expensive layers. Rows and nodes select each other."""

from __future__ import annotations

import heapq

import pyqtgraph as pg
from PyQt6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt, pyqtSignal
from PyQt6.QtGui import QFont, QFontMetrics
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from convstudio.designer.cli.common import human, human_bytes
from convstudio.designer.gui.charts import close_chart
from convstudio.designer.gui.controller import HEATMAP_METRICS
from convstudio.designer.gui.node_item import shapes_text
from convstudio.ir.cost import CONVENTIONS

COLUMNS = ("Node", "Op", "Output", "Params", "MACs", "FLOPs", "Activation")
SORT_ROLE = Qt.ItemDataRole.UserRole
TOP_LAYERS = 10
LABEL_WIDTH = 220  # widest layer name on the chart's axis, in pixels; longer names are elided in the middle


class CostTableModel(QAbstractTableModel):
    """One row per node of the current CostReport."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows = []

    def set_report(self, report) -> None:
        names = [c.name for c in report.nodes]
        if names == [c.name for c in self.rows]:
            self.rows = list(report.nodes)
            if self.rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.rows = list(report.nodes)
        self.endResetModel()

    def row_of(self, name: str) -> int:
        for i, c in enumerate(self.rows):
            if c.name == name:
                return i
        return -1

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        c = self.rows[index.row()]
        col = index.column()
        numbers = (None, None, None, c.params, c.macs, c.flops, c.activation_bytes)
        if role == SORT_ROLE:
            return numbers[col] if numbers[col] is not None else (c.name, c.op, str(c.shapes))[col]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return c.name
            if col == 1:
                return c.op
            if col == 2:
                if c.error:
                    return "error"
                return shapes_text(c.shapes) if c.shapes else "?"
            if not c.shapes:
                return "?"
            if col == 6:
                return human_bytes(numbers[col])
            return human(numbers[col])
        if role == Qt.ItemDataRole.ToolTipRole:
            return c.error or (f"{c.formula}" if c.formula else None)
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 3:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ForegroundRole and c.error:
            return pg.mkColor(200, 30, 30)
        return None


class CostPanel(QWidget):
    """Totals, per-layer table and top-layers chart of the controller's current report."""

    node_activated = pyqtSignal(str)

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.totals = QLabel()
        self.totals.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.totals.setWordWrap(True)
        self.totals.setMinimumWidth(160)
        self.totals.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.convention = QComboBox()
        self.convention.addItems(CONVENTIONS)
        self.convention.setToolTip("flops: all arithmetic · torchvision: MACs · fvcore: what fvcore counts")
        self.batch = QSpinBox()
        self.batch.setRange(0, 1 << 20)
        self.batch.setSpecialValueText("per sample")
        self.batch.setPrefix("batch ")
        self.heatmap = QComboBox()
        self.heatmap.addItems(HEATMAP_METRICS)
        self.heatmap.setToolTip("What the node tint shows")
        top = QHBoxLayout()
        top.addWidget(self.totals, 1)
        top.addWidget(QLabel("Convention"))
        top.addWidget(self.convention)
        top.addWidget(self.batch)
        top.addWidget(QLabel("Tint by"))
        top.addWidget(self.heatmap)

        self.model = CostTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((150, 90, 110, 80, 80, 80, 90)):
            self.table.setColumnWidth(col, width)

        self.chart = pg.PlotWidget(background="w")
        self.chart.setMenuEnabled(False)
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.getPlotItem().setTitle("Most expensive layers", size="9pt")
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.6, width=[], brush=pg.mkBrush(244, 140, 66))
        self.chart.addItem(self.bars)
        self.label_font = QFont(self.font())
        self.chart.getAxis("left").setStyle(tickFont=self.label_font)
        for side in ("left", "bottom"):
            self.chart.getAxis(side).setTextPen("#333")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.chart)
        split.setSizes([640, 420])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        self._syncing = False
        self.top_layers: list[str] = []
        self.convention.currentTextChanged.connect(self._on_convention)
        self.batch.valueChanged.connect(self._on_convention)
        self.heatmap.currentTextChanged.connect(controller.set_heatmap)
        self.table.selectionModel().selectionChanged.connect(self._on_row_selected)
        controller.report_changed.connect(self.show_report)
        controller.selection_changed.connect(self.select_rows)
        if controller.report is not None:
            self.show_report(controller.report)

    def shut_down(self) -> None:
        """Stop following the controller and take the chart down (the window is closing)."""
        self.ctl.report_changed.disconnect(self.show_report)
        self.ctl.selection_changed.disconnect(self.select_rows)
        close_chart(self.chart)

    def _on_convention(self, *_args) -> None:
        self.ctl.set_convention(self.convention.currentText(), self.batch.value() or None)

    def show_report(self, report) -> None:
        t = report.total
        scope = f"batch {report.batch}" if report.batch else "per sample"
        self.totals.setText(
            f"<b>Params</b> {human(t.params)} &nbsp; <b>MACs</b> {human(t.macs)} &nbsp; "
            f"<b>FLOPs</b> {human(t.flops)} &nbsp; <b>Activations</b> {human_bytes(t.activation_bytes)} &nbsp; "
            f"<b>Peak</b> {human_bytes(t.peak_activation_bytes)} &nbsp; <i>({scope}, {report.convention})</i>"
            + (f" &nbsp; <span style='color:#c81e1e'>{len(report.errors)} error(s); totals leave out nodes without shapes</span>"
               if report.errors else "")
        )
        self.totals.setToolTip(
            f"params {t.params:,}\nMACs {t.macs:,}\nFLOPs {t.flops:,}\n"
            f"activations {t.activation_bytes:,} B\npeak {t.peak_activation_bytes:,} B"
        )
        self._syncing = True
        self.model.set_report(report)
        self._syncing = False
        self._draw_chart(report)
        self.select_rows(self.ctl.selection)

    def _draw_chart(self, report) -> None:
        top = heapq.nlargest(TOP_LAYERS, (c for c in report.nodes if c.flops > 0), key=lambda c: c.flops)
        self.top_layers = [c.name for c in top]
        top.reverse()
        self.bars.setOpts(x0=[0] * len(top), y=list(range(len(top))), width=[c.flops for c in top], height=0.6)
        metrics = QFontMetrics(self.label_font)
        labels = [metrics.elidedText(c.name, Qt.TextElideMode.ElideMiddle, LABEL_WIDTH) for c in top]
        axis = self.chart.getAxis("left")
        axis.setWidth(max((metrics.horizontalAdvance(text) for text in labels), default=40) + 20)
        axis.setTicks([list(enumerate(labels))])
        self.chart.getPlotItem().setLabel("bottom", f"{report.convention} convention", units="FLOP")
        if top:
            self.chart.setXRange(0, top[-1].flops * 1.05, padding=0)
            self.chart.setYRange(-0.6, len(top) - 0.4, padding=0)

    def _on_row_selected(self, *_args) -> None:
        if self._syncing:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows:
            name = self.model.rows[self.proxy.mapToSource(rows[0]).row()].name
            self.ctl.select([name])
            self.node_activated.emit(name)

    def select_rows(self, names: list[str]) -> None:
        self._syncing = True
        selection = self.table.selectionModel()
        selection.clearSelection()
        if names:
            row = self.model.row_of(names[0])
            if row >= 0:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
                selection.select(index, flags)
                self.table.scrollTo(index)
        self._syncing = False
