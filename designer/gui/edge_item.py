"""An edge: a smooth curve from a producer's output port to a consumer's input port, drawn under nodes.

When the auto-layout gave the edge a lane (it spans several layers), the curve runs through the
lane's waypoints so it stays clear of the nodes it passes. With the scene's obstacles, a curve that
would cross a node (or run upward) becomes an axis-parallel route around the nodes, corners rounded.
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF, QRectF
from PyQt6.QtGui import QColor, QFont, QPainterPath, QPainterPathStroker, QPen
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsSimpleTextItem, QStyle

from convstudio.designer.gui import theme
from convstudio.designer.gui.layout import Obstacles, orthogonal_route
from convstudio.designer.gui.node_item import NodeItem

EDGE_COLOR = QColor(110, 120, 135)  # the light theme's edge colour, for drawings that have no theme
LABEL_DETAIL = 0.4
LABEL_RISE = 13.0  # from the input port up to the label's centre
LABEL_STAGGER = 15.0
CORNER = 8.0
BEND_STEPS = 8
_PENS: list = [None, {}]  # [the theme, {kind: its pen}]
_STROKER = QPainterPathStroker()  # an edge's clickable shape: its path 8 units wide
_STROKER.setWidth(8)
CACHED = QGraphicsItem.CacheMode.DeviceCoordinateCache
SELECTABLE = QGraphicsItem.GraphicsItemFlag.ItemIsSelectable


def curve(start: QPointF, end: QPointF, waypoints: list[tuple[float, float]] | None = None) -> QPainterPath:
    """A downward S-curve from start to end; through waypoints, straight runs join S-curved bends."""
    return curve_xy((start.x(), start.y()), (end.x(), end.y()), waypoints)


def curve_xy(a: tuple[float, float], b: tuple[float, float], waypoints: list[tuple[float, float]] | None = None) -> QPainterPath:
    """`curve` from point a to point b, given as (x, y)."""
    path = QPainterPath()
    path.moveTo(a[0], a[1])
    if not waypoints:
        dy = _bend_depth(a[1], b[1])
        path.cubicTo(a[0], a[1] + dy, b[0], b[1] - dy, b[0], b[1])
        return path
    points = [a, *waypoints, b]
    for p, q in zip(points, points[1:]):
        if p[0] == q[0] or p[1] == q[1]:
            path.lineTo(q[0], q[1])
        else:
            dy = _bend_depth(p[1], q[1])
            path.cubicTo(p[0], p[1] + dy, q[0], q[1] - dy, q[0], q[1])
    return path


def _bend_depth(ay: float, by: float) -> float:
    return max(30.0, abs(by - ay) / 2)


def curve_pieces(start: tuple[float, float], end: tuple[float, float], waypoints=None) -> list[tuple]:
    """The drawn `curve` as ('line', a, b) runs (collinear runs merged) and ('bend', a, b, depth) S-bends."""
    points = [start, *(waypoints or []), end]
    pieces: list[tuple] = []
    for a, b in zip(points, points[1:]):
        if waypoints and (a[0] == b[0] or a[1] == b[1]):
            last = pieces[-1] if pieces else None
            if last is not None and last[0] == "line" and (last[1][0] == a[0] == b[0] or last[1][1] == a[1] == b[1]):
                pieces[-1] = ("line", last[1], b)
            else:
                pieces.append(("line", a, b))
        else:
            pieces.append(("bend", a, b, _bend_depth(a[1], b[1])))
    return pieces


def bend_box(a, b, depth: float) -> tuple[float, float, float, float]:
    """A box holding the S-bend from a to b (the box of its control points)."""
    return (min(a[0], b[0]), min(a[1], b[1] - depth), max(a[0], b[0]), max(a[1] + depth, b[1]))


def bend_points(a, b, depth: float) -> list[tuple[float, float]]:
    """Points along the S-bend from a to b, BEND_STEPS chords apart."""
    out = [a]
    for k in range(1, BEND_STEPS + 1):
        t = k / BEND_STEPS
        u = 1 - t
        wa, wb = u * u * u + 3 * u * u * t, 3 * u * t * t + t * t * t
        out.append((wa * a[0] + wb * b[0], wa * a[1] + wb * b[1] + 3 * u * t * (u - t) * depth))
    return out


def rounded(start: QPointF, waypoints: list[tuple[float, float]], end: QPointF) -> QPainterPath:
    """The polyline start -> waypoints -> end with its corners rounded."""
    points = [start, *(QPointF(x, y) for x, y in waypoints), end]
    path = QPainterPath(start)
    for a, p, b in zip(points, points[1:], points[2:]):
        into, out = p - a, b - p
        r_in = min(CORNER, _length(into) / 2)
        r_out = min(CORNER, _length(out) / 2)
        path.lineTo(p - into * (r_in / max(_length(into), 1e-9)))
        path.quadTo(p, p + out * (r_out / max(_length(out), 1e-9)))
    path.lineTo(end)
    return path


def port_xy(item, port: QPointF) -> tuple[float, float]:
    """Scene (x, y) of `port`, a point of top-level, untransformed `item`."""
    return item.x() + port.x(), item.y() + port.y()


def _pairs(points: list) -> list:
    return list(zip(points, points[1:]))


def _length(v: QPointF) -> float:
    return abs(v.x()) + abs(v.y())


def _themed_pen(kind) -> QPen:
    """The shared edge pen of `kind` (False: plain, True: selected, 'far': unselected, zoomed far out) in the active theme."""
    colours = theme.active()
    if _PENS[0] is not colours:
        _PENS[:] = [colours, {}]
    pen = _PENS[1].get(kind)
    if pen is None:
        colour, width = {False: (colours.edge, 1.6), True: (colours.selected, 2.6), "far": (colours.edge, 1.0)}[kind]
        pen = _PENS[1][kind] = QPen(colour, width)
        pen.setCosmetic(True)
    return pen


class CountedObstacles(Obstacles):
    """Obstacles that count their changes: an edge whose ends and waypoints stay put needs no new route while the count holds."""

    def __init__(self, margin: float = 0.0):
        self.version = 0
        super().__init__(margin=margin)

    def set(self, name: str, pos, stray: bool = True) -> None:
        before = (self.rects.get(name), name in self.strays)
        super().set(name, pos, stray)
        if (self.rects.get(name), name in self.strays) != before:
            self.version += 1

    def remove(self, name: str) -> None:
        if name in self.rects:
            self.version += 1
        super().remove(name)


class EdgeLabel(QGraphicsSimpleTextItem):
    """The tensor shape an edge carries, on a pale box just above the input port it feeds (in the gap between rows, so
    it never sits on a node; a node's odd inputs one step higher than its even ones); not drawn when too small to read."""

    label_font = QFont("Sans Serif", 7)

    def __init__(self, parent: QGraphicsItem):
        super().__init__(parent)
        self.setFont(self.label_font)
        self.setBrush(theme.active().text)

    def boundingRect(self) -> QRectF:
        return super().boundingRect().adjusted(-3, -1, 3, 1)

    def place(self, port: QPointF, index: int) -> None:
        """Centre the label above input port `index` at scene point `port`."""
        text = super().boundingRect()
        rise = LABEL_RISE + (index % 2) * LABEL_STAGGER
        self.setPos(port.x() - text.width() / 2, port.y() - rise - text.height() / 2)

    def paint(self, painter, option, widget=None) -> None:
        if option.levelOfDetailFromTransform(painter.worldTransform()) < LABEL_DETAIL:
            return
        colours = theme.active()
        painter.setPen(QPen(colours.label_border, 0.8))
        painter.setBrush(colours.label_fill)
        painter.drawRoundedRect(self.boundingRect(), 3, 3)
        super().paint(painter, option, widget)


class EdgeItem(QGraphicsPathItem):
    """The edge feeding input `index` of `dst` from output `out` of `src` (both NodeItems); `cached` as for NodeItem."""

    def __init__(self, src, out: int, dst, index: int, route_of, obstacles=None, cached: bool = True):
        super().__init__()
        self.src = src
        self.out = out
        self.dst = dst
        self.index = index
        self.route_of = route_of
        self.obstacles = obstacles
        self.label: EdgeLabel | None = None
        self.routed: tuple | None = None  # the ends, waypoints and obstacles' version the path was last routed for
        if cached:
            self.setCacheMode(CACHED)
        self.setFlags(SELECTABLE)
        self.setPen(_themed_pen(False))
        src.edges.add(self)
        dst.edges.add(self)
        self.update_path()

    def detach(self) -> None:
        self.src.edges.discard(self)
        self.dst.edges.discard(self)

    def update_path(self) -> None:
        """Route the path between the ports, unless its ends, waypoints and the counted obstacles are as at the last routing."""
        src, dst = self.src, self.dst
        a = src.output_xy(self.out) if isinstance(src, NodeItem) else port_xy(src, src.output_port(self.out))
        b = dst.input_xy(self.index) if isinstance(dst, NodeItem) else port_xy(dst, dst.input_port(self.index))
        points = self.route_of(dst.name, self.index)
        obstacles = self.obstacles
        version = obstacles.version if isinstance(obstacles, CountedObstacles) else None
        routed = (*a, *b, points, version)
        if version is not None and routed == self.routed:
            return
        self.routed = routed
        if obstacles is None or self._clear(a, b, points):
            self.setPath(curve_xy(a, b, points))
        elif points is not None and self._clear(a, b, None):
            self.setPath(curve_xy(a, b))
        else:
            route = orthogonal_route(a, b, obstacles, (src.name, dst.name))
            self.setPath(rounded(QPointF(*a), route, QPointF(*b)) if route is not None else curve_xy(a, b, points))
        if self.label is not None:
            self.label.place(QPointF(*b), self.index)

    def _clear(self, a: tuple[float, float], b: tuple[float, float], points) -> bool:
        """Whether the curve from port `a` through `points` to port `b` touches no node but its own ends (without points,
        it must run downward)."""
        if not points and b[1] <= a[1]:
            return False
        strays = bool(points)  # an auto-layout route is clear of every node still where that layout put it
        if strays and not self.obstacles.strays:
            return True
        ends = (self.src.name, self.dst.name)
        first_hit = self.obstacles.first_hit
        if not points:  # one S-bend: clear when nothing is near its box, else when no chord along it touches a node
            depth = _bend_depth(a[1], b[1])
            return first_hit(*bend_box(a, b, depth), ends) is None or not any(first_hit(*p, *q, ends) is not None for p, q in _pairs(bend_points(a, b, depth)))

        def hit(*box) -> bool:
            return first_hit(*box, ends, strays) is not None

        pieces = curve_pieces(a, b, points)
        boxes = [(*piece[1], *piece[2]) if piece[0] == "line" else bend_box(*piece[1:]) for piece in pieces]
        if len(boxes) > 1:
            xs, ys = [box[0] for box in boxes] + [box[2] for box in boxes], [box[1] for box in boxes] + [box[3] for box in boxes]
            if not hit(min(xs), min(ys), max(xs), max(ys)):
                return True  # nothing near the whole route
        for piece, box in zip(pieces, boxes):
            if hit(*box) and (piece[0] == "line" or any(hit(*p, *q) for p, q in _pairs(bend_points(*piece[1:])))):
                return False
        return True

    def set_label(self, text: str | None) -> None:
        """Show `text` (a tensor shape) at the middle of the edge; None removes the label."""
        if text is None:
            if self.label is not None:
                self.label.setParentItem(None)
                if self.label.scene() is not None:
                    self.label.scene().removeItem(self.label)
                self.label = None
            return
        if self.label is None:
            self.label = EdgeLabel(self)
        if self.label.text() != text:
            self.label.setText(text)
        self.label.place(self.dst.mapToScene(self.dst.input_port(self.index)), self.index)

    def shape(self) -> QPainterPath:
        return _STROKER.createStroke(self.path())

    def show_selected(self, selected: bool) -> None:
        self.setPen(_themed_pen(selected))

    def paint(self, painter, option, widget=None) -> None:
        if self.isSelected():
            option.state &= ~QStyle.StateFlag.State_Selected
        elif option.levelOfDetailFromTransform(painter.worldTransform()) < LABEL_DETAIL:
            painter.strokePath(self.path(), _themed_pen("far"))  # zoomed far out: a one-pixel line strokes several times faster than a wider one
            return
        super().paint(painter, option, widget)
