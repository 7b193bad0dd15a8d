"""`convstudio design [FILE]`: open the visual designer (or save a screenshot of it)."""

from __future__ import annotations

from convstudio.ir.errors import DesignError

VERB = "design"
HELP = "open the visual designer on a design file (lenet example when none); --screenshot saves a PNG and exits"


def add_arguments(parser) -> None:
    parser.add_argument("file", nargs="?", help="design file (.json); the lenet example when omitted")
    parser.add_argument("--template", help="open a new design from this template instead of a file")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render the window headless, save it as PNG and exit")
    parser.add_argument("--size", default="1600x1000", help="window size for the screenshot, WIDTHxHEIGHT (default 1600x1000)")


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise DesignError(f"size must look like 1600x1000, got '{text}'", "--size")
    width, height = int(parts[0]), int(parts[1])
    if not (200 <= width <= 8000 and 150 <= height <= 8000):
        raise DesignError(f"size must be between 200x150 and 8000x8000, got '{text}'", "--size")
    return width, height


def run(args) -> int:
    from convstudio.designer.gui.app import run as run_designer

    if args.file and args.template:
        raise DesignError("give a file or --template, not both", "--template")
    return run_designer(args.file, args.screenshot, parse_size(args.size), args.template)
