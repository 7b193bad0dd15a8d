"""`convstudio compress FILE --strategy S`: apply a compression strategy and show what it saves."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from designer.cli.common import human, human_bytes, load_design, print_json
from ir.design import Design, save
from ir.errors import DesignError
from ir.passes.compare import before_after
from ir.passes.compress import STRATEGIES, parse_param_text

VERB = "compress"
HELP = "apply a compression strategy (see `convstudio strategies`) and print before / after / delta"

ROWS = (
    ("nodes", "nodes", str),
    ("params", "params", lambda v: human(v)),
    ("macs", "MACs", lambda v: human(v)),
    ("flops", "FLOPs", lambda v: human(v)),
    ("activation_bytes", "activation memory", human_bytes),
    ("peak_activation_bytes", "peak memory", human_bytes),
)


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("--strategy", required=True, help="strategy name (see `convstudio strategies`)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--nodes", help="comma-separated node names to rewrite")
    where.add_argument("--all", action="store_true", help="rewrite everywhere the strategy applies (the default)")
    parser.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy parameter, e.g. groups=4")
    parser.add_argument("-o", "--output", required=True, help="where to write the compressed design")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_params(strategy, items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DesignError(f"parameter must look like key=value, got '{item}'", "--param")
        params[key] = parse_param_text(strategy.params, key, text)
    return params


def render_before_after(data: dict, console: Console, title: str) -> None:
    """The before / after / delta table of `ir.passes.compare.before_after`."""
    table = Table(title=title, title_justify="left")
    for column in ("", "before", "after", "delta", "%"):
        table.add_column(column, justify="left" if not column else "right")
    for key, label, fmt in ROWS:
        d = data["delta"][key]
        sign = "+" if d["abs"] > 0 else "-" if d["abs"] < 0 else ""
        pct = f"{d['pct']:+.1f}%" if d["pct"] is not None else ""
        table.add_row(label, fmt(data["before"][key]), fmt(data["after"][key]), sign + fmt(abs(d["abs"])), pct)
    console.print(table)


def run(args) -> int:
    strategy = STRATEGIES.get(args.strategy)
    if strategy is None:
        raise DesignError(f"unknown strategy '{args.strategy}' (known: {', '.join(STRATEGIES)})", "--strategy")
    params = parse_params(strategy, args.param)
    design = load_design(args.file)
    graph = design.graph
    nodes = None
    if args.nodes:
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
        for name in nodes:
            if name not in graph.nodes:
                raise DesignError(f"no node named '{name}'", "--nodes")
    result = strategy.apply(graph, nodes, **params)
    if nodes is not None and result.data["declined"]:
        first = result.data["declined"][0]
        raise DesignError(f"{strategy.name} does not apply: {first['reason']}", f"node '{first['node']}'")
    if not result.changed:
        raise DesignError(f"{strategy.name} applies nowhere in the design", f"file '{args.file}'")
    out = Path(args.output)
    save(Design(result.graph, design.training), out)
    data = before_after(graph, result.graph)
    if args.json:
        print_json({"strategy": strategy.name, "params": {**strategy.params, **params}, "output": str(out),
                    "changed": result.data["changed"], "declined": result.data["declined"], "report": result.report, **data})
        return 0
    console = Console(highlight=False, soft_wrap=True)
    render_before_after(data, console, f"{strategy.name} on {design.name}")
    for line in result.report:
        console.print(line, markup=False)
    console.print(f"changed: {', '.join(result.data['changed'])}", markup=False)
    console.print(f"wrote {out}", markup=False)
    return 0
