"""A node on the canvas: op, key attributes, output shape and cost, tinted by its share of the heatmap metric.

Input ports sit on the top edge (one per input, plus a free one for variadic ops such as Concat
and Add); output ports on the bottom edge (one per output, several for ChannelSplit).
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from PyQt6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from convstudio.designer.cli.common import human_bytes
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.ir.graph import Node

PORT_RADIUS = 5.0
DETAIL_THRESHOLD = 0.4
BOUNDS = QRectF(-PORT_RADIUS - 1, -PORT_RADIUS - 1, NODE_WIDTH + 2 * PORT_RADIUS + 2, NODE_HEIGHT + 2 * PORT_RADIUS + 2)
BASE_COLOR = QColor(250, 250, 252)
HOT_COLOR = QColor(244, 140, 66)
ERROR_FILL = QColor(253, 222, 222)
ERROR_BORDER = QColor(200, 30, 30)
CATEGORY_COLORS = {
    "conv": QColor(66, 114, 196),
    "linear": QColor(112, 82, 184),
    "activation": QColor(70, 160, 90),
    "normalization": QColor(196, 150, 40),
    "pooling": QColor(40, 150, 160),
    "elementwise": QColor(180, 80, 120),
    "structure": QColor(120, 120, 120),
    "io": QColor(30, 30, 30),
}


def key_attributes(node: Node) -> str:
    """A short summary of the attributes that matter most for this op, e.g. '3×3 s2 →64'."""
    a = node.resolved
    parts = []
    if a.get("kernel_size") is not None:
        kh, kw = a["kernel_size"]
        parts.append(f"{kh}×{kw}")
    if a.get("stride") not in (None, (1, 1)):
        sh, sw = a["stride"]
        parts.append(f"s{sh}" if sh == sw else f"s{sh}×{sw}")
    if a.get("dilation") not in (None, (1, 1)):
        parts.append(f"d{a['dilation'][0]}")
    if a.get("groups", 1) not in (None, 1):
        parts.append(f"g{a['groups']}")
    for key in ("out_channels", "out_features"):
        if a.get(key) is not None:
            parts.append(f"→{a[key]}")
    if a.get("activation") not in (None, "none"):
        parts.append(f"+{a['activation']}")
    if a.get("output_size") is not None:
        parts.append("→" + "×".join(map(str, a["output_size"])))
    for key in ("p", "dim", "parts", "mode"):
        if key in a and a[key] is not None and not parts:
            parts.append(f"{key}={a[key]}")
    return " ".join(parts)


def compact(n: float) -> str:
    """A count in three significant digits: 118 M, 9.41 k, 36.9 k."""
    for div, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"


def shapes_text(shapes: list, lead: str = "") -> str:
    """[[64, 8, 8], [10]] -> '64×8×8  10'; `lead` (e.g. 'N×') goes before each shape."""
    return "  ".join(lead + "×".join(map(str, s)) for s in shapes)


def blend(t: float) -> QColor:
    t = max(0.0, min(1.0, t))
    return QColor(
        int(BASE_COLOR.red() + (HOT_COLOR.red() - BASE_COLOR.red()) * t),
        int(BASE_COLOR.green() + (HOT_COLOR.green() - BASE_COLOR.green()) * t),
        int(BASE_COLOR.blue() + (HOT_COLOR.blue() - BASE_COLOR.blue()) * t),
    )


class NodeItem(QGraphicsItem):
    """Draws one node; the scene keeps its text, ports and tint in step with the controller."""

    title_font = QFont("Sans Serif", 9, QFont.Weight.Bold)
    body_font = QFont("Sans Serif", 8)

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable | QGraphicsItem.GraphicsItemFlag.ItemIsMovable)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setZValue(1)
        self.texts: list[str] = ["", "", "", ""]
        self.lines: list[str] = []
        self.fill = BASE_COLOR
        self.accent = CATEGORY_COLORS["structure"]
        self.error: str | None = None
        self.heat = 0.0
        self.n_inputs = 1
        self.n_outputs = 1
        self.edges: set = set()

    # ---- content ---------------------------------------------------------------------------
    def sync(self, node: Node, heat: float) -> None:
        """Refresh text, ports, tooltip and colour from the node and its analysis results."""
        cost = node.meta.get("cost")
        shapes = node.meta.get("shapes")
        self.error = node.meta.get("error")
        lo, hi = node.opdef.arity
        self.n_inputs = len(node.inputs) + (1 if hi is None else 0) if hi != 0 else 0
        self.n_inputs = max(self.n_inputs, lo)
        self.n_outputs = 0 if node.op == "Output" else node.opdef.num_outputs(node.resolved)
        self.accent = CATEGORY_COLORS.get(node.opdef.category, CATEGORY_COLORS["structure"])
        shape_text = shapes_text(shapes) if shapes else "shape unknown"
        if self.error:
            cost_text = self.error
        elif cost is not None and shapes:
            cost_text = f"{compact(cost.macs)} MACs · {compact(cost.params)} params"
        else:
            cost_text = "cost unknown"
        self.texts = [node.name, f"{node.op}  {key_attributes(node)}".strip(), shape_text, cost_text]
        self.lines = []
        self.fill = ERROR_FILL if self.error else blend(heat)
        self.heat = heat
        tip = [f"<b>{node.name}</b> ({node.op})", shape_text]
        if cost is not None and shapes and not self.error:
            tip.append(f"params {cost.params:,} · MACs {cost.macs:,} · FLOPs {cost.flops:,}")
            tip.append(f"activation {human_bytes(cost.activation_bytes)}")
        if self.error:
            tip.append(f"<span style='color:#c81e1e'>{self.error}</span>")
        self.setToolTip("<br>".join(tip))
        self.prepareGeometryChange()
        self.update()

    def set_heat(self, heat: float) -> None:
        """Change only the tint (the heatmap's maximum moved); repaints when the colour differs."""
        if self.error or heat == self.heat:
            return
        self.heat = heat
        self.fill = blend(heat)
        self.update()

    # ---- geometry --------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        return BOUNDS

    def input_port(self, index: int) -> QPointF:
        """Local position of input port `index`."""
        return QPointF(NODE_WIDTH * (index + 1) / (self.n_inputs + 1), 0.0)

    def output_port(self, index: int) -> QPointF:
        return QPointF(NODE_WIDTH * (index + 1) / (self.n_outputs + 1), NODE_HEIGHT)

    def port_at(self, local: QPointF) -> tuple[str, int] | None:
        """('in', i) or ('out', k) when `local` is on a port (with a little slack)."""
        reach = (PORT_RADIUS + 4) ** 2
        for i in range(self.n_inputs):
            d = local - self.input_port(i)
            if d.x() ** 2 + d.y() ** 2 <= reach:
                return ("in", i)
        for k in range(self.n_outputs):
            d = local - self.output_port(k)
            if d.x() ** 2 + d.y() ** 2 <= reach:
                return ("out", k)
        return None

    def update_edges(self) -> None:
        for edge in self.edges:
            edge.update_path()

    # ---- painting ----------------------------------------------------------------------------
    def elided_lines(self) -> list[str]:
        """The four text lines shortened to the node's width (computed when first drawn in detail)."""
        width = int(NODE_WIDTH - 14)
        title = QFontMetrics(self.title_font)
        body = QFontMetrics(self.body_font)
        name, op_line, shape_line, cost_line = self.texts
        return [
            title.elidedText(name, Qt.TextElideMode.ElideMiddle, width),
            body.elidedText(op_line, Qt.TextElideMode.ElideRight, width),
            body.elidedText(shape_line, Qt.TextElideMode.ElideRight, width),
            body.elidedText(cost_line, Qt.TextElideMode.ElideRight, width),
        ]

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        rect = QRectF(0, 0, NODE_WIDTH, NODE_HEIGHT)
        selected = self.isSelected()
        border = ERROR_BORDER if self.error else (QColor(20, 100, 230) if selected else self.accent)
        painter.setPen(QPen(border, 3 if selected else 1.5))
        painter.setBrush(QBrush(self.fill))
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        if lod < DETAIL_THRESHOLD:
            painter.drawRect(rect)
            return
        painter.drawRoundedRect(rect, 6, 6)
        if not self.lines:
            self.lines = self.elided_lines()
        painter.fillRect(QRectF(1, 1, 5, NODE_HEIGHT - 2), self.accent)
        painter.setPen(QColor(25, 25, 25))
        painter.setFont(self.title_font)
        painter.drawText(QRectF(10, 4, NODE_WIDTH - 14, 16), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self.lines[0])
        painter.setFont(self.body_font)
        for row, text in enumerate(self.lines[1:]):
            color = ERROR_BORDER if (self.error and row == 2) else QColor(60, 60, 60)
            painter.setPen(color)
            box = QRectF(10, 20 + row * 15, NODE_WIDTH - 14, 15)
            painter.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
        painter.setPen(QPen(QColor(60, 60, 60), 1))
        painter.setBrush(QBrush(QColor(255, 255, 255)))
        for i in range(self.n_inputs):
            painter.drawEllipse(self.input_port(i), PORT_RADIUS, PORT_RADIUS)
        painter.setBrush(QBrush(self.accent))
        for k in range(self.n_outputs):
            painter.drawEllipse(self.output_port(k), PORT_RADIUS, PORT_RADIUS)
