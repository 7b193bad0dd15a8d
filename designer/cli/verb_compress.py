"""`convstudio compress FILE --strategy S`: apply a compression strategy and show what it saves."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from convstudio.backends.weights import init_params, load_design_weights, param_shapes, save_weights
from convstudio.designer.cli.common import METRIC_ROWS, load_design, print_json, signed
from convstudio.ir.design import Design, save
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
    parser.add_argument("--seed", type=int, default=0, help="seed for the fresh weights of rewritten layers (designs with weights)")
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
    has_weights = load_design_weights(design)
    result = strategy.apply(graph, nodes, **params)
    declined = result.data["declined"]
    if nodes is not None and declined:
        raise DesignError(f"{strategy.name} does not apply: {declined[0]['reason']}", f"node '{declined[0]['node']}'")
    if not result.changed:
        example = f" ({len(declined)} declined, e.g. {declined[0]['node']}: {declined[0]['reason']})" if declined else ""
        raise DesignError(f"{strategy.name} applies nowhere in the design{example}", f"file '{args.file}'")
    out = Path(args.output)
    weights_name, fresh = None, []
    if has_weights:
        fresh = init_params(result.graph, args.seed)
        weights_name = out.with_suffix(".safetensors").name
    save(Design(result.graph, design.training, weights_name), out)
    if weights_name:
        save_weights(result.graph, out.with_name(weights_name))
    data = before_after(graph, result.graph)
    if args.json:
        print_json({"strategy": strategy.name, "params": {**strategy.params, **params}, "output": str(out), "weights": weights_name,
                    "fresh_weights": fresh, "changed": result.data["changed"], "declined": declined, "report": result.report, **data})
        return 0
    console = Console(highlight=False, soft_wrap=True)
    render_before_after(data, console, f"{strategy.name} on {design.name}")
    for line in result.report:
        console.print(line, markup=False)
    console.print(f"changed: {', '.join(result.data['changed'])}", markup=False)
    if weights_name:
        kept = len(param_shapes(result.graph)) - len(fresh)
        console.print(f"weights: {kept} layers keep theirs; fresh init (seed {args.seed}) for {', '.join(fresh) or 'none'}", markup=False)
    console.print(f"wrote {out}" + (f" and {weights_name}" if weights_name else ""), markup=False)
    return 0
