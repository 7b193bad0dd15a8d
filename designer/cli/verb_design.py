"""`convstudio design [FILE]`: open the visual designer (or save a screenshot of it)."""

from __future__ import annotations

from pathlib import Path

from convstudio.ir.errors import DesignError

VERB = "design"
HELP = ("open the visual designer on a design file (lenet example when none); --screenshot saves a PNG of the window and exits; "
        "--export-png/--export-svg save a picture of the design headless; --diff B shows what changed from the design to B")


def add_arguments(parser) -> None:
    parser.add_argument("file", nargs="?", help="design file (.json); the lenet example when omitted")
    parser.add_argument("--template", help="open a new design from this template instead of a file")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render the window headless, save it as PNG and exit")
    parser.add_argument("--select", metavar="NODE[,NODE...]", help="select these nodes, the first in the middle of the canvas "
                        "(with --screenshot: in the picture; the inspector shows the first)")
    parser.add_argument("--size", default="1600x1000", help="window size for the screenshot, WIDTHxHEIGHT (default 1600x1000)")
    parser.add_argument("--export-png", metavar="OUT.png", help="save a PNG picture of the whole design (no window is shown) and exit")
    parser.add_argument("--export-svg", metavar="OUT.svg", help="save an SVG picture of the whole design, with real text (no window is shown) and exit")
    parser.add_argument("--scale", default="1", help="pixels per canvas unit of --export-png, 0.1 to 8 (default 1; 2 for sharp prints)")
    parser.add_argument("--edge-shapes", action="store_true", help="label the edges of the exported picture with their tensor shapes")
    parser.add_argument("--diff", metavar="B.json", help="show the diff of the design against design B: added, removed and changed layers, "
                        "cost deltas and totals (with --screenshot, save it as PNG and exit)")
    parser.add_argument("--json", action="store_true", help="with --diff: print the diff as JSON instead of a summary")


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise DesignError(f"size must look like 1600x1000, got '{text}'", "--size")
    width, height = int(parts[0]), int(parts[1])
    if not (200 <= width <= 8000 and 150 <= height <= 8000):
        raise DesignError(f"size must be between 200x150 and 8000x8000, got '{text}'", "--size")
    return width, height


def parse_select(text: str | None) -> list[str] | None:
    """'conv1,conv2' -> ['conv1', 'conv2']; None when not given."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise DesignError("needs a node name, e.g. --select conv1", "--select")
    return names


def parse_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not 0.1 <= scale <= 8:
        raise DesignError(f"scale must be a number from 0.1 to 8, got '{text}'", "--scale")
    return scale


def export_pictures(args) -> None:
    """Write --export-png and --export-svg headless, after checking every path before drawing anything."""
    from convstudio.designer.gui.app import open_design
    from convstudio.designer.gui.picture import check_picture_path, export_design_pictures

    scale = parse_scale(args.scale)
    outputs = []
    for flag, kind, out in (("--export-png", ".png", args.export_png), ("--export-svg", ".svg", args.export_svg)):
        if out is None:
            continue
        path = check_picture_path(out, kind, f"file '{out}' of {flag}")
        if args.file and path.resolve() == Path(args.file).resolve():
            raise DesignError("would overwrite the design file it draws; write elsewhere", f"file '{out}' of {flag}")
        outputs.append(path)
    design = open_design(args.file, args.template)
    if design is None:
        from convstudio.designer.gui.controller import default_design

        design = default_design()
    for path, size in export_design_pictures(design, outputs, scale, args.edge_shapes):
        print(f"wrote {path} ({size.width()}x{size.height()})")


def diff_summary(result, label_a: str, label_b: str) -> list[str]:
    """The diff in a few lines: counts, then each metric's totals and delta."""
    from convstudio.designer.cli.common import human, signed

    c = result.counts()
    lines = [f"{label_a} -> {label_b}: {c['added']} added, {c['removed']} removed, {c['changed']} changed, {c['same']} unchanged"]
    for key in ("params", "macs", "flops"):
        a, b = result.total_a[key], result.total_b[key]
        lines.append(f"  {key:<6} {human(a)} -> {human(b)} ({signed(b - a, human)})")
    return lines


def run_diff(args, size: tuple[int, int]) -> int:
    """`design A --diff B`: the diff window, or with --screenshot its PNG; the summary (or --json) on stdout."""
    import json
    import os

    from convstudio.designer.gui.app import has_display, open_design
    from convstudio.ir.design import load
    from convstudio.ir.diff import diff

    if not args.file and not args.template:
        raise DesignError("give the design to diff from, e.g. `convstudio design A.json --diff B.json`", "--diff")
    if args.export_png or args.export_svg:
        raise DesignError("pictures of one design do not go with --diff; use --screenshot for a picture of the diff", "--diff")
    if args.screenshot is not None:
        shot = Path(args.screenshot)
        if shot.is_dir():
            raise DesignError("is a folder; give a file name", f"file '{shot}' of --screenshot")
        if not shot.resolve().parent.is_dir():
            raise DesignError("folder does not exist", f"file '{shot}' of --screenshot")
        if any(p and shot.resolve() == Path(p).resolve() for p in (args.file, args.diff)):
            raise DesignError("would overwrite a design it shows; write elsewhere", f"file '{shot}' of --screenshot")
    design_a = open_design(args.file, args.template)
    design_b = load(args.diff)
    label_a = Path(args.file).name if args.file else args.template
    label_b = Path(args.diff).name
    if args.screenshot is None and not args.json and not has_display():
        from convstudio.designer.gui.app import NO_DISPLAY

        raise DesignError(NO_DISPLAY)
    if args.json:
        print(json.dumps(diff(design_a.graph, design_b.graph).as_dict(), indent=2))
        if args.screenshot is None:
            return 0
    if args.screenshot is not None and not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from convstudio.designer.gui.app import application
    from convstudio.designer.gui.diff_view import open_diff

    app = application()
    dialog = open_diff(None, design_a.graph, design_b.graph, label_a, label_b)
    if args.screenshot is None:
        return app.exec()
    dialog.resize(*size)
    for _ in range(3):
        app.processEvents()
    dialog.fit()
    app.processEvents()
    ok = dialog.grab().save(str(args.screenshot), "PNG")
    dialog.close()
    if not ok:
        raise DesignError("cannot write the screenshot", f"file '{args.screenshot}'")
    if not args.json:
        print("\n".join(diff_summary(dialog.result, label_a, label_b)))
    print(f"wrote {args.screenshot} ({size[0]}x{size[1]})")
    return 0


def run(args) -> int:
    from convstudio.designer.gui.app import run as run_designer

    if args.file and args.template:
        raise DesignError("give a file or --template, not both", "--template")
    if args.diff is not None and (args.export_png or args.export_svg):
        raise DesignError("--export-png and --export-svg draw one design, not a diff", "--diff")
    select = parse_select(args.select)
    if select and (args.diff is not None or ((args.export_png or args.export_svg) and args.screenshot is None)):
        raise DesignError("goes with --screenshot or the designer window, not with --diff or --export-png/--export-svg alone", "--select")
    if args.diff is not None:
        return run_diff(args, parse_size(args.size))
    if args.json:
        raise DesignError("--json goes with --diff", "--json")
    size = parse_size(args.size)
    if args.export_png or args.export_svg:
        export_pictures(args)
        if args.screenshot is None:
            return 0
    return run_designer(args.file, args.screenshot, size, args.template, select)
