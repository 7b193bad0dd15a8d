"""`convstudio templates`: the networks `new` can build and the blocks a design can insert."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from convstudio.designer.cli.common import format_shape, print_json
from convstudio.ir.templates import BLOCKS, TEMPLATES

VERB = "templates"
HELP = "list the templates (whole networks) and blocks (insertable pieces)"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the lists as JSON")


def catalog() -> dict:
    """Templates and blocks as plain data, in name order."""
    templates = [
        {
            "name": t.name,
            "description": t.description,
            "input_shape": ["N", *t.input_shape],
            "num_classes": t.num_classes,
            "width": t.has_width,
            "reference": t.reference,
        }
        for t in sorted(TEMPLATES.values(), key=lambda t: t.name)
    ]
    blocks = [
        {"name": b.name, "description": b.description, "options": dict(b.options)}
        for b in sorted(BLOCKS.values(), key=lambda b: b.name)
    ]
    return {"templates": templates, "blocks": blocks}


def run(args) -> int:
    data = catalog()
    if args.json:
        print_json(data)
        return 0
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    table = Table(title="Templates", title_justify="left")
    for column in ("name", "input", "classes", "width", "description"):
        table.add_column(column, justify="right" if column == "classes" else "left")
    for t in data["templates"]:
        table.add_row(t["name"], format_shape(t["input_shape"]), str(t["num_classes"]), "yes" if t["width"] else "", t["description"])
    console.print(table)
    blocks = Table(title="Blocks", title_justify="left")
    for column in ("name", "options", "description"):
        blocks.add_column(column)
    for b in data["blocks"]:
        options = ", ".join(f"{k}={v}" for k, v in b["options"].items())
        blocks.add_row(b["name"], options, b["description"])
    console.print(blocks)
    return 0
