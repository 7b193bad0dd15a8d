"""How fast the designer is, measured side by side in one run: open + auto-layout + render of bottleneck
ResNets of about 2,000, 5,000 and 10,000 nodes saved without positions (opening lays them out) with the growth
ratios, and of the 10,000-node one saved with the positions of that layout ("10k placed": opening keeps them and
computes the layered layout only for the edges' lanes, which the file does not hold), attribute edits until the
cost panel shows the new numbers and the repaint after them ("edit": a layer changes alone; "edit max": the costliest
layer grows, so every tint shifts), and resnet152 rendered with every group folded.

Run: python bench/designer_speed.py [--repeat N] [--shots DIR]
Runs headless (QT_QPA_PLATFORM=offscreen unless a platform is set). Targets: a 10,000-node design opens, lays
out and renders in under 3 s; an attribute edit reaches the cost panel in under 50 ms and repaints in under
50 ms; resnet152 folded renders in under 200 ms; render time grows no faster than the node count (ratios
near 2.5 and 5). "layout" is Auto-layout of the design just laid out on opening: the layered layout of an
unchanged graph is reused and no edge is routed again, so what it measures is replacing every position as one
undo step and the first paint of the whole design fitted to the view. Every figure is given as wall-clock time and
as this process's CPU time, which other processes on a busy machine inflate less. Each run starts from a clean heap: the
window of the run before is deleted and collected outside the measured phases. With --shots, saves what the window shows after
auto-layout (fit to the whole graph, and at readable zoom), and resnet18 at readable zoom.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt6.QtCore import QCoreApplication, QEvent  # noqa: E402

from convstudio.designer.gui.app import application  # noqa: E402
from convstudio.designer.gui.layout import layered_layout  # noqa: E402
from convstudio.designer.gui.mainwindow import MainWindow  # noqa: E402
from convstudio.ir.design import Design, load, save  # noqa: E402
from convstudio.ir.templates import build_template  # noqa: E402
from convstudio.ir.templates.blocks import bottleneck_residual  # noqa: E402
from convstudio.ir.templates.resnet import resnet  # noqa: E402

DESIGNS = {  # ten nodes per bottleneck block; whether the file holds every node's position
    "resnet_2k": ((3, 24, 170, 3), False),
    "resnet_5k": ((3, 24, 468, 3), False),
    "resnet_10k": ((3, 24, 968, 3), False),
    "10k placed": ((3, 24, 968, 3), True),
}
PHASES = ("open", "layout", "render", "edit", "repaint", "edit max", "repaint max")


def write_design(name: str, layers, folder: Path, placed: bool = False) -> Path:
    """A bottleneck ResNet with `layers` blocks per stage, saved without layout (opening lays it out), or `placed`:
    with every node where the auto-layout puts it."""
    path = folder / f"{name.replace(' ', '_')}.json"
    graph = resnet(name, bottleneck_residual, 4, layers, (3, 224, 224), 1000)
    if placed:
        graph.layout.update(layered_layout(graph).positions)
    save(Design(graph), path)
    return path


def open_window(design: Design) -> MainWindow:
    window = MainWindow(design, autosave=False)
    window.close_prompt = lambda: "discard"
    window.resize(1600, 1000)
    window.show()
    return window


def dispose(window: MainWindow) -> None:
    """Close and delete `window` and collect what it leaves, outside the measured phases: a closed window left for the
    collector to find makes a later run pay for its items (the last design measured, "10k placed", paid for three)."""
    window.close()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


def now() -> tuple[float, float]:
    """(wall clock, this process's CPU time) in ms."""
    return time.perf_counter() * 1e3, time.process_time() * 1e3


def since(mark: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - mark[0], cpu - mark[1]


def open_layout_render(path: Path, shots: Path | None) -> dict:
    """(wall, CPU) ms of each phase, from reading the file to pixels of the whole window, and of an attribute edit."""
    app = application()
    mark = now()
    window = open_window(load(path))
    app.processEvents()
    phases = {"open": since(mark)}
    mark = now()
    window.ctl.auto_layout()
    window.view.fit_all()
    app.processEvents()
    phases["layout"] = since(mark)
    mark = now()
    image = window.grab()
    phases["render"] = since(mark)
    if shots is not None:
        image.save(str(shots / f"{path.stem}_fit.png"))
        window.view.show_readable()
        app.processEvents()
        window.grab().save(str(shots / f"{path.stem}_readable.png"))
        window.view.fit_all()
        app.processEvents()
    nodes = len(window.ctl.graph)
    phases["edit"], phases["repaint"] = attribute_edit(window, -8)
    phases["edit max"], phases["repaint max"] = attribute_edit(window, 8)
    dispose(window)
    return {"nodes": nodes, **phases}


def attribute_edit(window, step: int, repeat: int = 15) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, CPU) ms of changing one conv's output channels by `step` and twice `step` in turn until the
    cost panel holds the new numbers, and of the repaint that follows (canvas fitted to the whole graph: every
    item visible). The conv is one of the costliest: growing it moves the heatmap's maximum, so the tint of
    every layer like it changes too; shrinking it changes its own tint only."""
    app = application()
    ctl = window.ctl
    convs = [n for n in ctl.graph.topo_order() if ctl.graph.nodes[n].op == "Conv2d"]
    name = convs[len(convs) // 2]
    base = ctl.graph.nodes[name].resolved["out_channels"]
    updated, painted = [], []
    for i in range(repeat):
        value = base + step * (i % 2 + 1)
        mark = now()
        ctl.set_attr(name, "out_channels", value)
        shown = window.cost_panel.totals.toolTip().splitlines()[0]
        updated.append(since(mark))
        mark = now()
        app.processEvents()
        painted.append(since(mark))
        assert shown == f"params {ctl.report.total.params:,}", "cost panel is stale"
    return _median(updated), _median(painted)


def _median(pairs: list) -> tuple[float, float]:
    return statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)


def folded_render(repeat: int) -> tuple[int, float]:
    """Drawn items and median ms to render resnet152 with every group folded (stem, four stages, head)."""
    app = application()
    window = open_window(Design(resnet("resnet152", bottleneck_residual, 4, (3, 8, 36, 3), (3, 224, 224), 1000)))
    ctl = window.ctl
    ctl.set_collapsed(list(ctl.graph.groups), True)
    window.view.fit_all()
    app.processEvents()
    times = []
    for _ in range(repeat):
        window.scene.invalidate()
        t0 = time.perf_counter()
        window.grab()
        times.append((time.perf_counter() - t0) * 1e3)
    drawn = sum(1 for item in window.scene.items() if item.isVisible())
    dispose(window)
    return drawn, statistics.median(times)


def resnet18_shot(folder: Path) -> None:
    """What the window shows of resnet18 at readable zoom."""
    app = application()
    window = open_window(Design(build_template("resnet18")))
    window.view.show_readable()
    app.processEvents()
    window.grab().save(str(folder / "resnet18_readable.png"))
    dispose(window)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per design (median reported)")
    parser.add_argument("--shots", type=Path, help="folder for screenshots after auto-layout")
    args = parser.parse_args()
    application()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (layers, placed) in DESIGNS.items():
            path = write_design(name, layers, Path(tmp), placed)
            runs = [open_layout_render(path, args.shots if i == 0 else None) for i in range(args.repeat)]
            med = {k: _median([r[k] for r in runs]) for k in PHASES}
            med["total"] = tuple(sum(med[k][j] for k in ("open", "layout", "render")) for j in (0, 1))
            results[name] = (runs[0]["nodes"], med)
    for j, clock in enumerate(("wall clock", "CPU time of this process (less inflated by other processes)")):
        print(f"\n{clock}, ms")
        print(f"{'design':<12}{'nodes':>7}{'open':>9}{'layout':>9}{'render':>9}{'total':>9}{'edit':>9}{'repaint':>9}{'edit max':>10}{'repaint max':>13}")
        for name, (nodes, med) in results.items():
            print(f"{name:<12}{nodes:>7}" + "".join(f"{med[k][j]:>9.0f}" for k in ("open", "layout", "render", "total")) +
                  "".join(f"{med[k][j]:>9.1f}" for k in ("edit", "repaint")) + f"{med['edit max'][j]:>10.1f}{med['repaint max'][j]:>13.1f}")
        base_nodes, base = results["resnet_2k"]
        print(f"growth against resnet_2k (linear = the node ratio)\n{'design':<12}{'nodes x':>9}{'open x':>9}{'layout x':>9}{'render x':>9}{'total x':>9}")
        for name, (nodes, med) in results.items():
            print(f"{name:<12}{nodes / base_nodes:>9.2f}" + "".join(f"{med[k][j] / base[k][j]:>9.2f}" for k in ("open", "layout", "render", "total")))
    if args.shots is not None:
        resnet18_shot(args.shots)
    drawn, folded_ms = folded_render(max(args.repeat, 5))
    print(f"\nresnet152 with every group folded: {drawn} items drawn, render {folded_ms:.1f} ms")
    big = results["resnet_10k"][1]
    edit, paint = big["edit"][0], big["repaint"][0]
    print("\ntargets (wall clock)")
    for what, value, limit in (
        ("10k nodes open + layout + render ms", big["total"][0], 3000),
        ("the same, positions in the file ms", results["10k placed"][1]["total"][0], 3000),
        ("attribute edit -> cost panel ms (largest design)", edit, 50),
        ("repaint after the edit ms (largest design)", paint, 50),
        ("resnet152 folded render ms", folded_ms, 200),
    ):
        print(f"  {what:<48}{value:>9.1f}  < {limit:<5} {'ok' if value < limit else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
