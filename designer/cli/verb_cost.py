"""`convstudio cost FILE`: per-layer parameters, MACs, FLOPs and activation memory, then totals."""

from __future__ import annotations

import os

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from convstudio.designer.cli.common import (
    analyze_design,
    apply_input_shapes,
    check_batch,
    format_shape,
    human,
    human_bytes,
    load_design,
    named_shapes,
    print_json,
)
from convstudio.ir.cost import CONVENTIONS, LATENCY, CostReport
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import paused_gc

VERB = "cost"
HELP = "per-layer cost table (params, MACs, FLOPs, activation memory) and totals"

FLOPS_LABEL = {"flops": "FLOPs", "torchvision": "FLOPs (torchvision)", "fvcore": "FLOPs (fvcore)", LATENCY: "FLOPs"}
WRAPPING = ("name", "op", "formula")  # text columns that fold onto more lines; every other cell is shown whole or not at all
WRAP_WIDTH = 10  # the narrowest a folding column gets
# when the table is wider than the terminal, columns are left out in this order (name and params always stay)
LEAVE_OUT = ("share", "act. memory", "output shape", "formula", "op", "pred. ms", "MACs", "FLOPs")
# a design with more nodes than TABLE_ROWS gets a table of its TOP_ROWS layers with the most FLOPs (a full one is unreadable and slow to draw)
TABLE_ROWS = 500
TOP_ROWS = 50


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("--convention", choices=(*CONVENTIONS, LATENCY), default="flops",
                        help="how FLOPs are counted (docs/cost.md); latency: full FLOPs and predicted ms from the calibrated latency model")
    parser.add_argument("--latency-model", metavar="FILE",
                        help="latency model to predict with (default: the one `profile --calibrate` stored for ONNX Runtime CPU)")
    parser.add_argument("--input", action="append", metavar="[NAME=]SHAPE",
                        help="override an input shape, e.g. 1x3x160x160; repeat with NAME= for several inputs (--input a=3x64x64 --input b=3x64x64)")
    parser.add_argument("--batch", type=int, metavar="N", help="batch size to scale by (default: per sample)")
    parser.add_argument("--top", type=int, metavar="K", help="show only the K layers with the most FLOPs")
    parser.add_argument("--formulas", action="store_true", help="add a column with each layer's formula")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def batch_size(args, from_input: int | None) -> int | None:
    """The batch from --batch or from a batched --input shape; both must agree."""
    if args.batch is not None:
        check_batch(args.batch, "--batch")
    if args.batch is not None and from_input is not None and args.batch != from_input:
        raise DesignError(f"--batch {args.batch} disagrees with the batch {from_input} in --input", "--batch")
    return args.batch if args.batch is not None else from_input


def report_for(args) -> tuple[CostReport, int | None]:
    """The report and how many layers its table shows (None: all). A table of the top K layers needs the costs of those
    alone (`analyze`'s nodes=K): the other nodes get none, only their sums."""
    if args.top is not None and args.top < 1:
        raise DesignError(f"top must be at least 1, got {args.top}", "--top")
    design = load_design(args.file)
    batch = batch_size(args, apply_input_shapes(design.graph, args.input))
    top = args.top
    if top is None and len(design.graph.nodes) > TABLE_ROWS:
        top = TOP_ROWS
    if args.json:
        top = None
    return analyze_design(design, args.convention, batch, latency_table(args), nodes=True if top is None else top), top


def latency_table(args):
    """The latency model to predict with: required by --convention latency, else the stored one when it exists (tables only)."""
    from convstudio.backends.latency_model import find_model, load_model

    if args.convention == LATENCY or args.latency_model:
        return load_model(path=args.latency_model)
    return None if args.json else find_model()


def fitted_columns(columns: dict[str, list[str]], width: int, leave_out: list[str]) -> tuple[list[str], bool]:
    """The column headers that fit in `width`, leaving out columns in `leave_out` order, and whether names must fold.

    Non-folding columns are as wide as their widest cell; op and formula fold, and names fold only before a
    number column would have to go.
    """
    def needed(kept: list[str], folding: set[str]) -> int:
        cells = [max(map(cell_len, columns[c])) for c in kept]
        inner = sum(min(w, WRAP_WIDTH) if c in folding else w for c, w in zip(kept, cells))
        return inner + 3 * len(kept) + 1  # one space each side of a cell, one border between and around

    whole_names = set(WRAPPING) - {"name"}
    kept, dropped = list(columns), []
    for header in leave_out:
        if needed(kept, whole_names) <= width:
            break
        if header == "MACs" and needed(kept, set(WRAPPING)) <= width:
            break
        kept.remove(header)
        dropped.append(header)
    for header in reversed(dropped[:-1]):  # a less important column may fit once a wider one is out, names whole
        wider = [c for c in columns if c in kept or c == header]
        if needed(wider, whole_names) <= width:
            kept = wider
    return kept, needed(kept, whole_names) > width


