"""`convstudio compress FILE --strategy S`: apply a compression strategy and show what it saves."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from convstudio.backends.weights import init_params, param_shapes, save_design_and_weights
from convstudio.designer.cli.common import (
    METRIC_ROWS,
    add_memory_argument,
    add_weights_argument,
    check_design_memory,
    load_design,
    load_weights_for,
    print_json,
    refuse_overwriting,
    signed,
)
from convstudio.designer.cli.latency import add_latency_arguments, latency_delta, render_latency
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.compress import STRATEGIES, parse_param_text

VERB = "compress"
HELP = "apply a compression strategy (see `convstudio strategies`) and print before / after / delta"

def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("--strategy", required=True, help="strategy name (see `convstudio strategies`)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--nodes", help="comma-separated node names to rewrite")
    where.add_argument("--all", action="store_true", help="rewrite everywhere the strategy applies (the default)")
    parser.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy parameter, e.g. groups=4")
    parser.add_argument("-o", "--output", required=True, help="where to write the compressed design (weights go beside it)")
    add_weights_argument(parser)
    add_memory_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for the fresh weights of rewritten layers (designs with weights)")
    add_latency_arguments(parser, "--measure", "also measure both designs on ONNX Runtime CPU and print the latency change")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_params(strategy, items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DesignError(f"parameter must look like key=value, got '{item}'", "--param")
        params[key] = parse_param_text(strategy.params, key, text)
    return params


def percent(pct: float | None) -> str:
    """A signed percentage; changes under 0.1% keep two significant digits instead of showing as 0.0%."""
    if pct is None:
        return ""
    return f"{pct:+.2g}%" if 0 < abs(pct) < 0.1 else f"{pct:+.1f}%"


def render_before_after(data: dict, console: Console, title: str) -> None:
    """The before / after / delta table of `ir.passes.compare.before_after`."""
    table = Table(title=title, title_justify="left")
    for column in ("", "before", "after", "delta", "%"):
        table.add_column(column, justify="left" if not column else "right")
    for key, label, fmt in METRIC_ROWS:
        d = data["delta"][key]
        table.add_row(label, fmt(data["before"][key]), fmt(data["after"][key]), signed(d["abs"], fmt), percent(d["pct"]))
    console.print(table)


def run(args) -> int:
    strategy = STRATEGIES.get(args.strategy)
    if strategy is None:
        raise DesignError(f"unknown strategy '{args.strategy}' (known: {', '.join(STRATEGIES)})", "--strategy")
    params = parse_params(strategy, args.param)
    design = load_design(args.file)
    graph = design.graph
    nodes = None
    if args.nodes is not None:
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
        if not nodes:
            raise DesignError("no node names given", "--nodes")
        for name in nodes:
            if name not in graph.nodes:
                raise DesignError(f"no node named '{name}'", "--nodes")
    weights = load_weights_for(design, args)
    has_weights = weights is not None
    refuse_overwriting(Path(args.output), [Path(args.file), weights])
    result = strategy.apply(graph, nodes, **params)
    declined = result.data["declined"]
    if nodes is not None and declined:
        raise DesignError(f"{strategy.name} does not apply: {declined[0]['reason']}", f"node '{declined[0]['node']}'")
    if not result.changed:
        example = f" ({len(declined)} declined, e.g. {declined[0]['node']}: {declined[0]['reason']})" if declined else ""
        raise DesignError(f"{strategy.name} applies nowhere in the design{example}", f"file '{args.file}'")
    out = Path(args.output)
    if has_weights:  # the rewritten layers get fresh weights: check what the result needs first
        check_design_memory(Design(result.graph), 1, args.max_memory, args.file)
    fresh = init_params(result.graph, args.seed) if has_weights else []
    written = save_design_and_weights(Design(result.graph, design.training), out, result.graph if has_weights else None)
    weights_name = written.name if written else None
    data = before_after(graph, result.graph)
    latency = latency_delta(graph, result.graph, args)
    if args.json:
        print_json({"strategy": strategy.name, "params": {**strategy.params, **params}, "output": str(out), "weights": weights_name,
                    "fresh_weights": fresh, "changed": result.data["changed"], "declined": declined, "report": result.report, **data,
                    "latency_ms": latency})
        return 0
    console = Console(highlight=False, soft_wrap=True)
    render_before_after(data, console, f"{strategy.name} on {design.name}")
    render_latency(latency, console)
    for line in result.report:
        console.print(line, markup=False)
    console.print(f"changed: {', '.join(result.data['changed'])}", markup=False)
    if weights_name:
        kept = len(param_shapes(result.graph)) - len(fresh)
        console.print(f"weights: {kept} layers keep theirs; fresh init (seed {args.seed}) for {', '.join(fresh) or 'none'}", markup=False)
    console.print(f"wrote {out}" + (f" and {weights_name}" if weights_name else ""), markup=False)
    return 0
