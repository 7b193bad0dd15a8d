"""Folded groups on the canvas: a collapsed group is drawn as one node with the shapes entering and leaving
it and its summed cost; its members and the edges among them are hidden, and edges into or out of it
attach to the folded node.

`folded_layout` is the layout side: folding or unfolding lays the design out again as it is drawn, each folded
group one node whose members travel with it, so a folded design reads as a short, tidy column.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QFont, QFontMetrics, QPainter, QPen
from PyQt6.QtWidgets import QGraphicsItem, QInputDialog, QMenu, QStyleOptionGraphicsItem

from convstudio.designer.cli.common import human_bytes
from convstudio.designer.gui import theme
from convstudio.designer.gui.edge_item import EdgeItem
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH, layered_layout
from convstudio.designer.gui.node_item import DETAIL_THRESHOLD, PORT_RADIUS, compact, shapes_text
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.groups import GroupSummary, members, owner_map, summarize, visible_owner

STACK_OFFSET = 4.0
BOUNDS = QRectF(-PORT_RADIUS - 1, -PORT_RADIUS - 1, NODE_WIDTH + STACK_OFFSET + 2 * PORT_RADIUS + 2, NODE_HEIGHT + STACK_OFFSET + 2 * PORT_RADIUS + 2)


def folded_layout(graph: Graph, groups: dict) -> dict[str, tuple[float, float]]:
    """Positions for every node once `groups` fold as they say: the layered layout of the design as drawn (each
    folded group one node), the members of a folded group moved with it, keeping their places within it."""
    owners = owner_map(groups)
    unit = {name: visible_owner(groups, name, owners) or name for name in graph.nodes}
    units = list(dict.fromkeys(unit[n] for n in graph.topo_order()))
    alias = {u: f"u{i}" for i, u in enumerate(units)}
    drawn = Graph(graph.name)
    for u in units:
        inside = [u] if u in graph.nodes and unit[u] == u else members(groups, u)
        refs = [alias[unit[parse_ref(ref)[0]]] for m in inside for ref in graph.nodes[m].inputs if ref is not None]
        refs = [r for r in dict.fromkeys(refs) if r != alias[u]]
        if refs:  # only the structure matters to the layout: a variadic op stands for every unit that has inputs
            drawn.add("Concat", refs, name=alias[u])
        else:
            drawn.add("Input", name=alias[u], attrs={"shape": [1]})
    placed = layered_layout(drawn).positions
    positions = {}
    for u in units:
        x, y = placed[alias[u]]
        if u in graph.nodes and unit[u] == u:
            positions[u] = (x, y)
            continue
        inside = members(groups, u)
        ax, ay = anchor(graph.layout, inside)
        for m in inside:
            mx, my = graph.layout.get(m, (ax, ay))
            positions[m] = (round(mx - ax + x, 2), round(my - ay + y, 2))
    return positions


def anchor(layout: dict, inside: list[str]) -> tuple[float, float]:
    """Where a folded group sits: its first member's column, its top row."""
    placed = [n for n in inside if n in layout]
    if not placed:
        return (0.0, 0.0)
    return (layout[placed[0]][0], min(layout[n][1] for n in placed))


