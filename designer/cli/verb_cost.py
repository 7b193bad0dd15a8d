"""`convstudio cost FILE`: per-layer parameters, MACs, FLOPs and activation memory, then totals."""

from __future__ import annotations

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
from convstudio.ir.cost import CONVENTIONS, CostReport
from convstudio.ir.errors import DesignError

VERB = "cost"
HELP = "per-layer cost table (params, MACs, FLOPs, activation memory) and totals"

FLOPS_LABEL = {"flops": "FLOPs", "torchvision": "FLOPs (torchvision)", "fvcore": "FLOPs (fvcore)"}


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("--convention", choices=CONVENTIONS, default="flops", help="how FLOPs are counted (docs/cost.md)")
    parser.add_argument("--input", action="extend", nargs="+", metavar="[NAME=]SHAPE",
                        help="override input shapes, e.g. 1x3x160x160 or a=1x3x64x64 b=1x3x64x64")
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


def report_for(args) -> CostReport:
    if args.top is not None and args.top < 1:
        raise DesignError(f"top must be at least 1, got {args.top}", "--top")
    design = load_design(args.file)
    batch = batch_size(args, apply_input_shapes(design.graph, args.input))
    return analyze_design(design, args.convention, batch)


def render(report: CostReport, top: int | None, formulas: bool, console: Console) -> None:
    data = report.as_dict()
    total = data["total"]
    rows = data["nodes"]
    if top is not None:
        rows = sorted(rows, key=lambda n: (-n["flops"], -n["macs"], -n["params"]))[:top]
    label = FLOPS_LABEL[report.convention]
    per = f"batch {report.batch}" if report.batch is not None else "per sample"
    title = f"cost ({per}, convention {report.convention})" + (f", top {top} by FLOPs" if top is not None else "")
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("name", footer="total")
    table.add_column("op")
    table.add_column("output shape")
    table.add_column("params", justify="right", footer=f"{total['params']:,}")
    table.add_column("MACs", justify="right", footer=f"{total['macs']:,}")
    table.add_column(label, justify="right", footer=f"{total['flops']:,}")
    table.add_column("act. memory", justify="right", footer=human_bytes(total["activation_bytes"]))
    table.add_column("share", justify="right", footer="100.0%" if total["flops"] else "")
    if formulas:
        table.add_column("formula")
    for n in rows:
        share = f"{100 * n['flops'] / total['flops']:.1f}%" if total["flops"] else ""
        cells = [n["name"], n["op"], format_shape(n["output_shape"]), f"{n['params']:,}", f"{n['macs']:,}", f"{n['flops']:,}",
                 human_bytes(n["activation_bytes"]), share]
        if formulas:
            cells.append(n["formula"])
        table.add_row(*cells)
    console.print(table)
    console.print(f"inputs: {named_shapes(data['input_shapes'])}")
    console.print(f"params: {total['params']:,} ({human(total['params'])})")
    console.print(f"MACs: {total['macs']:,} ({human(total['macs'])})")
    console.print(f"{label}: {total['flops']:,} ({human(total['flops'])})")
    console.print(f"activation memory: {human_bytes(total['activation_bytes'])} (sum), peak {human_bytes(total['peak_activation_bytes'])}")


def run(args) -> int:
    report = report_for(args)
    if args.json:
        print_json(report.as_dict())
        return 0
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=240)
    render(report, args.top, args.formulas, console)
    return 0
