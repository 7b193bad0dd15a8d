"""Pictures of the canvas: PNG and SVG of the whole design or a selection, from the File menu and from `convstudio design`."""

import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from PyQt6.QtCore import QRectF
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QGraphicsItem

from convstudio.designer.cli.main import main
from convstudio.designer.gui import mainwindow
from convstudio.designer.gui.picture import MAX_PIXELS, MAX_SIDE, picture_rect, png_scale
from convstudio.ir.design import Design, save
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, Design(build_template("lenet")), tmp_path / "recovery", (1200, 800))


def svg_texts(path) -> tuple[ET.Element, list[str]]:
    """The parsed SVG and the text of its <text> elements."""
    root = ET.parse(path).getroot()
    return root, ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def drawn_colours(image: QImage) -> tuple[int, int]:
    """(pixels not white, distinct colours) on a grid over the image."""
    pixels = [image.pixel(x, y) for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)]
    return sum(1 for p in pixels if p != 0xFFFFFFFF), len(set(pixels))


def test_png_of_the_whole_design_has_the_design_size_and_is_drawn(window, tmp_path):
    out = tmp_path / "lenet.png"
    assert window.export_picture(out)
    rect = picture_rect(window.scene)
    image = QImage(str(out))
    assert (image.width(), image.height()) == (math.ceil(rect.width()), math.ceil(rect.height()))
    assert rect.contains(window.scene.itemsBoundingRect())
    painted, colours = drawn_colours(image)
    assert painted > 0.1 * (image.width() // 3) * (image.height() // 3) and colours > 10
    assert f"({image.width()}×{image.height()})" in window.statusBar().currentMessage()


def test_svg_parses_has_a_viewbox_and_every_node_name_as_text(window, tmp_path):
    out = tmp_path / "lenet.svg"
    assert window.export_picture(out)
    root, texts = svg_texts(out)
    rect = picture_rect(window.scene)
    width, height = math.ceil(rect.width()), math.ceil(rect.height())
    assert root.get("viewBox") == f"0 0 {width} {height}" and root.get("width") and root.get("height")
    assert set(window.ctl.graph.nodes) <= set(texts)
    assert any(t.startswith("Conv2d  5×5") for t in texts) and any("156 params" in t for t in texts)  # conv1's op and cost lines
    assert not list(root.iter(f"{SVG}image"))  # drawn as shapes and text, not as embedded pixmaps
    assert "sans-serif" in out.read_text(encoding="utf-8")


def test_selection_picture_holds_only_the_selected_nodes_and_leaves_the_canvas_as_it_was(window, tmp_path):
    scene, ctl = window.scene, window.ctl
    window.edge_shapes_action.trigger()
    ctl.select(["conv1", "relu1", "pool1"])
    modes = {name: item.cacheMode() for name, item in scene.nodes.items()}
    out = tmp_path / "part.svg"
    assert window.export_picture(out, selection=True)
    _, texts = svg_texts(out)
    assert {"conv1", "relu1", "pool1", "N×6×28×28"} <= set(texts) and texts.count("N×6×28×28") == 2  # the two edges inside
    assert not {"x", "conv2", "fc1", "N×1×28×28", "N×16×10×10"} & set(texts)  # nor the edges leaving the selection
    assert ctl.selection == ["conv1", "relu1", "pool1"] and sorted(scene.selected_names()) == ["conv1", "pool1", "relu1"]
    assert all(item.isVisible() for item in [*scene.nodes.values(), *scene.edges.values()])
    assert {name: item.cacheMode() for name, item in scene.nodes.items()} == modes
    assert modes["conv1"] == QGraphicsItem.CacheMode.DeviceCoordinateCache
    png = tmp_path / "part.png"
    assert window.export_picture(png, selection=True)
    rect, whole = picture_rect(scene, ["conv1", "relu1", "pool1"]), picture_rect(scene)
    part = QImage(str(png))
    assert (part.width(), part.height()) == (math.ceil(rect.width()), math.ceil(rect.height()))
    assert part.width() < whole.width() / 3 and drawn_colours(part)[1] > 5
    assert ctl.undo_stack.count() == 0


def test_selection_picture_needs_a_selection_and_bad_paths_write_nothing(window, tmp_path):
    window.ctl.select([])
    assert not window.export_picture(tmp_path / "x.png", selection=True)
    assert "select the nodes" in window.statusBar().currentMessage()
    for bad, said in ((tmp_path / "missing" / "x.png", "folder does not exist"), (tmp_path, "is a folder"),
                      (tmp_path / "x.jpg", "ends in .png or .svg")):
        assert not window.export_picture(bad)
        message = window.statusBar().currentMessage()
        assert message.startswith("error: ") and said in message and str(bad) in message
    assert [p.name for p in tmp_path.iterdir() if p.name != "recovery"] == []  # nothing written, no temp files


def test_file_menu_offers_picture_export(window, tmp_path, monkeypatch):
    files = {a.text() for a in window.menuBar().actions()[0].menu().actions()}
    assert {"Export picture...", "Export selection as picture..."} <= files
    out = tmp_path / "chosen.svg"
    monkeypatch.setattr(mainwindow.QFileDialog, "getSaveFileName", lambda *args: (str(out), "SVG drawing (*.svg)"))
    window.export_picture_action.trigger()
    assert set(window.ctl.graph.nodes) <= set(svg_texts(out)[1])


def test_huge_pictures_are_drawn_at_a_smaller_scale():
    assert png_scale(QRectF(0, 0, 800, 600), 2.0) == 2.0
    assert png_scale(QRectF(0, 0, 100_000, 500), 1.0) * 100_000 <= MAX_SIDE
    scale = png_scale(QRectF(0, 0, 12_000, 12_000), 1.0)
    assert (12_000 * scale) ** 2 <= MAX_PIXELS * 1.0001


# ---- the command line ------------------------------------------------------------------------------
def test_cli_exports_png_and_svg_headless(tmp_path):
    design = tmp_path / "net.json"
    save(Design(build_template("lenet")), design)
    before = design.read_bytes()
    png, svg = tmp_path / "net.png", tmp_path / "net.svg"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", "design", str(design), "--export-png", str(png),
                             "--export-svg", str(svg), "--scale", "2", "--edge-shapes"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    image = QImage(str(png))
    assert result.stdout.splitlines()[0] == f"wrote {png} ({image.width()}x{image.height()})"
    root, texts = svg_texts(svg)
    _, _, width, height = map(float, root.get("viewBox").split())
    assert result.stdout.splitlines()[1] == f"wrote {svg} ({width:.0f}x{height:.0f})"
    assert (image.width(), image.height()) == (math.ceil(2 * width), math.ceil(2 * height))  # --scale 2
    assert drawn_colours(image)[1] > 10
    assert {"x", "conv1", "conv2", "fc3", "logits", "N×6×28×28"} <= set(texts)
    assert design.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.png", "net.svg"]  # no temp files left


def test_cli_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    design = tmp_path / "net.json"
    save(Design(build_template("lenet")), design)
    cases = [
        (["--export-png", tmp_path / "no" / "x.png"], "folder does not exist", "--export-png"),
        (["--export-svg", tmp_path], "is a folder", "--export-svg"),
        (["--export-png", tmp_path / "x.svg"], "ends in .png", "--export-png"),
        (["--export-svg", tmp_path / "x.png"], "ends in .svg", "--export-svg"),
        (["--export-png", tmp_path / "x.png", "--scale", "big"], "scale must be", "--scale"),
        (["--export-png", tmp_path / "x.png", "--scale", "0"], "scale must be", "--scale"),
        (["--export-png", tmp_path / "x.png", "--diff", design], "not a diff", "--diff"),
    ]
    for extra, said, where in cases:
        code = main(["design", str(design), *map(str, extra)])
        out, err = capsys.readouterr()
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert said in err and where in err and "Traceback" not in err
    code = main(["design", str(tmp_path / "missing.json"), "--export-png", str(tmp_path / "x.png")])
    assert code == 2 and "missing.json" in capsys.readouterr().err
    odd = tmp_path / "net.svg"  # a design file that happens to end in .svg is read, never overwritten
    odd.write_bytes(design.read_bytes())
    assert main(["design", str(odd), "--export-svg", str(odd)]) == 2
    assert "would overwrite the design file" in capsys.readouterr().err and odd.read_bytes() == design.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.svg"]


def test_a_folded_design_is_drawn_as_the_canvas_shows_it(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path / "recovery", (1400, 900))
    stages = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    win.ctl.set_collapsed(stages, True)
    out = tmp_path / "folded.svg"
    assert win.export_picture(out)
    root, texts = svg_texts(out)
    assert {f"▸ {g}" for g in stages} | {"x", "logits"} <= set(texts)
    assert not {"conv1", "layer1_0_conv1", "fc"} & set(texts)  # the members of folded groups are not drawn
    assert float(root.get("viewBox").split()[3]) < 800  # sized to the folded design, not to its hidden members
    win.ctl.select(["layer1_0_conv1"])
    assert not win.export_picture(tmp_path / "member.png", selection=True)
    assert "no shown nodes are selected" in win.statusBar().currentMessage()
    win.minimap.refresh()
    assert win.minimap.source.height() < 800
