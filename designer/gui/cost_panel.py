"""The cost panel: totals with a convention selector and batch size, a sortable per-layer table and
a pyqtgraph bar chart of the most expensive layers. Rows and nodes select each other.

Latency sits beside the counts: "pred. ms" from the controller's latency model (the analyzer computes it per
node as it refreshes), "meas. ms" from the last Profile run, blank for a layer changed since it was measured."""

from __future__ import annotations

import heapq
from dataclasses import replace

import pyqtgraph as pg
from PyQt6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt, pyqtSignal
from PyQt6.QtGui import QFont, QFontMetrics
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
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

from convstudio.backends.roofline import machine_id
from convstudio.designer.cli.common import human, human_bytes
from convstudio.designer.gui import theme
from convstudio.designer.gui.charts import close_chart
from convstudio.designer.gui.controller import HEATMAP_METRICS
from convstudio.designer.gui.messages import for_people
from convstudio.designer.gui.node_item import scope, shapes_text
from convstudio.ir.cost import CONVENTIONS
from convstudio.ir.groups import members, outermost, rollup

COLUMNS = ("Node", "Op", "Output", "Params", "MACs", "FLOPs", "Activation", "pred. ms", "meas. ms")
PREDICTED, MEASURED = 7, 8
CALIBRATE_HINT = "calibrate one with Tools > Profile > Calibrate model, or run `convstudio profile --calibrate`"
SORT_ROLE = Qt.ItemDataRole.UserRole
TOP_LAYERS = 10
LABEL_WIDTH = 220  # widest layer name on the chart's axis, in pixels; longer names are elided in the middle


