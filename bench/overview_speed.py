"""How cheap the overview (minimap) is: drawing its cached picture as plain shapes versus rendering the scene's
items into the same picture, and a repaint when the view scrolls (only the rectangle over the cached picture)
versus a re-render; also finding nodes and labelling every edge with its shape.

Run: python bench/overview_speed.py [--repeat N]
Runs headless (QT_QPA_PLATFORM=offscreen unless a platform is set). Prints medians and ratios measured side by
side in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt6.QtCore import QRectF, Qt  # noqa: E402
from PyQt6.QtGui import QPainter, QPixmap  # noqa: E402

from convstudio.designer.gui.app import application  # noqa: E402
from convstudio.designer.gui.mainwindow import MainWindow  # noqa: E402
from convstudio.ir.design import Design  # noqa: E402
from convstudio.ir.query import find_nodes  # noqa: E402
from convstudio.ir.templates.blocks import bottleneck_residual  # noqa: E402
from convstudio.ir.templates.resnet import resnet  # noqa: E402

DESIGNS = {"resnet152": (3, 8, 36, 3), "resnet_2k": (3, 24, 170, 3), "resnet_10k": (3, 100, 900, 3)}


def median_ms(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def scene_render(window) -> None:
    """What the overview would cost drawn with the scene's own items (scene.render) at the overview's size."""
    minimap = window.minimap
    pixmap = QPixmap(max(1, round(minimap.target.width())), max(1, round(minimap.target.height())))
    pixmap.fill(Qt.GlobalColor.white)
    painter = QPainter(pixmap)
    window.scene.render(painter, QRectF(0, 0, pixmap.width(), pixmap.height()), minimap.source)
    painter.end()


def measure(name: str, layers, repeat: int) -> dict:
    app = application()
    window = MainWindow(Design(resnet(name, bottleneck_residual, 4, layers, (3, 224, 224), 1000)), autosave=False)
    window.close_prompt = lambda: "discard"
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    minimap = window.minimap
    result = {
        "nodes": len(window.ctl.graph),
        "overview": median_ms(minimap.refresh, repeat),
        "scene_render_first": median_ms(lambda: scene_render(window), 1),  # items paint at this scale for the first time
        "scene_render": median_ms(lambda: scene_render(window), repeat),
        "repaint": median_ms(minimap.repaint, repeat),
        "find": median_ms(lambda: find_nodes(window.ctl.graph, "op:Conv2d kernel_size=3"), repeat),
        "labels": median_ms(lambda: window.scene.set_edge_shapes(True), 1),
    }
    window.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'design':<11} {'nodes':>6} {'overview ms':>12} {'scene.render ms (first, then)':>30} {'ratio':>6} {'repaint ms':>11} "
          f"{'re-render/repaint':>18} {'find ms':>8} {'labels ms':>10}")
    for name, layers in DESIGNS.items():
        r = measure(name, layers, args.repeat)
        renders = f"{r['scene_render_first']:.1f}, {r['scene_render']:.1f}"
        print(f"{name:<11} {r['nodes']:>6} {r['overview']:>12.1f} {renders:>30} {r['scene_render'] / r['overview']:>5.1f}x "
              f"{r['repaint']:>11.2f} {r['overview'] / r['repaint']:>17.0f}x {r['find']:>8.1f} {r['labels']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
