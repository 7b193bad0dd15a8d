"""A node on the canvas: op, key attributes, output shape and cost, tinted by its share of the heatmap metric.

Input ports sit on the top edge (one per input, plus a free one for variadic ops such as Concat
and Add); output ports on the bottom edge (one per output, several for ChannelSplit).
"""

from __future__ import annotations

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsRectItem, QStyleOptionGraphicsItem

from convstudio.designer.cli.common import human_bytes
from convstudio.designer.gui import theme
from convstudio.designer.gui.layout import NODE_HEIGHT, NODE_WIDTH
from convstudio.designer.gui.messages import for_people, unknown_shape_text
from convstudio.ir.graph import Node

PORT_RADIUS = 5.0
DETAIL_THRESHOLD = 0.4
BOUNDS = QRectF(-PORT_RADIUS - 1, -PORT_RADIUS - 1, NODE_WIDTH + 2 * PORT_RADIUS + 2, NODE_HEIGHT + 2 * PORT_RADIUS + 2)
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
MAX_TINTS = 256  # tints, pens and brushes kept (the canvas draws with a few dozen)
_TINTS: list = [None, {}]  # [the theme, {heat: tint}]
_PENS: dict[tuple[int, float], QPen] = {}
_BRUSHES: dict[int, QBrush] = {}
NODE_RECT = QRectF(0, 0, NODE_WIDTH, NODE_HEIGHT)
ACCENT_BAR = QRectF(1, 1, 5, NODE_HEIGHT - 2)
TEXT_BOXES = [QRectF(10, 4, NODE_WIDTH - 14, 16)] + [QRectF(10, 20 + row * 15, NODE_WIDTH - 14, 15) for row in range(3)]
TEXT_ALIGN = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter


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


def scope(batch: int | None) -> str:
    """What the figures shown count: 'per sample', or 'batch 8'."""
    return f"batch {batch}" if batch else "per sample"


def blend(t: float) -> QColor:
    """The node tint at heat `t` (0..1), from the theme's node colour to its hot colour (shared: not to be modified)."""
    colours = theme.active()
    t = max(0.0, min(1.0, t))
    if _TINTS[0] is not colours:
        _TINTS[:] = [colours, {}]
    tint = _TINTS[1].get(t)
    if tint is None:
        tint = QColor(
            int(colours.node.red() + (colours.hot.red() - colours.node.red()) * t),
            int(colours.node.green() + (colours.hot.green() - colours.node.green()) * t),
            int(colours.node.blue() + (colours.hot.blue() - colours.node.blue()) * t),
        )
        if len(_TINTS[1]) < MAX_TINTS:
            _TINTS[1][t] = tint
    return tint


def pen(colour: QColor, width: float) -> QPen:
    """A shared pen of `colour` and `width` (building one per paint call costs more than the drawing)."""
    key = (colour.rgba(), width)
    found = _PENS.get(key)
    if found is None:
        if len(_PENS) >= MAX_TINTS:
            _PENS.clear()
        found = _PENS[key] = QPen(colour, width)
    return found


def brush(colour: QColor) -> QBrush:
    """A shared solid brush of `colour`."""
    key = colour.rgba()
    found = _BRUSHES.get(key)
    if found is None:
        if len(_BRUSHES) >= MAX_TINTS:
            _BRUSHES.clear()
        found = _BRUSHES[key] = QBrush(colour)
    return found


NODE_FLAGS = QGraphicsItem.GraphicsItemFlag.ItemIsSelectable | QGraphicsItem.GraphicsItemFlag.ItemIsMovable
CACHED = QGraphicsItem.CacheMode.DeviceCoordinateCache
NO_PEN = QPen(Qt.PenStyle.NoPen)