class CostTableModel(QAbstractTableModel):
    """One row per node of the current CostReport."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
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

    def measured_changed(self) -> None:
        """The measured column and its header tooltip follow a new profile."""
        if self.rows:
            self.dataChanged.emit(self.index(0, MEASURED), self.index(len(self.rows) - 1, MEASURED))
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, MEASURED, MEASURED)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole and section in (PREDICTED, MEASURED):
            return predicted_tip(self.ctl) if section == PREDICTED else measured_tip(self.ctl)
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        c = self.rows[index.row()]
        col = index.column()
        if col >= PREDICTED:
            return self._latency_data(c, col, role)
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
                return shapes_text(c.shapes, f"{self.ctl.batch}×" if self.ctl.batch else "") if c.shapes else "?"
            if not c.shapes:
                return "?"
            if col == 6:
                return human_bytes(numbers[col])
            return human(numbers[col])
        if role == Qt.ItemDataRole.ToolTipRole:
            return for_people(c.error) or (f"{c.formula}" if c.formula else None)
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 3:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ForegroundRole and c.error:
            return pg.mkColor(200, 30, 30)
        return None

    def _latency_data(self, c, col: int, role):
        ms = c.latency_ms if col == PREDICTED else self._measured_ms(c.name)
        if role == SORT_ROLE:
            return ms if ms is not None else -1.0
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{ms:.3f}" if ms is not None else ""
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        return None


    def _measured_ms(self, name: str) -> float | None:
        """A node's measured ms; a folded group's: the sum over its members when each of them was measured."""
        measured, graph = self.ctl.measured, self.ctl.graph
        if name in measured or name in graph.nodes or name not in graph.groups:
            return measured.get(name)
        times = [measured.get(m) for m in members(graph.groups, name)]
        return None if None in times else sum(times)


def predicted_tip(ctl) -> str:
    """What the predicted column shows, or how to get a latency model."""
    model = ctl.latency_model
    if model is None:
        return f"Predicted latency: no latency model for this machine yet; {CALIBRATE_HINT}"
    elsewhere = f"; it was calibrated on another machine ({model.machine}): {CALIBRATE_HINT}" if model.machine != machine_id() else ""
    return (f"Predicted by the latency model for {model.runtime} on {model.provider} ({model.threads or 'default'} threads), "
            f"at batch {ctl.batch or 1}, without running the design{elsewhere}")


def measured_tip(ctl) -> str:
    """What the measured column shows, or how to fill it."""
    p = ctl.profile
    if p is None:
        return "Measured latency: Tools > Profile measures the design on ONNX Runtime or PyTorch and fills this column"
    return (f"Measured by Tools > Profile on {p.runtime} {p.provider}, batch {p.batch}: each layer's mean over the middle runs; "
            "blank for a layer changed since")


def latency_totals(ctl, report) -> str:
    """The totals line's latency part: predicted end to end, measured median end to end."""
    predicted = f"pred. {report.total.latency_ms:.3f} ms" if report.total.latency_ms is not None else "pred. needs a latency model"
    p = ctl.profile
    if p is None:
        return f"<b>Latency</b> {predicted}"
    stale = " (before the last edits)" if ctl.profile_stale else ""
    return f"<b>Latency</b> {predicted} · meas. {p.end_to_end['median']:.3f} ms{stale}"


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
        self.heatmap.setToolTip("What the node tint shows; latency: measured ms where profiled, else predicted")
        top = QHBoxLayout()
        top.addWidget(self.totals, 1)
        top.addWidget(QLabel("Convention"))
        top.addWidget(self.convention)
        top.addWidget(self.batch)
        top.addWidget(QLabel("Tint by"))
        top.addWidget(self.heatmap)
        self.by_group = QCheckBox("By group")
        self.by_group.setToolTip("One row per top-level group (its layers summed) and per node outside any group")

        self.model = CostTableModel(controller, self)
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
        for col, width in enumerate((130, 80, 90, 70, 70, 70, 80, 65, 65)):
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
        self.restyle()

        split = QSplitter(Qt.Orientation.Horizontal)
        table_side = QWidget()
        table_column = QVBoxLayout(table_side)
        table_column.setContentsMargins(0, 0, 0, 0)
        table_column.setSpacing(2)
        table_column.addWidget(self.by_group)
        table_column.addWidget(self.table, 1)
        split.addWidget(table_side)
        split.addWidget(self.chart)
        split.setSizes([740, 320])
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
        controller.measured_changed.connect(self._on_measured)
        controller.heatmap_changed.connect(self._on_heatmap)
        self.by_group.toggled.connect(self._on_by_group)
        if controller.report is not None:
            self.show_report(controller.report)

    def restyle(self) -> None:
        """The chart in the theme's colours (light or dark, as the palette)."""
        colours = theme.active()
        self.chart.setBackground(colours.node)
        for side in ("left", "bottom"):
            self.chart.getAxis(side).setTextPen(colours.text)
            self.chart.getAxis(side).setPen(colours.subtext)
        self.chart.getPlotItem().titleLabel.setText("Most expensive layers", size="9pt", color=colours.text.name())

    def shut_down(self) -> None:
        """Stop following the controller and take the chart down (the window is closing)."""
        self.ctl.report_changed.disconnect(self.show_report)
        self.ctl.selection_changed.disconnect(self.select_rows)
        self.ctl.measured_changed.disconnect(self._on_measured)
        self.ctl.heatmap_changed.disconnect(self._on_heatmap)
        close_chart(self.chart)

    def _on_convention(self, *_args) -> None:
        self.ctl.set_convention(self.convention.currentText(), self.batch.value() or None)

    def _on_heatmap(self, metric: str) -> None:
        self.heatmap.blockSignals(True)  # the controller has it already
        self.heatmap.setCurrentText(metric)
        self.heatmap.blockSignals(False)

    def _on_measured(self) -> None:
        self.model.measured_changed()
        if self.ctl.report is not None:
            self._show_totals(self.ctl.report)

    def _on_by_group(self, _on: bool) -> None:
        if self.ctl.report is not None:
            self.show_report(self.ctl.report)

    def show_report(self, report) -> None:
        self._show_totals(report)
        if self.by_group.isChecked() and self.ctl.graph.groups:
            report = replace(report, nodes=rollup(self.ctl.graph, self.ctl.graph.groups, list(report.nodes)))
        self._syncing = True
        self.model.set_report(report)
        self._syncing = False
        self._draw_chart(report)
        self.select_rows(self.ctl.selection)

    def _show_totals(self, report) -> None:
        t = report.total
        scope = f"batch {report.batch}" if report.batch else "per sample"
        self.totals.setText(
            f"<b>Params</b> {human(t.params)} &nbsp; <b>MACs</b> {human(t.macs)} &nbsp; "
            f"<b>FLOPs</b> {human(t.flops)} &nbsp; <b>Activations</b> {human_bytes(t.activation_bytes)} &nbsp; "
            f"<b>Peak</b> {human_bytes(t.peak_activation_bytes)} &nbsp; {latency_totals(self.ctl, report)} &nbsp; "
            f"<i>({scope}, {report.convention})</i>"
            + (f" &nbsp; <span style='color:#c81e1e'>{len(report.errors)} error(s); totals leave out nodes without shapes</span>"
               if report.errors else "")
            + (f" &nbsp; <span style='color:#c81e1e'>{len(report.share_errors)} node(s) cannot share their group's parameters</span>"
               if report.share_errors else "")
        )
        self.totals.setToolTip(
            f"params {t.params:,}\nMACs {t.macs:,}\nFLOPs {t.flops:,}\n"
            f"activations {t.activation_bytes:,} B\npeak {t.peak_activation_bytes:,} B\n"
            f"{predicted_tip(self.ctl)}\n{measured_tip(self.ctl)}"
        )

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
        self.chart.getPlotItem().setLabel("bottom", f"{report.convention} convention, {scope(report.batch)}", units="FLOP")
        if top:
            self.chart.setXRange(0, top[-1].flops * 1.05, padding=0)
            self.chart.setYRange(-0.6, len(top) - 0.4, padding=0)

    def _on_row_selected(self, *_args) -> None:
        if self._syncing:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows:
            name = self.model.rows[self.proxy.mapToSource(rows[0]).row()].name
            groups = self.ctl.graph.groups
            self.ctl.select(members(groups, name) if name in groups and name not in self.ctl.graph.nodes else [name])
            self.node_activated.emit(name)

    def select_rows(self, names: list[str]) -> None:
        self._syncing = True
        selection = self.table.selectionModel()
        selection.clearSelection()
        if names:
            grouped = self.by_group.isChecked() and self.ctl.graph.groups
            row = self.model.row_of((outermost(self.ctl.graph.groups, names[0]) if grouped else None) or names[0])
            if row >= 0:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
                selection.select(index, flags)
                self.table.scrollTo(index)
        self._syncing = False
