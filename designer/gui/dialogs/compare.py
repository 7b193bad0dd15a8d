"""Compare designs: the current one, files opened from disk and variants of the current design (fused,
each strategy applied everywhere), side by side as in `convstudio compare`.

The table holds the totals with deltas against the first design; the grouped bar chart (pyqtgraph
BarGraphItem) shows the breakdown by op category of `ir.passes.compare.compare`.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from convstudio.designer.cli.common import human, load_design
from convstudio.designer.cli.verb_compare import variant
from convstudio.designer.gui.dialogs.common import METRIC_ROWS, StatusLabel, ToolDialog, error_line
from convstudio.designer.gui.diff_view import open_diff
from convstudio.ir.cost import CONVENTIONS
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compare import BREAKDOWN_METRICS
from convstudio.ir.passes.compare import compare as compare_graphs
from convstudio.ir.passes.compress import STRATEGIES

DESIGN_FILTER = "ConvStudio designs (*.json);;All files (*)"
BAR_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")
METRIC_NAMES = {"flops": "FLOPs", "params": "params", "macs": "MACs"}


class HumanAxis(pg.AxisItem):
    """A value axis whose ticks read like the tables (12.5 k, 3.2 M)."""

    def tickStrings(self, values, scale, spacing):
        return [human(v * scale) for v in values]


def compare(window) -> CompareDialog:
    dialog = CompareDialog(window)
    dialog.show()
    return dialog


class CompareDialog(ToolDialog):
    """Designs to compare on the left; totals table and grouped bar chart on the right."""

    def __init__(self, window):
        super().__init__(window)
        self.setWindowTitle("Compare designs")
        self.ctl = window.ctl
        self.base_label = self.ctl.design.name
        self.base_graph = self.ctl.graph.copy()
        self.graphs: dict[str, Graph] = {self.base_label: self.base_graph}
        self.data: dict | None = None
        self.bar_items: list[pg.BarGraphItem] = []

        self.design_list = QListWidget()
        self.design_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.add_file_button = QPushButton("Add design file...")
        self.variant_box = QComboBox()
        self.variant_box.addItems(["fused", *STRATEGIES])
        self.variant_box.setToolTip("a variant of the current design: fused, or a strategy applied everywhere it applies")
        self.add_variant_button = QPushButton("Add variant")
        self.remove_button = QPushButton("Remove")
        self.diff_button = QPushButton("Show diff")
        self.diff_button.setToolTip("The baseline and the selected design (else the last one) side by side: added, removed and changed layers, cost deltas")
        self.diff_dialog = None
        self.convention_box = QComboBox()
        self.convention_box.addItems(CONVENTIONS)
        self.convention_box.setCurrentText(self.ctl.convention)
        self.metric_box = QComboBox()
        self.metric_box.addItems(BREAKDOWN_METRICS)
        self.metric_box.setCurrentText("flops")
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.chart = pg.PlotWidget(background="w", axisItems={"left": HumanAxis("left")})
        self.chart.getAxis("left").setWidth(64)
        self.chart.getAxis("left").enableAutoSIPrefix(False)
        self.chart.showGrid(y=True, alpha=0.3)
        self.chart.setMouseEnabled(x=False, y=False)
        self.status = StatusLabel()

        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(QLabel("Designs (the first is the baseline)"))
        column.addWidget(self.design_list, 1)
        column.addWidget(self.add_file_button)
        variant_row = QHBoxLayout()
        variant_row.addWidget(self.variant_box, 1)
        variant_row.addWidget(self.add_variant_button)
        column.addLayout(variant_row)
        column.addWidget(self.remove_button)
        column.addWidget(self.diff_button)
        options = QHBoxLayout()
        options.addWidget(QLabel("Convention"))
        options.addWidget(self.convention_box)
        options.addSpacing(16)
        options.addWidget(QLabel("Chart"))
        options.addWidget(self.metric_box)
        options.addStretch(1)
        results = QSplitter(Qt.Orientation.Vertical)
        results.addWidget(self.table)
        results.addWidget(self.chart)
        results.setSizes([190, 380])
        main = QWidget()
        right = QVBoxLayout(main)
        right.setContentsMargins(0, 0, 0, 0)
        right.addLayout(options)
        right.addWidget(results, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(side)
        split.addWidget(main)
        split.setSizes([240, 760])
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        self.resize(1040, 680)

        self.add_file_button.clicked.connect(lambda: self.add_file())
        self.add_variant_button.clicked.connect(lambda: self.add_variant(self.variant_box.currentText()))
        self.remove_button.clicked.connect(self.remove_selected)
        self.diff_button.clicked.connect(lambda: self.show_diff())
        self.convention_box.currentTextChanged.connect(lambda _text: self.refresh())
        self.metric_box.currentTextChanged.connect(lambda _text: self.draw_chart())
        self.refresh()

    # ---- the designs ------------------------------------------------------------------------
    def _unique(self, label: str) -> str:
        out, k = label, 2
        while out in self.graphs:
            out, k = f"{label} ({k})", k + 1
        return out

    def add_graph(self, label: str, graph: Graph) -> str:
        label = self._unique(label)
        self.graphs[label] = graph
        self.refresh()
        return label

    def add_file(self, path: str | None = None) -> str | None:
        """Add a design file (a file dialog asks when no path is given); returns its label."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Add a design to compare", "", DESIGN_FILTER)
            if not path:
                return None
        try:
            graph = load_design(path).graph
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return None
        return self.add_graph(graph.name, graph)

    def add_variant(self, name: str) -> str | None:
        """Add the current design fused, or with strategy `name` applied everywhere it applies."""
        try:
            graph = variant(self.base_graph, name)
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.status.show_error(error_line(e))
            return None
        return self.add_graph(f"{self.base_label}+{name}", graph)

    def remove_selected(self) -> None:
        for item in self.design_list.selectedItems():
            if len(self.graphs) > 1:
                del self.graphs[item.text()]
        self.refresh()

    def show_diff(self, label: str | None = None):
        """Open the diff of the baseline against design `label` (default: the selected one, else the last); returns the dialog."""
        labels = list(self.graphs)
        chosen = [item.text() for item in self.design_list.selectedItems() if item.text() != labels[0]]
        label = label or (chosen[0] if chosen else labels[-1])
        if label == labels[0]:
            self.status.show_error("add a file or a variant to diff against the baseline")
            return None
        try:
            self.diff_dialog = open_diff(self.parent(), self.graphs[labels[0]], self.graphs[label], labels[0], label,
                                         self.convention_box.currentText())
        except Exception as e:  # shown as one line; a failing analysis must not take the designer down
            self.status.show_error(error_line(e))
            return None
        return self.diff_dialog

    # ---- the results ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute the comparison and redraw the table and chart."""
        self.design_list.clear()
        self.design_list.addItems(list(self.graphs))
        try:
            self.data = compare_graphs(self.graphs, self.convention_box.currentText())
        except Exception as e:  # shown as one line; a failing pass must not take the designer down
            self.data = None
            self.status.show_error(error_line(e))
            self.table.clear()
            self.chart.clear()
            return
        n = len(self.graphs)
        self.status.show_info(f"{n} design{'s' if n != 1 else ''}; deltas against {self.data['labels'][0]}"
                              + ("" if n > 1 else "; add a file or a variant to compare"))
        self.fill_table()
        self.draw_chart()

    def fill_table(self) -> None:
        labels = self.data["labels"]
        self.table.clear()
        self.table.setRowCount(len(METRIC_ROWS))
        self.table.setColumnCount(len(labels))
        self.table.setHorizontalHeaderLabels(labels)
        self.table.setVerticalHeaderLabels([name for _, name, _ in METRIC_ROWS])
        for row, (key, _, fmt) in enumerate(METRIC_ROWS):
            for col, label in enumerate(labels):
                text = fmt(self.data["totals"][label][key])
                pct = self.data["deltas"][label]["totals"][key]["pct"]
                if col > 0 and pct is not None:
                    text += f"  ({pct:+.1f}%)"
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch if len(labels) <= 4 else QHeaderView.ResizeMode.ResizeToContents)

    def cell_text(self, key: str, label: str) -> str:
        row = [k for k, _, _ in METRIC_ROWS].index(key)
        return self.table.item(row, self.data["labels"].index(label)).text()

    def draw_chart(self) -> None:
        """Grouped bars: one group per op category present, one bar per design."""
        self.chart.clear()
        if self.data is None:
            return
        metric = self.metric_box.currentText()
        labels = self.data["labels"]
        breakdown = self.data["breakdown"]
        cats = [c for c in self.data["categories"] if any(breakdown[lb][c][metric] for lb in labels)]
        self.bar_items = []
        legend = self.chart.plotItem.legend or self.chart.addLegend(offset=(-10, 10), labelTextColor="#222")
        legend.clear()
        legend.setColumnCount(min(len(labels), 4))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(cats))]
            heights = [breakdown[label][c][metric] for c in cats]
            colour = BAR_COLOURS[i % len(BAR_COLOURS)]
            bars = pg.BarGraphItem(x=xs, height=heights, width=width * 0.95, brush=pg.mkBrush(colour), pen=pg.mkPen(colour), name=label)
            self.chart.addItem(bars)
            self.bar_items.append(bars)
        self.chart.getAxis("bottom").setTicks([[(k, c) for k, c in enumerate(cats)]])
        convention = f" (convention {self.data['convention']})" if metric == "flops" else ""
        self.chart.setTitle(f"{METRIC_NAMES[metric]} by op category{convention}", color="#333")
        top = max((breakdown[lb][c][metric] for lb in labels for c in cats), default=1) or 1
        self.chart.setRange(xRange=(-0.6, max(len(cats), 1) - 0.4), yRange=(0, top * (1.1 + 0.1 * math.ceil(len(labels) / 4))), padding=0)
        self.chart.setToolTip("\n".join(f"{c}: " + ", ".join(f"{lb} {human(breakdown[lb][c][metric])}" for lb in labels) for c in cats))
