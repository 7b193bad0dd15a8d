"""An edge: a smooth curve from a producer's output port to a consumer's input port, drawn under nodes.

When the auto-layout gave the edge a lane (it spans several layers), the curve runs through the
lane's waypoints so it stays clear of the nodes it passes.
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF
from PyQt6.QtGui import QColor, QPainterPath, QPainterPathStroker, QPen
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyle

EDGE_COLOR = QColor(110, 120, 135)
SELECTED_COLOR = QColor(20, 100, 230)


def curve(start: QPointF, end: QPointF, waypoints: list[tuple[float, float]] | None = None) -> QPainterPath:
    """A downward S-curve from start to end; through waypoints, straight runs join S-curved bends."""
    path = QPainterPath(start)
    points = [QPointF(x, y) for x, y in (waypoints or [])]
    if not points:
        _bend(path, start, end)
        return path
    for a, b in zip([start, *points], [*points, end]):
        if a.x() == b.x() or a.y() == b.y():
            path.lineTo(b)
        else:
            _bend(path, a, b)
    return path


def _bend(path: QPainterPath, a: QPointF, b: QPointF) -> None:
    dy = max(30.0, abs(b.y() - a.y()) / 2)
    path.cubicTo(QPointF(a.x(), a.y() + dy), QPointF(b.x(), b.y() - dy), b)


class EdgeItem(QGraphicsPathItem):
    """The edge feeding input `index` of `dst` from output `out` of `src` (both NodeItems)."""

    def __init__(self, src, out: int, dst, index: int, route_of):
        super().__init__()
        self.src = src
        self.out = out
        self.dst = dst
        self.index = index
        self.route_of = route_of
        self.setZValue(0)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setPen(self._pen(False))
        src.edges.add(self)
        dst.edges.add(self)
        self.update_path()

    def detach(self) -> None:
        self.src.edges.discard(self)
        self.dst.edges.discard(self)

    def update_path(self) -> None:
        start = self.src.mapToScene(self.src.output_port(self.out))
        end = self.dst.mapToScene(self.dst.input_port(self.index))
        self.setPath(curve(start, end, self.route_of(self.dst.name, self.index)))

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(8)
        return stroker.createStroke(self.path())

    def show_selected(self, selected: bool) -> None:
        self.setPen(self._pen(selected))

    @staticmethod
    def _pen(selected: bool) -> QPen:
        pen = QPen(SELECTED_COLOR if selected else EDGE_COLOR, 2.6 if selected else 1.6)
        pen.setCosmetic(True)
        return pen

    def paint(self, painter, option, widget=None) -> None:
        if self.isSelected():
            option.state &= ~QStyle.StateFlag.State_Selected
        super().paint(painter, option, widget)
