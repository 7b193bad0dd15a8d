"""Pictures of the canvas: PNG and SVG of the whole design or of a selection.

File ▸ Export picture… and `convstudio design FILE --export-png out.png --export-svg out.svg` (headless,
no window) both draw the scene as the canvas shows it, minus the selection highlight. The SVG has real
<text> elements, a viewBox and a size, so it opens in a browser with readable, searchable text.
Files are written atomically.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from PyQt6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, QSize, Qt
from PyQt6.QtGui import QImage, QPainter
from PyQt6.QtSvg import QSvgGenerator

from convstudio.ir.design import Design, write_atomic
from convstudio.ir.errors import DesignError

MARGIN = 24.0
MAX_SIDE = 16384  # pixels on a PNG side
MAX_PIXELS = 40_000_000  # 160 MB of image memory; larger pictures are drawn at a smaller scale
FORMATS = (".png", ".svg")
CSS_DPI = 96  # the SVG's width and height then equal its pixel size in a browser
FONT_FAMILY = re.compile(rb'font-family="([^"]*)"')


def check_picture_path(path: str | Path, kind: str | None = None, where: str = "") -> Path:
    """A writable picture file name ending in .png or .svg (in `kind` when given); else a one-line DesignError."""
    path = Path(path)
    where = where or f"file '{path}'"
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DesignError("is a folder; give a file name", where)
    if kind is not None and suffix != kind:
        raise DesignError(f"a {kind[1:].upper()} picture's file name ends in {kind}, got '{path.name}'", where)
    if suffix not in FORMATS:
        raise DesignError(f"a picture's file name ends in .png or .svg, got '{path.name}'", where)
    if not path.resolve().parent.is_dir():
        raise DesignError("folder does not exist", where)
    return path


def picture_rect(scene, names: list[str] | None = None) -> QRectF:
    """The scene area holding what the canvas draws, or the shown nodes of `names`, the edges among them and their labels; with a margin."""
    if names is None:
        rect = scene.drawn_rect()
        if rect.isEmpty():
            raise DesignError("nothing to draw: the design has no nodes", "picture")
        return rect.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN)
    unknown = [n for n in names if n not in scene.nodes]
    if unknown:
        raise DesignError(f"no node named '{unknown[0]}'", "selection")
    keep = {n for n in names if scene.nodes[n].isVisible()}  # members of a folded group are not drawn
    if not keep:
        raise DesignError("nothing to draw: no shown nodes are selected", "picture")
    rect = QRectF()
    for name in keep:
        rect = rect.united(scene.nodes[name].sceneBoundingRect())
    for edge in scene.edges.values():
        if edge.src.name in keep and edge.dst.name in keep:
            rect = rect.united(edge.sceneBoundingRect()).united(edge.mapRectToScene(edge.childrenBoundingRect()))
    return rect.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN)


def png_scale(rect: QRectF, scale: float) -> float:
    """`scale`, made smaller when the picture would pass MAX_SIDE pixels on a side or MAX_PIXELS in all."""
    side = max(rect.width(), rect.height())
    return min(scale, MAX_SIDE / side, math.sqrt(MAX_PIXELS / (rect.width() * rect.height())))


def png_bytes(scene, names: list[str] | None = None, scale: float = 1.0) -> tuple[bytes, QSize]:
    """A PNG of `names` (or the whole design) at `scale` pixels per scene unit, on white; returns the bytes and the size."""
    rect = picture_rect(scene, names)
    scale = png_scale(rect, scale)
    size = QSize(max(1, math.ceil(rect.width() * scale)), max(1, math.ceil(rect.height() * scale)))
    image = QImage(size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.white)
    painter = QPainter(image)
    painter.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
    with scene.plain(names):
        scene.render(painter, QRectF(0, 0, size.width(), size.height()), rect, Qt.AspectRatioMode.IgnoreAspectRatio)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data), size


def svg_bytes(scene, names: list[str] | None = None, title: str = "") -> tuple[bytes, QSize]:
    """An SVG of `names` (or the whole design) in scene units, with a viewBox; returns the bytes and the size."""
    rect = picture_rect(scene, names)
    size = QSize(math.ceil(rect.width()), math.ceil(rect.height()))
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    generator = QSvgGenerator()
    generator.setOutputDevice(buffer)
    generator.setSize(size)
    generator.setResolution(CSS_DPI)
    generator.setViewBox(QRectF(0, 0, size.width(), size.height()))
    generator.setTitle(title or "ConvStudio design")
    generator.setDescription("Drawn by ConvStudio")
    painter = QPainter(generator)
    painter.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
    painter.fillRect(QRectF(0, 0, size.width(), size.height()), Qt.GlobalColor.white)
    with scene.plain(names):
        scene.render(painter, QRectF(0, 0, size.width(), size.height()), rect, Qt.AspectRatioMode.IgnoreAspectRatio)
    painter.end()
    buffer.close()
    return with_generic_fonts(bytes(data)), size


def with_generic_fonts(svg: bytes) -> bytes:
    """Add the generic sans-serif family after each font Qt names, so a browser without that font still draws sans text."""
    return FONT_FAMILY.sub(lambda m: b"font-family=\"'" + m.group(1) + b"', sans-serif\"", svg)


def export_picture(scene, path: str | Path, names: list[str] | None = None, scale: float = 1.0, title: str = "") -> QSize:
    """Write a PNG or SVG (by the file name) of `names` or the whole design; returns its size in pixels."""
    path = check_picture_path(path)
    if path.suffix.lower() == ".png":
        data, size = png_bytes(scene, names, scale)
    else:
        data, size = svg_bytes(scene, names, title)
    write_atomic(path, data)
    return size


def export_design_pictures(design: Design, outputs: list[str | Path], scale: float = 1.0, edge_shapes: bool = False) -> list[tuple[Path, QSize]]:
    """Draw `design` headless (no window) into each picture file of `outputs`; returns (file, size) for each."""
    from PyQt6.QtWidgets import QApplication

    from convstudio.designer.gui.app import application
    from convstudio.designer.gui.canvas import GraphScene
    from convstudio.designer.gui.controller import Controller

    paths = [check_picture_path(p) for p in outputs]
    if QApplication.instance() is None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # nothing is shown: no display is needed
    application()
    ctl = Controller(design)
    ctl.commit()
    scene = GraphScene(ctl)
    try:
        scene.set_edge_shapes(edge_shapes)
        return [(path, export_picture(scene, path, None, scale, design.name)) for path in paths]
    finally:
        ctl.close()
        scene.deleteLater()
