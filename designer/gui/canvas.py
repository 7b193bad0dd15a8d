"""The canvas: a QGraphicsScene mirroring the controller's graph and the view that shows it.

The scene never edits the graph: drops, connections, moves and deletions go to the controller as
commands, and the scene redraws from the controller's `graph_changed` notifications.
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QPainter, QPen
from PyQt6.QtWidgets import QGraphicsPathItem, QGraphicsScene, QGraphicsView

from convstudio.designer.gui.edge_item import EdgeItem, curve
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.designer.gui.node_item import DETAIL_THRESHOLD, NodeItem
from convstudio.designer.gui.palette import MIME_TYPE, decode_mime
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import make_ref, parse_ref

READABLE_SCALE = 0.85
HEAT_LEVELS = 20
METRIC_FIELDS = {"macs": "macs", "params": "params", "memory": "activation_bytes"}
MIN_SCALE = 0.02
MAX_SCALE = 4.0


class GraphScene(QGraphicsScene):
    """Node and edge items keyed by node name (edges by consumer and input index)."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self.nodes: dict[str, NodeItem] = {}
        self.edges: dict[tuple[str, int], EdgeItem] = {}
        self._metric_max = 1
        self._syncing = False
        self._wire: QGraphicsPathItem | None = None
        self._wire_from: tuple[str, int] | None = None
        self._press_positions: dict[str, tuple[float, float]] = {}
        self._lit_edges: set[EdgeItem] = set()
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        controller.graph_changed.connect(self.apply_change)
        controller.heatmap_changed.connect(lambda _metric: self.retint())
        controller.selection_changed.connect(self.show_selection)
        self.selectionChanged.connect(self._on_selection_changed)
        self.rebuild()

    # ---- mirroring the model ---------------------------------------------------------------
    def metric(self, name: str) -> float:
        """The heatmap value of node `name` (MACs, params or activation bytes)."""
        cost = self.ctl.analyzer.costs.get(name)
        return getattr(cost, METRIC_FIELDS[self.ctl.heatmap]) if cost is not None else 0

    def _heat(self, name: str) -> float:
        """The node's share of the largest value, in HEAT_LEVELS steps (so small shifts repaint nothing)."""
        return round(HEAT_LEVELS * self.metric(name) / self._metric_max) / HEAT_LEVELS

    def _update_max(self) -> bool:
        field = METRIC_FIELDS[self.ctl.heatmap]
        new = max((getattr(c, field) for c in self.ctl.analyzer.costs.values()), default=0) or 1
        changed = new != self._metric_max
        self._metric_max = new
        return changed

    def rebuild(self) -> None:
        """Recreate every item (a new design, or a graph replaced)."""
        self._syncing = True
        self.clear()
        self._lit_edges = set()
        self.nodes.clear()
        self.edges.clear()
        self._wire = None
        graph = self.ctl.graph
        self._update_max()
        for name in graph.nodes:
            self._create_node(name)
        for name in graph.nodes:
            self._create_edges(name)
        self.setSceneRect(self.itemsBoundingRect().adjusted(-400, -400, 400, 400))
        self._syncing = False

    def _create_node(self, name: str) -> None:
        item = NodeItem(name)
        x, y = self.ctl.graph.layout.get(name, (0.0, 0.0))
        item.setPos(x, y)
        item.sync(self.ctl.graph.nodes[name], self._heat(name))
        self.addItem(item)
        self.nodes[name] = item

    def _remove_edges_into(self, name: str) -> None:
        for key in [k for k in self.edges if k[0] == name]:
            self._drop_edge(self.edges.pop(key))

    def _drop_edge(self, edge: EdgeItem) -> None:
        """Take an edge (already out of `self.edges`) off its nodes and the scene."""
        edge.detach()
        self._lit_edges.discard(edge)
        self.removeItem(edge)

    def _create_edges(self, name: str) -> None:
        node = self.ctl.graph.nodes[name]
        for index, ref in enumerate(node.inputs):
            if ref is None:
                continue
            src, out = parse_ref(ref)
            edge = EdgeItem(self.nodes[src], out, self.nodes[name], index, self.ctl.route)
            self.addItem(edge)
            self.edges[(name, index)] = edge

    def apply_change(self, change) -> None:
        """Redraw only what `change` names."""
        if change.reset:
            self.rebuild()
            return
        self._syncing = True
        graph = self.ctl.graph
        for old, new in change.renamed:
            if old in self.nodes:
                item = self.nodes.pop(old)
                item.name = new
                self.nodes[new] = item
                self.edges = {((new if d == old else d), i): e for (d, i), e in self.edges.items()}
        rewire = set(change.inputs)
        for _, new in change.renamed:
            rewire.update(c for c, _ in graph.users(new))
        for name in change.erased:
            if name not in graph.nodes and name in self.nodes:
                self._remove_edges_into(name)
                item = self.nodes.pop(name)
                for edge in list(item.edges):
                    self.edges.pop((edge.dst.name, edge.index), None)
                    self._drop_edge(edge)
                self.removeItem(item)
        for name in change.added:
            if name in self.nodes:
                self._remove_edges_into(name)
                self.removeItem(self.nodes.pop(name))
            self._create_node(name)
            rewire.add(name)
        for name in change.moved:
            if name in self.nodes:
                x, y = graph.layout.get(name, (0.0, 0.0))
                if (self.nodes[name].x(), self.nodes[name].y()) != (x, y):
                    self.nodes[name].setPos(x, y)
        redraw = change.touched() | rewire
        for name in redraw:
            if name in self.nodes:
                self.nodes[name].sync(graph.nodes[name], self._heat(name))
        if self._update_max():
            for name, item in self.nodes.items():
                item.set_heat(self._heat(name))
        for name in rewire:
            if name in graph.nodes:
                self._remove_edges_into(name)
                self._create_edges(name)
        touched_edges = set()
        for name in redraw | change.moved:
            if name in self.nodes:
                touched_edges.update(self.nodes[name].edges)
        for edge in touched_edges:
            edge.update_path()
        grown = self.sceneRect()
        for name in change.added | change.moved:
            if name in self.nodes:
                grown = grown.united(self.nodes[name].sceneBoundingRect().adjusted(-400, -400, 400, 400))
        if grown != self.sceneRect():
            self.setSceneRect(grown)
        self._syncing = False
        self.show_selection(self.ctl.selection)

    def retint(self) -> None:
        self._update_max()
        for name, item in self.nodes.items():
            item.set_heat(self._heat(name))

    # ---- selection -------------------------------------------------------------------------
    def selected_names(self) -> list[str]:
        return [item.name for item in self.selectedItems() if isinstance(item, NodeItem)]

    def selected_edges(self) -> list[EdgeItem]:
        return [item for item in self.selectedItems() if isinstance(item, EdgeItem)]

    def _on_selection_changed(self) -> None:
        edges = set(self.selected_edges())
        for edge in self._lit_edges - edges:
            edge.show_selected(False)
        for edge in edges - self._lit_edges:
            edge.show_selected(True)
        self._lit_edges = edges
        if not self._syncing:
            self.ctl.select(self.selected_names())

    def show_selection(self, names: list[str]) -> None:
        if set(names) == set(self.selected_names()):
            return
        self._syncing = True
        wanted = set(names)
        for item in self.selectedItems():
            if not (isinstance(item, NodeItem) and item.name in wanted):
                item.setSelected(False)
        for name in names:
            if name in self.nodes:
                self.nodes[name].setSelected(True)
        self._syncing = False

    # ---- mouse: connecting ports and finishing moves ----------------------------------------
    def node_at(self, pos: QPointF) -> NodeItem | None:
        for item in self.items(pos):
            if isinstance(item, NodeItem):
                return item
        return None

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            item = self.node_at(event.scenePos())
            port = item.port_at(item.mapFromScene(event.scenePos())) if item else None
            if port and port[0] == "out":
                self._wire_from = (item.name, port[1])
                self._wire = QGraphicsPathItem()
                pen = QPen(QColor(20, 100, 230), 2, Qt.PenStyle.DashLine)
                pen.setCosmetic(True)
                self._wire.setPen(pen)
                self._wire.setZValue(3)
                self.addItem(self._wire)
                self._draw_wire(event.scenePos())
                event.accept()
                return
        self._press_positions = {name: (it.x(), it.y()) for name, it in self.nodes.items() if it.isSelected()}
        super().mousePressEvent(event)
        self._press_positions.update({it.name: (it.x(), it.y()) for it in self.selectedItems() if isinstance(it, NodeItem)})

    def _draw_wire(self, pos: QPointF) -> None:
        name, out = self._wire_from
        start = self.nodes[name].mapToScene(self.nodes[name].output_port(out))
        self._wire.setPath(curve(start, pos))

    def mouseMoveEvent(self, event) -> None:
        if self._wire is not None:
            self._draw_wire(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)
        if self._press_positions:
            for name in self._press_positions:
                item = self.nodes.get(name)
                if item is not None:
                    item.update_edges()

    def mouseReleaseEvent(self, event) -> None:
        if self._wire is not None:
            self.removeItem(self._wire)
            self._wire = None
            src, out = self._wire_from
            self._wire_from = None
            target = self.node_at(event.scenePos())
            if target is not None and target.name != src:
                index = self._target_input(target, event.scenePos())
                if index is not None:
                    self.ctl.connect(make_ref(src, out), target.name, index)
                else:
                    self.ctl.message.emit(f"'{target.name}' has no free input; drop on one of its input ports to replace that edge")
            event.accept()
            return
        super().mouseReleaseEvent(event)
        moved = {}
        for name, before in self._press_positions.items():
            item = self.nodes.get(name)
            if item is not None and (item.x(), item.y()) != before:
                moved[name] = (item.x(), item.y())
        self._press_positions = {}
        if moved:
            self.ctl.move(moved)

    def _target_input(self, item: NodeItem, pos: QPointF) -> int | None:
        """The input port under `pos`, else the first unconnected (or free) input of the node."""
        port = item.port_at(item.mapFromScene(pos))
        if port and port[0] == "in":
            return port[1]
        node = self.ctl.graph.nodes[item.name]
        for i, ref in enumerate(node.inputs):
            if ref is None:
                return i
        return len(node.inputs) if item.n_inputs > len(node.inputs) else None