class GroupItem(QGraphicsItem):
    """One folded group; double-click unfolds it."""

    title_font = QFont("Sans Serif", 9, QFont.Weight.Bold)
    body_font = QFont("Sans Serif", 8)

    def __init__(self, name: str, on_open):
        super().__init__()
        self.name = name
        self.on_open = on_open
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setZValue(1)
        self.edges: set = set()
        self.texts = ["", "", "", ""]
        self.summary: GroupSummary | None = None

    def sync(self, s: GroupSummary, batch: int | None) -> None:
        """Show summary `s`: name and layer count, shapes in and out, summed params and MACs, latency where known."""
        self.summary = s
        lead = f"{batch}×" if batch else ""
        shapes_in = shapes_text([x for x in s.in_shapes if x is not None], lead) or "?"
        shapes_out = shapes_text([x for x in s.out_shapes if x is not None], lead) or "?"
        n = batch or 1  # the summary sums per-sample costs
        cost = f"{compact(s.params)} params · {compact(s.macs * n)} MACs"
        if s.latency_ms is not None:
            cost += f" · {s.latency_ms:.3g} ms"
        scope = f"batch {batch}" if batch else "per sample"
        self.texts = [f"▸ {s.name}", f"group of {s.layers} layers · {scope}", f"{shapes_in} → {shapes_out}", cost]
        tip = [f"<b>{s.name}</b>: {s.layers} layers, folded (double-click to unfold)", f"in {shapes_in}", f"out {shapes_out}",
               f"params {s.params:,} · MACs {s.macs * n:,} · FLOPs {s.flops * n:,} ({scope})",
               f"activations {human_bytes(s.activation_bytes * n)} ({scope})"]
        if s.latency_ms is not None:
            tip.append(f"predicted latency {s.latency_ms:.3f} ms")
        if s.errors:
            tip.append(f"<span style='color:#c81e1e'>{s.errors} layer(s) without shapes are left out</span>")
        self.setToolTip("<br>".join(tip))
        self.update()

    def boundingRect(self) -> QRectF:
        return BOUNDS

    def input_port(self, index: int) -> QPointF:
        return QPointF(NODE_WIDTH / 2, 0.0)

    def output_port(self, index: int) -> QPointF:
        return QPointF(NODE_WIDTH / 2, NODE_HEIGHT)

    def port_at(self, local: QPointF) -> None:
        return None

    def update_edges(self) -> None:
        for edge in self.edges:
            edge.update_path()

    def mouseDoubleClickEvent(self, event) -> None:
        self.on_open(self.name)
        event.accept()

    def contextMenuEvent(self, event) -> None:
        scene = self.scene()
        scene.folds.show_menu(self.name, event.screenPos())
        event.accept()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        rect = QRectF(0, 0, NODE_WIDTH, NODE_HEIGHT)
        selected = self.isSelected()
        colours = theme.active()
        painter.setPen(QPen(colours.group_border, 1.2))
        painter.setBrush(QBrush(colours.group_fill.darker(108)))
        painter.drawRoundedRect(rect.translated(STACK_OFFSET, STACK_OFFSET), 6, 6)  # a second card behind: it holds several layers
        painter.setPen(QPen(colours.selected if selected else colours.group_border, 3 if selected else 2))
        painter.setBrush(QBrush(colours.group_fill))
        if option.levelOfDetailFromTransform(painter.worldTransform()) < DETAIL_THRESHOLD:
            painter.drawRect(rect)
            return
        painter.drawRoundedRect(rect, 6, 6)
        width = int(NODE_WIDTH - 14)
        title, body = QFontMetrics(self.title_font), QFontMetrics(self.body_font)
        painter.setPen(colours.text)
        painter.setFont(self.title_font)
        painter.drawText(QRectF(10, 4, width, 16), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         title.elidedText(self.texts[0], Qt.TextElideMode.ElideMiddle, width))
        painter.setFont(self.body_font)
        painter.setPen(colours.subtext)
        for row, text in enumerate(self.texts[1:]):
            painter.drawText(QRectF(10, 20 + row * 15, width, 15), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             body.elidedText(text, Qt.TextElideMode.ElideRight, width))
        painter.setPen(QPen(colours.port_pen, 1))
        painter.setBrush(QBrush(colours.port))
        painter.drawEllipse(self.input_port(0), PORT_RADIUS, PORT_RADIUS)
        painter.setBrush(QBrush(colours.group_border))
        painter.drawEllipse(self.output_port(0), PORT_RADIUS, PORT_RADIUS)


