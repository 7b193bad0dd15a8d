"""Canvas colours derived from the application palette, so the designer follows a light or dark system theme.

`active()` is the theme the canvas items paint with; `apply(palette)` recomputes it (the main window calls it
when it opens and whenever the palette changes). `follow_system(app)` gives the application a dark palette
while the system asks for a dark colour scheme (Qt.ColorScheme.Dark) and its style's palette is still light.
"""

from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QGuiApplication, QPalette

LIGHT_HOT = QColor(244, 140, 66)
DARK_HOT = QColor(196, 98, 32)
SELECTED = QColor(20, 100, 230)
DARK_SELECTED = QColor(90, 160, 255)
LIGHT_FILL = 140  # a fill at least this light (HSL lightness, 0-255) takes dark text


@dataclass(frozen=True)
class Theme:
    """Every colour the canvas items draw with."""

    dark: bool
    canvas: QColor
    node: QColor
    hot: QColor
    text: QColor
    subtext: QColor
    edge: QColor
    selected: QColor
    port: QColor
    port_pen: QColor
    error_fill: QColor
    error_text: QColor
    label_fill: QColor
    label_border: QColor
    group_fill: QColor
    group_border: QColor


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """The colour `t` of the way from `a` to `b`."""
    return QColor(*(round(x + (y - x) * t) for x, y in zip(a.getRgb()[:3], b.getRgb()[:3])))


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def theme_for(palette: QPalette) -> Theme:
    """The canvas colours for `palette`: the canvas from its window colour, nodes from its base, text from its text."""
    role = QPalette.ColorRole
    dark = is_dark(palette)
    window, base, text = palette.color(role.Window), palette.color(role.Base), palette.color(role.Text)
    red = QColor(255, 110, 110) if dark else QColor(200, 30, 30)
    accent = DARK_SELECTED if dark else SELECTED
    label_fill = QColor(base)
    label_fill.setAlpha(225)
    return Theme(
        dark=dark,
        canvas=mix(window, text, 0.04) if dark else mix(window, QColor(150, 160, 190), 0.08),
        node=mix(base, window, 0.3) if dark else base,
        hot=DARK_HOT if dark else LIGHT_HOT,
        text=mix(text, base, 0.05),
        subtext=mix(text, base, 0.25),
        edge=mix(text, window, 0.5),
        selected=accent,
        port=base,
        port_pen=mix(text, base, 0.3),
        error_fill=mix(base, red, 0.25),
        error_text=red,
        label_fill=label_fill,
        label_border=mix(base, text, 0.25),
        group_fill=mix(base, accent, 0.12),
        group_border=mix(accent, text, 0.3),
    )


def text_on(fill: QColor) -> tuple[QColor, QColor]:
    """(text, secondary text) colours readable on `fill`: the theme's own when they contrast with it (a node of the
    theme), else dark on a light fill and light on a dark one (a fill from elsewhere, such as a diff's status colours)."""
    colours = active()
    light_fill = fill.lightness() >= LIGHT_FILL
    if light_fill != colours.dark:
        return colours.text, colours.subtext
    return (QColor(20, 20, 24), QColor(60, 60, 66)) if light_fill else (QColor(238, 238, 242), QColor(196, 198, 206))


_active: list[Theme | None] = [None]


def active() -> Theme:
    """The theme the canvas paints with now (the application palette's until `apply` is called)."""
    if _active[0] is None:
        apply()
    return _active[0]


def apply(palette: QPalette | None = None) -> bool:
    """Derive the theme from `palette` (default: the application's); True when the colours changed."""
    new = theme_for(palette if palette is not None else QGuiApplication.palette())
    changed = new != _active[0]
    _active[0] = new
    return changed


def dark_palette() -> QPalette:
    """A dark palette for the Fusion style (used when the system is dark but the style's palette is not)."""
    palette = QPalette()
    role = QPalette.ColorRole
    colours = {
        role.Window: QColor(45, 47, 52), role.WindowText: QColor(225, 227, 232), role.Base: QColor(32, 34, 38),
        role.AlternateBase: QColor(40, 42, 47), role.Text: QColor(225, 227, 232), role.Button: QColor(52, 54, 60),
        role.ButtonText: QColor(225, 227, 232), role.ToolTipBase: QColor(52, 54, 60), role.ToolTipText: QColor(225, 227, 232),
        role.Highlight: QColor(60, 120, 215), role.HighlightedText: QColor(255, 255, 255), role.Link: QColor(110, 170, 255),
        role.PlaceholderText: QColor(140, 142, 150), role.Mid: QColor(70, 72, 78), role.Dark: QColor(25, 26, 30),
        role.Light: QColor(80, 82, 90), role.Midlight: QColor(64, 66, 72), role.Shadow: QColor(0, 0, 0),
    }
    for key, colour in colours.items():
        palette.setColor(key, colour)
    for key in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, key, QColor(130, 132, 138))
    return palette


def match_scheme(app, scheme: Qt.ColorScheme) -> None:
    """Give `app` a dark palette for the dark colour scheme when its style's own palette is light, and the style's
    palette back for any other scheme (a style that follows the system already has the right one)."""
    standard = app.style().standardPalette()
    if scheme == Qt.ColorScheme.Dark and not is_dark(standard):
        app.setPalette(dark_palette())
    elif scheme != Qt.ColorScheme.Dark and is_dark(app.palette()) and not is_dark(standard):
        app.setPalette(standard)


def follow_system(app) -> None:
    """Keep the application's palette in step with the system colour scheme (light or dark)."""
    hints = QGuiApplication.styleHints()
    hints.colorSchemeChanged.connect(lambda scheme: match_scheme(app, scheme))
    match_scheme(app, hints.colorScheme())