class NodeItem(QGraphicsRectItem):
    """Draws one node; the scene keeps its text, ports and tint in step with the controller. `cached`: keep its drawing
    as a pixmap (worth it where text is drawn; zoomed far out the plain box is cheaper to draw than to cache).
    A rectangle item of BOUNDS without pen, so that Qt reads its bounds without calling Python (the scene's index,
    every frame's culling and the drawn rectangle ask for them thousands of times on a large design)."""

    title_font = QFont("Sans Serif", 9, QFont.Weight.Bold)
    body_font = QFont("Sans Serif", 8)
    accent = CATEGORY_COLORS["structure"]
    error: str | None = None
    heat = 0.0
    n_inputs = 1
    n_outputs = 1
    source: tuple | None = None  # (node, batch, culprit) of the last sync
    _texts: list[str] | tuple | None = ("", "", "", "")  # until the first sync
    _tip: str | None = ""
    lines: list[str] | tuple = ()  # the text lines shortened to fit, once drawn in detail
    outline = pen(accent, 1.5)  # the border when not selected (set by each sync)

    def __init__(self, name: str, cached: bool = True):
        super().__init__(BOUNDS)
        self.setPen(NO_PEN)
        self.name = name
        self.setFlags(NODE_FLAGS)
        if cached:
            self.setCacheMode(CACHED)
        self.setZValue(1)
        self.fill = blend(0.0)
        self.edges: set = set()

    # ---- content ---------------------------------------------------------------------------
    def sync(self, node: Node, heat: float, batch: int | None = None, culprit: str | None = None) -> None:
        """Refresh ports and colour from the node and its analysis results; its text and tooltip are composed when first
        needed (most of a large design's nodes are never drawn in detail nor hovered). Figures count `batch` samples
        (None: one, said as 'per sample'); `culprit` is the upstream node whose error leaves the shape unknown."""
        opdef, colours = node.opdef, theme.active()
        self.error = for_people(node.meta.get("error") or node.meta.get("share_error"))
        lo, hi = opdef.arity
        self.n_inputs = len(node.inputs) + (1 if hi is None else 0) if hi != 0 else 0
        self.n_inputs = max(self.n_inputs, lo)
        self.n_outputs = 0 if node.op == "Output" else opdef.num_outputs(node.resolved)
        self.accent = CATEGORY_COLORS.get(opdef.category, CATEGORY_COLORS["structure"])
        if opdef.category == "io" and colours.dark:
            self.accent = colours.subtext  # the io accent is near black
        self.source = (node, batch, culprit)
        self._texts = None
        self._tip = None
        self.lines = ()
        self.fill = colours.error_fill if self.error else blend(heat)
        self.outline = pen(colours.error_text if self.error else self.accent, 1.5)
        self.heat = heat
        self.update()  # the bounds never change (BOUNDS)

    @property
    def texts(self) -> list[str]:
        """The four lines drawn: name, op and key attributes, output shape, cost (or the error)."""
        if self._texts is None:
            self._describe()
        return self._texts

    def toolTip(self) -> str:
        """The tooltip set on the item, else the node's figures in full."""
        if self._tip is None:
            self._describe()
        return super().toolTip() or self._tip

    def _describe(self) -> None:
        node, batch, culprit = self.source
        meta = node.meta
        cost = meta.get("cost")
        shapes = meta.get("shapes")
        n = batch or 1
        shape_text = f"{shapes_text(shapes, f'{batch}×' if batch else '')} · {scope(batch)}" if shapes else "shape unknown"
        if self.error:
            cost_text = self.error
        elif cost is not None and shapes:
            cost_text = f"{compact(cost.macs * n)} MACs · {compact(cost.params)} params"
        else:
            cost_text = f"upstream node {culprit} has an error" if culprit else "cost unknown"
        self._texts = [node.name, f"{node.op}  {key_attributes(node)}".strip(), shape_text, cost_text]
        tip = [f"<b>{node.name}</b> ({node.op})", shape_text if shapes else unknown_shape_text(culprit)]
        if cost is not None and shapes and not self.error:
            tip.append(f"params {cost.params:,} · MACs {cost.macs * n:,} · FLOPs {cost.flops * n:,} ({scope(batch)})")
            tip.append(f"activation {human_bytes(cost.activation_bytes * n)} ({scope(batch)})")
            if cost.latency_ms is not None:
                tip.append(f"predicted latency {cost.latency_ms:.3f} ms (batch {n})")
        if self.error:
            tip.append(f"<span style='color:{theme.active().error_text.name()}'>{self.error}</span>")
        self._tip = "<br>".join(tip)

    def set_heat(self, heat: float) -> None:
        """Change only the tint (the heatmap's maximum moved); repaints when the colour differs."""
        if self.error or heat == self.heat:
            return
        self.heat = heat
        self.fill = blend(heat)
        self.update()

    # ---- geometry --------------------------------------------------------------------------
    def input_port(self, index: int) -> QPointF:
        """Local position of input port `index`."""
        return QPointF(NODE_WIDTH * (index + 1) / (self.n_inputs + 1), 0.0)

    def output_port(self, index: int) -> QPointF:
        return QPointF(NODE_WIDTH * (index + 1) / (self.n_outputs + 1), NODE_HEIGHT)

    def input_xy(self, index: int) -> tuple[float, float]:
        """Scene (x, y) of input port `index` (the item is top-level and untransformed)."""
        return self.x() + NODE_WIDTH * (index + 1) / (self.n_inputs + 1), self.y() + 0.0  # as pos() + input_port(index)

    def output_xy(self, index: int) -> tuple[float, float]:
        """Scene (x, y) of output port `index`."""
        return self.x() + NODE_WIDTH * (index + 1) / (self.n_outputs + 1), self.y() + NODE_HEIGHT

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
        selected = self.isSelected()
        far = option.levelOfDetailFromTransform(painter.worldTransform()) < DETAIL_THRESHOLD
        if far and not selected:  # the common case on a large design: a plain box in its tint
            painter.setPen(self.outline)
            painter.setBrush(brush(self.fill))
            painter.drawRect(NODE_RECT)
            return
        colours = theme.active()
        border = colours.error_text if self.error else (colours.selected if selected else self.accent)
        painter.setPen(pen(border, 3 if selected else 1.5))
        painter.setBrush(brush(self.fill))
        if far:
            painter.drawRect(NODE_RECT)
            return
        painter.drawRoundedRect(NODE_RECT, 6, 6)
        if not self.lines:
            self.lines = self.elided_lines()
        painter.fillRect(ACCENT_BAR, self.accent)
        text, subtext = theme.text_on(self.fill)
        painter.setPen(text)
        painter.setFont(self.title_font)
        painter.drawText(TEXT_BOXES[0], TEXT_ALIGN, self.lines[0])
        painter.setFont(self.body_font)
        for row, text in enumerate(self.lines[1:]):
            painter.setPen(colours.error_text if (self.error and row == 2) else subtext)
            painter.drawText(TEXT_BOXES[row + 1], TEXT_ALIGN, text)
        painter.setPen(pen(colours.port_pen, 1))
        painter.setBrush(brush(colours.port))
        for i in range(self.n_inputs):
            painter.drawEllipse(self.input_port(i), PORT_RADIUS, PORT_RADIUS)
        painter.setBrush(brush(self.accent))
        for k in range(self.n_outputs):
            painter.drawEllipse(self.output_port(k), PORT_RADIUS, PORT_RADIUS)