def render(report: CostReport, top: int | None, formulas: bool, console: Console) -> list[str]:
    """Print the cost table and totals; returns the headers of the columns left out to fit the console's width.

    Numbers and shapes are never cut: a column that does not fit is left out (and named) instead.
    """
    data = report.as_dict(top)
    total = data["total"]
    rows = data["nodes"]
    label = FLOPS_LABEL[report.convention]
    per = f"batch {report.batch}" if report.batch is not None else "per sample"
    title = f"cost ({per}, convention {report.convention})" + (f", top {top} by FLOPs" if top is not None else "")
    share_total = "100.0%" if total["flops"] else ""
    # header -> (footer, cells)
    columns = {
        "name": ("total", [n["name"] for n in rows]),
        "op": ("", [n["op"] for n in rows]),
        "output shape": ("", [format_shape(n["output_shape"]) for n in rows]),
        "params": (f"{total['params']:,}", [f"{n['params']:,}" for n in rows]),
        "MACs": (f"{total['macs']:,}", [f"{n['macs']:,}" for n in rows]),
        label: (f"{total['flops']:,}", [f"{n['flops']:,}" for n in rows]),
        "act. memory": (human_bytes(total["activation_bytes"]), [human_bytes(n["activation_bytes"]) for n in rows]),
        "share": (share_total, [f"{100 * n['flops'] / total['flops']:.1f}%" if total["flops"] else "" for n in rows]),
    }
    if total.get("latency_ms") is not None:
        columns["pred. ms"] = (f"{total['latency_ms']:.3f}", [f"{n.get('latency_ms') or 0:.3f}" for n in rows])
    if formulas:
        columns["formula"] = ("", [n["formula"] for n in rows])
    leave_out = [label if header == "FLOPs" else header for header in LEAVE_OUT if header in columns or header == "FLOPs"]
    kept, fold_names = fitted_columns({h: [h, footer, *cells] for h, (footer, cells) in columns.items()}, console.width, leave_out)
    table = Table(title=title, title_justify="left", show_footer=True)
    for header in kept:
        wraps = header in WRAPPING and (fold_names or header != "name")
        table.add_column(header, footer=columns[header][0], justify="left" if header in (*WRAPPING, "output shape") else "right",
                         no_wrap=not wraps, overflow="fold")
    for i in range(len(rows)):
        table.add_row(*[columns[header][1][i] for header in kept])
    console.print(table)
    left_out = [header for header in columns if header not in kept]
    if left_out:
        console.print(f"left out to fit {console.width} columns: {', '.join(left_out)} (a wider terminal or --json shows them)")
    console.print(f"inputs: {named_shapes(data['input_shapes'])}")
    console.print(f"params: {total['params']:,} ({human(total['params'])})")
    console.print(f"MACs: {total['macs']:,} ({human(total['macs'])})")
    console.print(f"{label}: {total['flops']:,} ({human(total['flops'])})")
    console.print(f"activation memory: {human_bytes(total['activation_bytes'])} (sum), peak {human_bytes(total['peak_activation_bytes'])}")
    if total.get("latency_ms") is not None:
        console.print(f"predicted latency: {total['latency_ms']:.3f} ms at batch {report.batch or 1} (latency model; `convstudio profile` measures)")
    return left_out


@paused_gc()  # a short run that builds no reference cycles: the collector would only rescan the design's nodes
def run(args) -> int:
    report, top = report_for(args)
    if args.json:
        print_json(report.as_dict())
        return 0
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:  # a file or pipe gets the whole table unless COLUMNS says otherwise
        console = Console(highlight=False, width=240)
    if args.top is None and top is not None:
        console.print(f"a design of more than {TABLE_ROWS} nodes gets a table of its {TOP_ROWS} layers with the most FLOPs "
                      "(--top K for another number, --json for every layer)")
    render(report, top, args.formulas, console)
    return 0
