"""The canvas: a QGraphicsScene mirroring the controller's graph and the view that shows it.

The scene never edits the graph: drops, connections, moves and deletions go to the controller as
commands, and the scene redraws from the controller's `graph_changed` notifications.
"""

from __future__ import annotations

from contextlib import contextmanager
from operator import attrgetter

from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QCursor, QPainter, QPen, QPixmapCache
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsScene, QGraphicsView, QMenu, QToolTip

from convstudio.designer.gui import theme
from convstudio.designer.gui.edge_item import CountedObstacles, EdgeItem, curve
from convstudio.designer.gui.groups import Folds
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.designer.gui.messages import upstream_errors
from convstudio.designer.gui.node_item import BOUNDS, DETAIL_THRESHOLD, NodeItem
from convstudio.designer.gui.palette import CATEGORY_TITLES, MIME_TYPE, decode_mime
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import keep_built, make_ref, parse_ref, paused_gc
from convstudio.ir.groups import group_of
from convstudio.ir.ops import registry

READABLE_SCALE = 0.85
HEAT_LEVELS = 20
METRIC_FIELDS = {"macs": "macs", "params": "params", "memory": "activation_bytes"}
MIN_SCALE = 0.02
MAX_SCALE = 4.0
EDGE_CLEARANCE = 4.0
ITEM_CACHE_KB = 16
MAX_CACHE_KB = 512 * 1024
ZOOM_STEP = 1.25
NUDGE_STEP = 10.0
NUDGE_BIG_STEP = 50.0
NODE_BOUNDS = (BOUNDS.left(), BOUNDS.top(), BOUNDS.right(), BOUNDS.bottom())  # a node's bounding rectangle about its position
ARROWS = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0), Qt.Key.Key_Up: (0, -1), Qt.Key.Key_Down: (0, 1)}


def reserve_item_cache(items: int) -> None:
    """Let Qt's pixmap cache hold every item's cached drawing: when it overflows (the default 10 MB did from
    about 5,000 nodes), each frame redraws every item instead of reusing its pixmap and rendering stops being linear."""
    QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), min(ITEM_CACHE_KB * items, MAX_CACHE_KB)))