class Folds(QObject):
    """The scene's folded groups: which nodes they hide, their items and the edges drawn to and from them.

    A double-click asks for a fold or unfold through a queued signal: the redraw it causes deletes the
    clicked item, which must not happen inside that item's own event handler."""

    toggle_requested = pyqtSignal(str, bool)  # group, fold

    def __init__(self, scene):
        super().__init__(scene)
        self.scene = scene
        self.menu: QMenu | None = None
        self.toggle_requested.connect(self._toggle, Qt.ConnectionType.QueuedConnection)
        self.items: dict[str, GroupItem] = {}
        self.proxies: list[EdgeItem] = []
        self.hidden: set[str] = set()
        self.hidden_edges: set = set()

    def _toggle(self, group: str, fold: bool) -> None:
        self.scene.ctl.set_collapsed([group], fold)

    def clear(self) -> None:
        """Forget the items (the scene was cleared, which deleted them)."""
        self.items, self.proxies, self.hidden, self.hidden_edges = {}, [], set(), set()

    def _take_down(self) -> None:
        scene = self.scene
        for edge in self.proxies:
            edge.detach()
            scene.removeItem(edge)
        for name, item in self.items.items():
            scene.obstacles.remove(name)
            scene.removeItem(item)
        for name in self.hidden:
            item = scene.nodes.get(name)
            if item is not None:
                item.setVisible(True)
                scene.obstacles.set(name, (item.x(), item.y()))
        for edge in self.hidden_edges:
            edge.setVisible(True)
        self.clear()

    def refresh(self, change=None) -> None:
        """Fold what the design's groups say is collapsed (after any change of the graph, its groups or its layout).
        A `change` that only touched attributes or costs just updates the folded nodes' figures."""
        scene, graph = self.scene, self.scene.ctl.graph
        groups = graph.groups
        folded = any(g.collapsed for g in groups.values())
        if not folded and not self.items:
            return
        if change is not None and self.items and not (change.added or change.erased or change.inputs or change.renamed or change.moved):
            for name, item in self.items.items():
                item.sync(summarize(graph, groups, name, scene.ctl.analyzer.costs), scene.ctl.batch)
            return
        self._take_down()
        if not folded:
            return
        owners = owner_map(groups)
        rep: dict[str, str] = {}
        for name in scene.nodes:
            group = visible_owner(groups, name, owners)
            if group is not None:
                rep[name] = group
        costs = scene.ctl.analyzer.costs
        for group in dict.fromkeys(rep.values()):
            inside = members(groups, group)
            item = GroupItem(group, lambda g: self.toggle_requested.emit(g, False))
            item.setPos(*anchor(graph.layout, inside))
            item.sync(summarize(graph, groups, group, costs), scene.ctl.batch)
            scene.addItem(item)
            scene.obstacles.set(group, (item.x(), item.y()))
            self.items[group] = item
        for name in rep:
            scene.nodes[name].setVisible(False)
            scene.obstacles.remove(name)
        self.hidden = set(rep)
        drawn = set()
        for (dst, index), edge in scene.edges.items():
            src_name = edge.src.name
            if src_name not in rep and dst not in rep:
                continue
            edge.setVisible(False)
            self.hidden_edges.add(edge)
            a, b = rep.get(src_name), rep.get(dst)
            if a is not None and a == b:
                continue
            out = parse_ref(graph.nodes[dst].inputs[index])[1]
            key = (a or src_name, out if a is None else 0, b or dst, index if b is None else 0)
            if key in drawn:
                continue
            drawn.add(key)
            src_item = self.items[a] if a else scene.nodes[src_name]
            dst_item = self.items[b] if b else scene.nodes[dst]
            proxy = EdgeItem(src_item, key[1], dst_item, key[3], lambda *_: None, scene.obstacles)
            scene.addItem(proxy)
            self.proxies.append(proxy)

    def show_menu(self, group: str, global_pos) -> None:
        """The right-click menu of a folded group: unfold, rename, ungroup."""
        view = self.scene.views()[0] if self.scene.views() else None
        window = view.window() if view is not None else None
        if self.menu is not None:
            self.menu.deleteLater()
        ctl = self.scene.ctl
        self.menu = QMenu(window)
        self.menu.addAction("Expand", lambda: self.toggle_requested.emit(group, False))
        self.menu.addAction("Rename group...", lambda: rename_group(window, ctl, group))
        self.menu.addAction("Ungroup", lambda: ctl.ungroup(group))
        self.menu.popup(global_pos)

    def drawn_item(self, name: str):
        """The folded group item named `name` or hiding node `name`, else None."""
        if name in self.items:
            return self.items[name]
        if name in self.hidden:
            group = visible_owner(self.scene.ctl.graph.groups, name)
            return self.items.get(group)
        return None


def ask_group_name(parent, title: str, text: str) -> str | None:
    """A name typed into a small dialog, or None when cancelled."""
    dialog = QInputDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setLabelText("Group name:")
    dialog.setTextValue(text)
    accepted = dialog.exec()
    text = dialog.textValue()
    dialog.deleteLater()
    return text if accepted else None


def group_selection(window) -> None:
    """Edit > Group selection (Ctrl+G): ask for a name and group the selected nodes under it."""
    ctl = window.ctl
    if not ctl.selection:
        window.show_message("select the nodes to group first")
        return
    taken = set(ctl.graph.groups)
    k = len(taken) + 1
    while f"group{k}" in taken or f"group{k}" in ctl.graph.nodes:
        k += 1
    name = ask_group_name(window, "Group selection", f"group{k}")
    if name is None:
        return
    error = ctl.make_group(list(ctl.selection), name)
    window.show_message(f"error: {error}" if error else f"Grouped {len(ctl.selection)} nodes as {name.strip()}")


def rename_group(window, ctl, group: str) -> None:
    name = ask_group_name(window, "Rename group", group)
    if name is not None:
        error = ctl.rename_group(group, name)
        if error:
            ctl.message.emit(f"error: {error}")
