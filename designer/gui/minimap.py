"""The overview: the whole design in small with the view's visible area as a rectangle; click or drag to go there.

Cheap to repaint: the scene's nodes and edges are drawn once, as plain shapes, into a cached pixmap;
scrolling and zooming the view only redraw the rectangle over it. Edits, selection and heatmap changes re-render the pixmap, at most once
per REFRESH_MS however many arrive (or per four render times on a design so large that rendering is slow,
so the overview never takes more than a fifth of the time); a hidden overview renders when shown again, and the
first render waits until the window is up.
"""

from __future__ import annotations

import time

from PyQt6.QtCore import QEvent, QPointF, QRectF, Qt, QTimer
from PyQt6.QtGui import QColor, QPainter, QPen, QPixmap
from PyQt6.QtWidgets import QSizePolicy, QWidget

from convstudio.designer.gui import theme
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.designer.gui.node_item import NodeItem

REFRESH_MS = 250
MARGIN = 4.0
SCENE_MARGIN = 40.0


class Minimap(QWidget):
    """An overview of `view`'s scene that moves `view` when clicked or dragged."""

    def __init__(self, view, parent=None):
        super().__init__(parent)
        self.view = view
        self.ctl = view.ctl
        self.pixmap: QPixmap | None = None
        self.source = QRectF()  # the scene area the pixmap shows
        self.target = QRectF()  # where the pixmap sits in the widget
        self.renders = 0
        self.stale = False
        self.setMinimumSize(120, 90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Overview: click or drag to move the view")
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.ctl.graph_changed.connect(self.schedule)
        self.ctl.selection_changed.connect(self.schedule)
        self.ctl.heatmap_changed.connect(self.schedule)
        view.horizontalScrollBar().valueChanged.connect(self.update)
        view.verticalScrollBar().valueChanged.connect(self.update)
        view.zoom_changed.connect(self.update)
        view.viewport().installEventFilter(self)

    def shut_down(self) -> None:
        """Stop the pending refresh and the watch on the view (its window is closing)."""
        self.timer.stop()
        self.view.viewport().removeEventFilter(self)

    def schedule(self, *_args) -> None:
        """Re-render soon; a burst of changes costs one render."""
        if not self.isVisible():
            self.stale = True
        elif not self.timer.isActive():
            self.timer.start()

    def showEvent(self, event) -> None:
        if self.stale and self.pixmap is None:
            self.timer.start()  # the first render waits until the window is up
        elif self.stale:
            self.refresh()
        super().showEvent(event)

    def refresh(self) -> None:
        """Render the scene into the cached pixmap at the widget's size."""
        self.timer.stop()
        self.stale = False
        started = time.perf_counter()
        scene = self.view.scene()
        source = scene.drawn_rect().adjusted(-SCENE_MARGIN, -SCENE_MARGIN, SCENE_MARGIN, SCENE_MARGIN)
        area = QRectF(self.rect()).adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        if source.isEmpty() or area.isEmpty():
            self.pixmap = None
            self.update()
            return
        scale = min(area.width() / source.width(), area.height() / source.height())
        size = source.size() * scale
        self.target = QRectF(area.center().x() - size.width() / 2, area.center().y() - size.height() / 2, size.width(), size.height())
        self.source = source
        ratio = self.devicePixelRatioF()
        pixmap = QPixmap(max(1, round(size.width() * ratio)), max(1, round(size.height() * ratio)))
        pixmap.setDevicePixelRatio(ratio)
        pixmap.fill(theme.active().canvas)
        painter = QPainter(pixmap)
        painter.scale(scale, scale)
        painter.translate(-source.topLeft())
        self._draw(painter, scene)
        painter.end()
        self.pixmap = pixmap
        self.renders += 1
        self.timer.setInterval(max(REFRESH_MS, round(4000 * (time.perf_counter() - started))))
        self.update()

    @staticmethod
    def _draw(painter: QPainter, scene) -> None:
        """Edges as hairlines, nodes as boxes in their tint (blue when selected) and folded groups in theirs: at this size
        text is unreadable, and plain shapes cost a fifth of the items' own painting at a new scale (bench/overview_speed.py).
        Only members of folded groups and their edges are hidden: the rest is drawn without asking each item."""
        colours = theme.active()
        folds = scene.folds
        hidden_nodes, hidden_edges = folds.hidden, folds.hidden_edges
        painter.setPen(QPen(colours.edge, 0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        draw = painter.drawPath
        for edge in scene.edges.values():
            if edge not in hidden_edges:
                draw(edge.path())
        for edge in folds.proxies:
            if edge.isVisible():
                draw(edge.path())
        selected = {item for item in scene.selectedItems() if isinstance(item, NodeItem)}
        boxes: dict[tuple[int, int], list[QRectF]] = {}  # by (fill, outline) colour objects: one draw call per pair
        colour_of = {}
        for name, item in scene.nodes.items():
            if name in hidden_nodes:
                continue
            fill, outline = (colours.selected, colours.selected) if item in selected else (item.fill, item.accent)
            key = (id(fill), id(outline))
            rects = boxes.get(key)
            if rects is None:
                rects = boxes[key] = []
                colour_of[key] = (fill, outline)
            rects.append(QRectF(item.x(), item.y(), NODE_WIDTH, NODE_HEIGHT))
        if folds.items:
            key = (id(colours.group_fill), id(colours.group_border))
            colour_of[key] = (colours.group_fill, colours.group_border)
            boxes.setdefault(key, []).extend(QRectF(item.x(), item.y(), NODE_WIDTH, NODE_HEIGHT) for item in folds.items.values())
        for key, rects in boxes.items():
            fill, outline = colour_of[key]
            painter.setBrush(fill)
            painter.setPen(QPen(outline, 0))
            painter.drawRects(rects)

    # ---- coordinates -----------------------------------------------------------------------
    def scene_point(self, pos: QPointF) -> QPointF:
        """The scene point under widget position `pos`."""
        scale = self.target.width() / self.source.width()
        return self.source.topLeft() + (pos - self.target.topLeft()) / scale

    def widget_point(self, scene_point: QPointF) -> QPointF:
        """Where `scene_point` lies in the widget."""
        return self.target.topLeft() + (scene_point - self.source.topLeft()) * (self.target.width() / self.source.width())

    def widget_rect(self, scene_rect: QRectF) -> QRectF:
        """Where `scene_rect` lies in the widget."""
        return QRectF(self.widget_point(scene_rect.topLeft()), scene_rect.size() * (self.target.width() / self.source.width()))

    def visible_scene_rect(self) -> QRectF:
        return self.view.mapToScene(self.view.viewport().rect()).boundingRect()

    # ---- events ------------------------------------------------------------------------------
    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.update()  # the view's visible area changed size
        return super().eventFilter(watched, event)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.schedule()  # drawn again in the new theme's colours
        super().changeEvent(event)

    def resizeEvent(self, event) -> None:
        if self.pixmap is None:
            self.schedule()  # the first render waits until the window is up
        else:
            self.refresh()
        super().resizeEvent(event)

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        colours = theme.active()
        painter.fillRect(self.rect(), theme.mix(colours.canvas, colours.text, 0.12))  # a frame a shade off the canvas
        if self.pixmap is None:
            return
        painter.drawPixmap(self.target.topLeft(), self.pixmap)
        painter.setClipRect(self.target)
        painter.setPen(QPen(colours.selected, 1.5))
        veil = QColor(colours.selected)
        veil.setAlpha(30)
        painter.setBrush(veil)
        painter.drawRect(self.widget_rect(self.visible_scene_rect()))

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.pixmap is not None:
            self.view.centerOn(self.scene_point(event.position()))
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton and self.pixmap is not None:
            self.view.centerOn(self.scene_point(event.position()))
            event.accept()
            return
        super().mouseMoveEvent(event)