class GraphView(QGraphicsView):
    """Zoom with the wheel, pan with the middle button, rubber-band select, accept palette drops."""

    zoom_changed = pyqtSignal(float)
    node_menu_requested = pyqtSignal(list, object)  # node names, global position

    def __init__(self, scene: GraphScene, parent=None):
        super().__init__(scene, parent)
        self.ctl = scene.ctl
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setAcceptDrops(True)
        self.setBackgroundBrush(QColor(236, 238, 242))
        self._pan_from = None

    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, scale: float) -> None:
        scale = max(MIN_SCALE, min(MAX_SCALE, scale))
        factor = scale / self.zoom()
        self.scale(factor, factor)
        self._zoomed()

    def _zoomed(self) -> None:
        """Antialias only when details are drawn; zoomed far out, plain lines render much faster."""
        self.setRenderHint(QPainter.RenderHint.Antialiasing, self.zoom() >= DETAIL_THRESHOLD)
        self.zoom_changed.emit(self.zoom())

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        self.set_zoom(self.zoom() * 1.15**steps)

    def fit_all(self) -> None:
        """Show the whole graph (F)."""
        rect = self.scene().itemsBoundingRect()
        if rect.isEmpty():
            return
        self.fitInView(rect.adjusted(-30, -30, 30, 30), Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom() > 1.0:
            self.set_zoom(1.0)
        self._zoomed()

    def show_readable(self) -> None:
        """Fit the graph if its labels stay readable, else show its top-left corner at a readable zoom."""
        self.fit_all()
        if self.zoom() >= READABLE_SCALE:
            return
        self.set_zoom(READABLE_SCALE)
        rect = self.scene().itemsBoundingRect()
        half_w = self.viewport().width() / self.zoom() / 2
        half_h = self.viewport().height() / self.zoom() / 2
        self.centerOn(QPointF(rect.left() - 20 + half_w, rect.top() - 20 + half_h))

    def contextMenuEvent(self, event) -> None:
        """Right-click on a node asks for its menu, for the selection when the node is part of it."""
        item = self.scene().node_at(self.mapToScene(event.pos()))
        if item is None:
            super().contextMenuEvent(event)
            return
        names = list(self.ctl.selection) if item.name in self.ctl.selection else [item.name]
        self.ctl.select(names)
        self.node_menu_requested.emit(names, event.globalPos())
        event.accept()

    def centre_on_node(self, name: str) -> None:
        item = self.scene().nodes.get(name)
        if item is not None:
            self.centerOn(item.pos() + QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2))

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self._pan_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(int(self.horizontalScrollBar().value() - delta.x()))
            self.verticalScrollBar().setValue(int(self.verticalScrollBar().value() - delta.y()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.MiddleButton and self._pan_from is not None:
            self._pan_from = None
            self.unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    # ---- drops from the palette ------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasFormat(MIME_TYPE):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasFormat(MIME_TYPE):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:
        if not event.mimeData().hasFormat(MIME_TYPE):
            super().dropEvent(event)
            return
        kind, name = decode_mime(event.mimeData())
        pos = self.mapToScene(event.position().toPoint())
        corner = (pos.x() - NODE_WIDTH / 2, pos.y() - NODE_HEIGHT / 2)
        try:
            if kind == "op":
                self.ctl.select([self.ctl.add_node(name, corner)])
            elif kind == "template":
                self.ctl.select(self.ctl.insert_template(name, corner))
            elif kind == "block":
                target = self.scene().node_at(pos)
                after = target.name if target is not None else (self.ctl.selection[0] if len(self.ctl.selection) == 1 else None)
                if after is None:
                    self.ctl.message.emit(f"drop block '{name}' onto the node it should follow")
                else:
                    self.ctl.select(self.ctl.insert_block(name, after))
        except DesignError as e:
            self.ctl.message.emit(e.line())
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