class GraphScene(QGraphicsScene):
    """Node and edge items keyed by node name (edges by consumer and input index)."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.ctl = controller
        self._route_of = controller.route  # one bound method shared by every edge
        self.nodes: dict[str, NodeItem] = {}
        self.edges: dict[tuple[str, int], EdgeItem] = {}
        self._metric_max = 1
        self._syncing = False
        self._wire: QGraphicsPathItem | None = None
        self._wire_from: tuple[str, int] | None = None
        self._press_positions: dict[str, tuple[float, float]] = {}
        self._lit_edges: set[EdgeItem] = set()
        self._routes_drawn: dict = {}  # the controller's edge routes when the edges were last drawn
        self.edge_shapes = False
        self._labels_batch: int | None = None
        self.cached = True  # items keep their drawing as pixmaps (the view zoomed in far enough to draw text)
        self.obstacles = CountedObstacles(margin=EDGE_CLEARANCE)  # node rectangles the edges route around
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.BspTreeIndex)
        controller.graph_changed.connect(self.apply_change)
        controller.heatmap_changed.connect(lambda _metric: self.retint())
        controller.measured_changed.connect(self.retint)
        controller.selection_changed.connect(self.show_selection)
        self.selectionChanged.connect(self._on_selection_changed)
        self.folds = Folds(self)
        self.rebuild()

    # ---- mirroring the model ---------------------------------------------------------------
    def metric(self, name: str) -> float:
        """The heatmap value of node `name` (MACs, params, activation bytes, or ms: measured when profiled, else predicted)."""
        if self.ctl.heatmap == "latency":
            return self.ctl.latency_of(name) or 0.0
        cost = self.ctl.analyzer.costs.get(name)
        return getattr(cost, METRIC_FIELDS[self.ctl.heatmap]) if cost is not None else 0

    def _heat(self, name: str) -> float:
        """The node's share of the largest value, in HEAT_LEVELS steps (so small shifts repaint nothing)."""
        return round(HEAT_LEVELS * self.metric(name) / self._metric_max) / HEAT_LEVELS

    def _update_max(self) -> bool:
        if self.ctl.heatmap == "latency":
            new = max(map(self.metric, self.ctl.analyzer.costs), default=0) or 1
        else:
            new = max(map(attrgetter(METRIC_FIELDS[self.ctl.heatmap]), self.ctl.analyzer.costs.values()), default=0) or 1
        changed = new != self._metric_max
        self._metric_max = new
        return changed

    def sync_node(self, name: str, item: NodeItem) -> None:
        """Refresh one node item: its figures at the batch shown, and the upstream node to blame for an unknown shape."""
        node = self.ctl.graph.nodes[name]
        unknown = node.meta.get("shapes") is None and not node.meta.get("error")
        culprit = upstream_errors(self.ctl.graph, name, self._culprits) if unknown else None
        item.sync(node, self._heat(name), self.ctl.batch, culprit)

    def set_cached(self, cached: bool) -> None:
        """Cache each node's and edge's drawing as a pixmap, or draw them directly: zoomed far out, filling pixmaps for
        thousands of plain boxes and lines costs more than drawing them on every frame."""
        if cached == self.cached:
            return
        self.cached = cached
        mode = QGraphicsItem.CacheMode.DeviceCoordinateCache if cached else QGraphicsItem.CacheMode.NoCache
        for item in [*self.nodes.values(), *self.edges.values()]:
            item.setCacheMode(mode)

    def restyle(self) -> None:
        """Redraw everything in the current theme's colours (the palette changed)."""
        for view in self.views():
            view.setBackgroundBrush(theme.active().canvas)
        self.rebuild()

    @paused_gc()
    def rebuild(self) -> None:
        """Recreate every item (a new design, or a graph replaced)."""
        self._culprits = {}
        self._syncing = True
        for edge in self.edges.values():
            edge.detach()  # no node-edge reference cycles left for the collector
        self.clear()
        self.folds.clear()
        self._lit_edges = set()
        self.nodes.clear()
        self.edges.clear()
        self._wire = None
        self.obstacles = CountedObstacles(margin=EDGE_CLEARANCE)
        graph = self.ctl.graph
        self._update_max()
        for name in graph.nodes:
            self._create_node(name)
        for name in graph.nodes:
            self._create_edges(name)
        reserve_item_cache(len(self.nodes) + len(self.edges))
        self._routes_drawn = self.ctl.routes  # the controller replaces its routes, never edits them in place
        self.folds.refresh()
        self.setSceneRect(self.itemsBoundingRect().adjusted(-400, -400, 400, 400))
        self._syncing = False
        keep_built(graph)  # a large design's items live on: aged, not rescanned

    def _create_node(self, name: str) -> None:
        item = NodeItem(name, self.cached)
        x, y = self.ctl.graph.layout.get(name, (0.0, 0.0))
        item.setPos(x, y)
        self.sync_node(name, item)
        self.addItem(item)
        self.nodes[name] = item
        self.obstacles.set(name, (x, y), stray=self.ctl.laid_out.get(name) != (x, y))

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
            edge = EdgeItem(self.nodes[src], out, self.nodes[name], index, self._route_of, self.obstacles, self.cached)
            self.addItem(edge)
            self.edges[(name, index)] = edge
            if self.edge_shapes:
                edge.set_label(self.shape_label(edge))

    @paused_gc()
    def apply_change(self, change) -> None:
        """Redraw only what `change` names."""
        if change.reset:
            self.rebuild()
            return
        self._culprits = {}
        self._syncing = True
        graph = self.ctl.graph
        for old, new in change.renamed:
            if old in self.nodes:
                item = self.nodes.pop(old)
                item.name = new
                self.nodes[new] = item
                self.obstacles.remove(old)
                self.obstacles.set(new, (item.x(), item.y()), stray=self.ctl.laid_out.get(new) != (item.x(), item.y()))
                self.edges = {((new if d == old else d), i): e for (d, i), e in self.edges.items()}
        rewire = set(change.inputs)
        for _, new in change.renamed:
            rewire.update(c for c, _ in graph.users(new))
        vacated_or_filled = []  # node rectangles that appeared or disappeared: edges there may need a new route
        for name in change.erased:
            if name not in graph.nodes and name in self.nodes:
                self._remove_edges_into(name)
                self.obstacles.remove(name)
                item = self.nodes.pop(name)
                vacated_or_filled.append(item.sceneBoundingRect())
                for edge in list(item.edges):
                    self.edges.pop((edge.dst.name, edge.index), None)
                    self._drop_edge(edge)
                self.removeItem(item)
        for name in change.added:
            if name in self.nodes:
                self._remove_edges_into(name)
                self.removeItem(self.nodes.pop(name))
            self._create_node(name)
            vacated_or_filled.append(self.nodes[name].sceneBoundingRect())
            rewire.add(name)
        shifted = set()  # moved nodes whose place, or whether they stray from the auto-layout, changed
        for name in change.moved:
            if name in self.nodes:
                item = self.nodes[name]
                x, y = graph.layout.get(name, (0.0, 0.0))
                if (item.x(), item.y()) == (x, y) and self.obstacles.holds(name, (x, y), self.ctl.laid_out.get(name) != (x, y)):
                    continue  # where it was and as it was (an auto-layout that changes nothing notes every node)
                if (item.x(), item.y()) != (x, y):
                    item.setPos(x, y)
                    shifted.add(name)
                before = self.obstacles.rects.get(name)  # where edges last routed around it (before a drag, too)
                was_stray = name in self.obstacles.strays
                self.obstacles.set(name, (x, y), stray=self.ctl.laid_out.get(name) != (x, y))
                if before is None:
                    shifted.add(name)
                elif before != self.obstacles.rects[name]:
                    vacated_or_filled += [QRectF(QPointF(*before[:2]), QPointF(*before[2:])), item.sceneBoundingRect()]
                    shifted.add(name)
                elif was_stray != (name in self.obstacles.strays):
                    vacated_or_filled.append(item.sceneBoundingRect())  # edges near it are checked against it now, or no longer
                    shifted.add(name)
        redraw = change.touched() | rewire
        for name in redraw:
            if name in self.nodes:
                self.sync_node(name, self.nodes[name])
        if self._update_max():
            self._retint_changed()
        for name in rewire:
            if name in graph.nodes:
                self._remove_edges_into(name)
                self._create_edges(name)
        touched_edges = set()
        moved = change.moved
        if moved and self.ctl.routes == self._routes_drawn:  # else an edge may have new waypoints though its ends stay
            moved = shifted
        for name in redraw | moved:
            if name in self.nodes:
                touched_edges.update(self.nodes[name].edges)
        if len(vacated_or_filled) > len(self.edges) // 8:  # a large rearrangement: re-route every edge
            touched_edges.update(self.edges.values())
        else:
            for rect in vacated_or_filled:
                near = self.items(rect, Qt.ItemSelectionMode.IntersectsItemBoundingRect)
                touched_edges.update(item for item in near if isinstance(item, EdgeItem))
        if self.edge_shapes and self._labels_batch != self.ctl.batch:
            touched_edges = self.edges.values()  # the batch shown changed: every label's leading dimension
            self._labels_batch = self.ctl.batch
        for edge in touched_edges:
            edge.update_path()
            if self.edge_shapes:
                edge.set_label(self.shape_label(edge))
        placed = [self.nodes[name].pos() for name in change.added | shifted if name in self.nodes]
        if placed:
            xs, ys = [p.x() for p in placed], [p.y() for p in placed]
            nodes = QRectF(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)).adjusted(*NODE_BOUNDS)  # their sceneBoundingRects united
            grown = self.sceneRect().united(nodes.adjusted(-400, -400, 400, 400))
            if grown != self.sceneRect():
                self.setSceneRect(grown)
        self._routes_drawn = self.ctl.routes
        self.folds.refresh(change)
        self._syncing = False
        self.show_selection(self.ctl.selection)

    # ---- tensor shapes on edges and ports ------------------------------------------------------
    def value_shape(self, name: str, out: int) -> str:
        """Output `out` of node `name` as text with the batch shown ('N×64×56×56', '8×64×56×56'), '?' when unknown."""
        shapes = self.ctl.graph.nodes[name].meta.get("shapes")
        if not shapes or out >= len(shapes):
            return "?"
        lead = self.ctl.batch if self.ctl.batch else "N"
        return "×".join(map(str, [lead, *shapes[out]]))

    def shape_label(self, edge: EdgeItem) -> str:
        return self.value_shape(edge.src.name, edge.out)

    def set_edge_shapes(self, on: bool) -> None:
        """Label every edge with the shape of the tensor it carries (View ▸ Edge shapes), or remove the labels."""
        self.edge_shapes = on
        self._labels_batch = self.ctl.batch
        for edge in self.edges.values():
            edge.set_label(self.shape_label(edge) if on else None)

    def port_tooltip(self, name: str, kind: str, index: int) -> str:
        """The tooltip of a port: which value it carries and its shape."""
        if kind == "out":
            return f"<b>{name}</b> output {index}: {self.value_shape(name, index)}"
        inputs = self.ctl.graph.nodes[name].inputs
        ref = inputs[index] if index < len(inputs) else None
        if ref is None:
            return f"<b>{name}</b> input {index}: not connected"
        src, out = parse_ref(ref)
        return f"<b>{name}</b> input {index} ← {src}: {self.value_shape(src, out)}"

    def helpEvent(self, event) -> None:
        """Over a port, the tooltip names the port's value and shape; elsewhere the node's own tooltip."""
        item = self.node_at(event.scenePos())
        if item is None or not item.isVisible():
            super().helpEvent(event)
            return
        port = item.port_at(item.mapFromScene(event.scenePos()))
        text = self.port_tooltip(item.name, *port) if port is not None else item.toolTip()  # a node's tooltip is composed when asked for
        QToolTip.showText(event.screenPos(), text, event.widget())
        event.accept()

    @contextmanager
    def plain(self, names: list[str] | None = None):
        """Inside: only `names` and the edges among them show (everything drawn when None), nothing looks selected,
        and items paint directly (no cached pixmaps), as a picture of the design should."""
        tops = [item for item in self.items() if item.parentItem() is None]  # nodes, edges, folded groups and their edges
        keep = set(names or ())

        def kept(item) -> bool:
            if isinstance(item, EdgeItem):
                return item.src.name in keep and item.dst.name in keep
            return isinstance(item, NodeItem) and item.name in keep

        selected = self.selectedItems()
        hidden = [] if names is None else [item for item in tops if item.isVisible() and not kept(item)]
        cached = [(item, item.cacheMode()) for item in tops]
        self._syncing = True
        try:
            for item in selected:
                item.setSelected(False)
            for item in hidden:
                item.setVisible(False)
            for item, _ in cached:
                item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
            yield
        finally:
            for item, mode in cached:
                item.setCacheMode(mode)
            for item in hidden:
                item.setVisible(True)
            for item in selected:
                item.setSelected(True)
            self._syncing = False

    def retint(self) -> None:
        self._update_max()
        self._retint_changed()

    def _retint_changed(self) -> None:
        """Give every node its heat level; only nodes whose level changed repaint (an edit never repaints the whole scene)."""
        if self.ctl.heatmap == "latency":
            for name, item in self.nodes.items():
                item.set_heat(self._heat(name))
            return
        costs, field, top = self.ctl.analyzer.costs, METRIC_FIELDS[self.ctl.heatmap], self._metric_max
        for name, item in self.nodes.items():
            cost = costs.get(name)
            heat = round(HEAT_LEVELS * (getattr(cost, field) if cost is not None else 0) / top) / HEAT_LEVELS
            if heat != item.heat:
                item.set_heat(heat)

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

    def edge_at(self, pos: QPointF) -> EdgeItem | None:
        """The visible edge passing within a few pixels of scene point `pos`, if any."""
        for item in self.items(pos):
            if isinstance(item, EdgeItem) and item.isVisible():
                return item
        return None

    def drawn_rect(self) -> QRectF:
        """The bounding rectangle of what is drawn (members of folded groups are hidden, not drawn)."""
        if not self.folds.hidden:
            return self.itemsBoundingRect()
        rect = QRectF()
        for item in self.items():
            if item.isVisible() and item.parentItem() is None:
                rect = rect.united(item.sceneBoundingRect())
        return rect

    def mouseDoubleClickEvent(self, event) -> None:
        """Double-click on a node of a group folds that group (its innermost); a folded group unfolds on its own double-click."""
        item = self.node_at(event.scenePos())
        group = group_of(self.ctl.graph.groups, item.name) if item is not None and item.isVisible() else None
        if group is not None and event.button() == Qt.MouseButton.LeftButton:
            self.folds.toggle_requested.emit(group, True)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            item = self.node_at(event.scenePos())
            port = item.port_at(item.mapFromScene(event.scenePos())) if item else None
            if port and port[0] == "out":
                self._wire_from = (item.name, port[1])
                self._wire = QGraphicsPathItem()
                pen = QPen(theme.active().selected, 2, Qt.PenStyle.DashLine)
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
        self.setBackgroundBrush(theme.active().canvas)
        self._pan_from = None
        self.canvas_menu: QMenu | None = None

    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, scale: float) -> None:
        scale = max(MIN_SCALE, min(MAX_SCALE, scale))
        factor = scale / self.zoom()
        self.scale(factor, factor)
        self._zoomed()

    def _zoomed(self) -> None:
        """Antialias and cache items' drawings only when details are drawn; zoomed far out, plain lines render much faster."""
        detail = self.zoom() >= DETAIL_THRESHOLD
        self.setRenderHint(QPainter.RenderHint.Antialiasing, detail)
        self.scene().set_cached(detail)
        self.zoom_changed.emit(self.zoom())

    def zoom_by(self, factor: float) -> None:
        """Zoom about the centre of the view (Ctrl++ and Ctrl+-)."""
        anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.set_zoom(self.zoom() * factor)
        self.setTransformationAnchor(anchor)

    def zoom_actual(self) -> None:
        """Back to 100% about the centre of the view (Ctrl+0; F fits the whole design)."""
        self.zoom_by(1.0 / self.zoom())

    def keyPressEvent(self, event) -> None:
        """Arrow keys nudge the selected nodes (Shift: bigger steps), one undo step per press and its auto-repeats."""
        step = ARROWS.get(Qt.Key(event.key()))
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if step and self.ctl.selection and modifiers in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier):
            size = NUDGE_BIG_STEP if modifiers == Qt.KeyboardModifier.ShiftModifier else NUDGE_STEP
            self.ctl.nudge(self.ctl.selection, step[0] * size, step[1] * size, event.isAutoRepeat())
            event.accept()
            return
        super().keyPressEvent(event)

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        self.set_zoom(self.zoom() * 1.15**steps)

    def fit_all(self) -> None:
        """Show the whole graph (F)."""
        rect = self.scene().drawn_rect()
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
        rect = self.scene().drawn_rect()
        half_w = self.viewport().width() / self.zoom() / 2
        half_h = self.viewport().height() / self.zoom() / 2
        self.centerOn(QPointF(rect.left() - 20 + half_w, rect.top() - 20 + half_h))

    def contextMenuEvent(self, event) -> None:
        """Right-click on a node asks for its menu, for the selection when the node is part of it."""
        item = self.scene().node_at(self.mapToScene(event.pos()))
        if item is None:
            if self.scene().itemAt(self.mapToScene(event.pos()), self.transform()) is not None:
                super().contextMenuEvent(event)
                return
            if self.canvas_menu is not None:
                self.canvas_menu.deleteLater()
            self.canvas_menu = self.empty_canvas_menu(self.mapToScene(event.pos()))
            self.canvas_menu.popup(event.globalPos())
            event.accept()
            return
        names = list(self.ctl.selection) if item.name in self.ctl.selection else [item.name]
        self.ctl.select(names)
        self.node_menu_requested.emit(names, event.globalPos())
        event.accept()

    def empty_canvas_menu(self, pos: QPointF) -> QMenu:
        """The right-click menu of empty canvas at scene point `pos`: paste or add an op there, lay out, fit, select all."""
        menu = QMenu(self.window())
        paste = menu.addAction("Paste here", lambda: self.ctl.paste_at((pos.x(), pos.y())))
        paste.setEnabled(bool(self.ctl.clipboard[0]))
        add = menu.addMenu("Add op")
        corner = (pos.x() - NODE_WIDTH / 2, pos.y() - NODE_HEIGHT / 2)
        for category, title in CATEGORY_TITLES.items():
            ops = sorted(registry.CATEGORIES.get(category, ()))
            if ops:
                sub = add.addMenu(title)
                for op in ops:
                    sub.addAction(op, lambda op=op: self.ctl.select([self.ctl.add_node(op, corner)]))
        menu.addSeparator()
        menu.addAction("Auto-layout", self.ctl.auto_layout)
        menu.addAction("Fit", self.fit_all)
        menu.addAction("Select all", lambda: self.ctl.select(list(self.ctl.graph.nodes)))
        return menu

    def paste_point(self) -> QPointF:
        """Where a paste lands: the scene point under the mouse when it is over the canvas, else the view's centre."""
        viewport = self.viewport()
        mouse = viewport.mapFromGlobal(QCursor.pos())
        where = mouse if viewport.rect().contains(mouse) else viewport.rect().center()
        return self.mapToScene(where)

    def centre_on_node(self, name: str) -> None:
        """Centre on node `name`, or on the folded group that hides it (or that `name` names)."""
        item = self.scene().folds.drawn_item(name) or self.scene().nodes.get(name)
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

    def drop_op(self, op: str, pos: QPointF, corner: tuple[float, float]) -> str:
        """An op dropped on an output port follows that port; on an edge, it goes into the edge; elsewhere it stands alone."""
        scene = self.scene()
        target = scene.node_at(pos)
        port = target.port_at(target.mapFromScene(pos)) if target is not None else None
        if port is not None and port[0] == "out":
            return self.ctl.add_op_after(op, make_ref(target.name, port[1]))
        edge = scene.edge_at(pos) if target is None else None
        if edge is not None:
            return self.ctl.add_op_after(op, make_ref(edge.src.name, edge.out), (edge.dst.name, edge.index))
        return self.ctl.add_node(op, corner)

    def dropEvent(self, event) -> None:
        if not event.mimeData().hasFormat(MIME_TYPE):
            super().dropEvent(event)
            return
        kind, name = decode_mime(event.mimeData())
        pos = self.mapToScene(event.position().toPoint())
        corner = (pos.x() - NODE_WIDTH / 2, pos.y() - NODE_HEIGHT / 2)
        try:
            if kind == "op":
                self.ctl.select([self.drop_op(name, pos, corner)])
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
