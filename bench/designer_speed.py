"""How fast the designer is: open + auto-layout + render of a resnet152 (~500 nodes) and a ~2,000-node
design, and one attribute edit until the cost panel shows the new numbers.

Run: python bench/designer_speed.py [--repeat N] [--shots DIR]
Runs headless (QT_QPA_PLATFORM=offscreen unless a platform is set). Targets: open + layout + render
under 2 s for each design; an attribute edit to a refreshed cost panel under 50 ms. With --shots,
saves what the window shows after auto-layout (fit to the whole graph, and at readable zoom).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from convstudio.designer.gui.app import application  # noqa: E402
from convstudio.designer.gui.mainwindow import MainWindow  # noqa: E402
from convstudio.ir.design import Design, load, save  # noqa: E402
from convstudio.ir.templates.blocks import bottleneck_residual  # noqa: E402
from convstudio.ir.templates.resnet import resnet  # noqa: E402

DESIGNS = {
    "resnet152": (3, 8, 36, 3),
    "resnet_2k": (3, 24, 170, 3),
}


def write_design(name: str, layers, folder: Path) -> Path:
    """A bottleneck ResNet with `layers` blocks per stage, saved without layout (opening lays it out)."""
    path = folder / f"{name}.json"
    save(Design(resnet(name, bottleneck_residual, 4, layers, (3, 224, 224), 1000)), path)
    return path


def open_layout_render(path: Path, shots: Path | None) -> dict:
    """Milliseconds for each phase, from reading the file to pixels of the whole window."""
    app = application()
    t0 = time.perf_counter()
    window = MainWindow(load(path), autosave=False)
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    t1 = time.perf_counter()
    window.ctl.auto_layout()
    window.view.fit_all()
    app.processEvents()
    t2 = time.perf_counter()
    image = window.grab()
    t3 = time.perf_counter()
    if shots is not None:
        image.save(str(shots / f"{path.stem}_fit.png"))
        window.view.show_readable()
        app.processEvents()
        window.grab().save(str(shots / f"{path.stem}_readable.png"))
    nodes = len(window.ctl.graph)
    edit_ms, repaint_ms = attribute_edit(window)
    window.close_prompt = lambda: "discard"
    window.close()
    phases = {"open": (t1 - t0) * 1e3, "layout": (t2 - t1) * 1e3, "render": (t3 - t2) * 1e3}
    return {"nodes": nodes, **phases, "edit": edit_ms, "repaint": repaint_ms}


def attribute_edit(window, repeat: int = 15) -> tuple[float, float]:
    """Median ms of changing one conv's output channels until the cost panel holds the new numbers,
    and until the window has also repainted (canvas fitted to the whole graph: every item visible)."""
    app = application()
    ctl = window.ctl
    convs = [n for n in ctl.graph.topo_order() if ctl.graph.nodes[n].op == "Conv2d"]
    name = convs[len(convs) // 2]
    base = ctl.graph.nodes[name].resolved["out_channels"]
    updated, painted = [], []
    for i in range(repeat):
        value = base + 8 * (i % 2 + 1)
        t0 = time.perf_counter()
        ctl.set_attr(name, "out_channels", value)
        shown = window.cost_panel.totals.toolTip().splitlines()[0]
        t1 = time.perf_counter()
        app.processEvents()
        t2 = time.perf_counter()
        assert shown == f"params {ctl.report.total.params:,}", "cost panel is stale"
        updated.append((t1 - t0) * 1e3)
        painted.append((t2 - t0) * 1e3)
    return statistics.median(updated), statistics.median(painted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per design (median reported)")
    parser.add_argument("--shots", type=Path, help="folder for screenshots after auto-layout")
    args = parser.parse_args()
    application()
    print(
        f"{'design':<11}{'nodes':>7}{'open ms':>10}{'layout ms':>11}{'render ms':>11}{'total ms':>10}"
        f"{'edit ms':>9}{'+paint ms':>11}  targets (total, edit)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, layers in DESIGNS.items():
            path = write_design(name, layers, Path(tmp))
            runs = [open_layout_render(path, args.shots if i == 0 else None) for i in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in runs) for k in ("open", "layout", "render", "edit", "repaint")}
            total = med["open"] + med["layout"] + med["render"]
            ok = "ok" if total < 2000 and med["edit"] < 50 else "MISSED"
            print(
                f"{name:<11}{runs[0]['nodes']:>7}{med['open']:>10.0f}{med['layout']:>11.0f}{med['render']:>11.0f}"
                f"{total:>10.0f}{med['edit']:>9.1f}{med['repaint']:>11.1f}  <2000, <50 {ok}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
