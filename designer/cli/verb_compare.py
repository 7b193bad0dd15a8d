"""`convstudio compare A B ...`: totals side by side, a breakdown by op category, deltas and a bar chart."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convstudio.designer.cli.common import METRIC_ROWS, human, load_design, print_json
from convstudio.designer.cli.latency import add_latency_arguments, compare_latency, render_compare_latency
from convstudio.designer.cli.verb_compress import percent
from convstudio.ir.cost import CONVENTIONS
from convstudio.ir.design import write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.base import PassResult
from convstudio.ir.passes.compare import CATEGORIES, compare
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse

VERB = "compare"
HELP = "compare designs (and their fused / compressed variants): totals, category breakdown, deltas, chart"

def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", help="design files; the first is the baseline for deltas")
    parser.add_argument("--variants", help="comma-separated: fused and/or strategy names, added for each design")
    parser.add_argument("--convention", choices=CONVENTIONS, default="flops", help="how FLOPs are counted")
    parser.add_argument("--plot", metavar="PNG", help="write a grouped bar chart of the category breakdown")
    add_latency_arguments(parser, "--latency", "measure each design and variant on ONNX Runtime CPU: latency ratios beside MAC ratios")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def check_variant(name: str) -> None:
    """A DesignError unless `name` is fused or a strategy name."""
    if name != "fused" and name not in STRATEGIES:
        raise DesignError(f"unknown variant '{name}' (fused or one of: {', '.join(STRATEGIES)})", "--variants")


def variant_result(graph: Graph, name: str) -> PassResult:
    """Fusion, or strategy `name` applied everywhere it applies, on `graph`."""
    check_variant(name)
    if name == "fused":
        return fuse(graph)
    return STRATEGIES[name].apply(graph, None)


def variant(graph: Graph, name: str) -> Graph:
    """The fused graph, or the graph with strategy `name` applied everywhere it applies."""
    return variant_result(graph, name).graph


def collect(files: list[str], variants: list[str]) -> tuple[dict[str, Graph], list[str]]:
    """The designs and their variants by label, and a note for each variant that changes nothing."""
    graphs: dict[str, Graph] = {}
    notes = []
    for path in files:
        graph = load_design(path).graph
        label = graph.name if graph.name not in graphs else Path(path).stem
        if label in graphs:
            label = path
        graphs[label] = graph
        for v in variants:
            result = variant_result(graph, v)
            graphs[f"{label}+{v}"] = result.graph
            if not result.changed:
                notes.append(f"{label}+{v} is the same as {label}: {'nothing fuses' if v == 'fused' else f'{v} applies nowhere'}")
    return graphs, notes


def render(data: dict, console: Console) -> None:
    labels = data["labels"]
    totals = Table(title=f"totals (convention {data['convention']}), deltas vs {labels[0]}", title_justify="left")
    totals.add_column("", no_wrap=True)
    for label in labels:
        totals.add_column(label, justify="right", no_wrap=True)
    for key, name, fmt in METRIC_ROWS:
        totals.add_row(name, *[fmt(data["totals"][lb][key]) for lb in labels])
        totals.add_row(f"  Δ {name}", *[percent(data["deltas"][lb]["totals"][key]["pct"]) for lb in labels], style="dim")
    console.print(totals)
    for metric, name in (("flops", "FLOPs"), ("params", "params")):
        table = Table(title=f"{name} by op category", title_justify="left")
        table.add_column("category", no_wrap=True)
        for label in labels:
            table.add_column(label, justify="right", no_wrap=True)
        for c in CATEGORIES:
            values = [data["breakdown"][lb][c][metric] for lb in labels]
            if any(values):
                table.add_row(c, *[human(v) for v in values])
        console.print(table)


def plot(data: dict, path: str) -> None:
    """Grouped bars: one group per op category, one bar per design; FLOPs above, parameters below (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = data["labels"]
    cats = [c for c in CATEGORIES if any(data["breakdown"][lb][c]["flops"] or data["breakdown"][lb][c]["params"] for lb in labels)]
    fig, axes = plt.subplots(2, 1, figsize=(min(16, 5 + 0.3 * len(cats) * len(labels)), 8))
    width = 0.8 / len(labels)
    x = np.arange(len(cats))
    for ax, (metric, title) in zip(axes, (("flops", f"FLOPs ({data['convention']})"), ("params", "parameters"))):
        top = 1
        for i, label in enumerate(labels):
            values = [data["breakdown"][label][c][metric] for c in cats]
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
            top = max(top, *values)
        ax.set_xticks(x, cats)
        ax.set_title(title)
        ax.set_yscale("symlog")
        ax.set_ylim(0, top * 4)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small", ncols=min(3, len(labels)))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def run(args) -> int:
    variants = [v.strip() for v in (args.variants or "").split(",") if v.strip()]
    for v in variants:
        check_variant(v)
    graphs, notes = collect(args.files, variants)
    data = {**compare(graphs, args.convention), "notes": notes}
    latency = compare_latency(graphs, data["totals"], args)
    if latency is not None:
        data["latency_ms"] = latency
    if args.plot:
        plot(data, args.plot)
    if args.json:
        print_json(data)
        return 0
    console = Console(highlight=False, width=max(100, 26 + sum(max(len(label), 10) + 3 for label in data["labels"])))
    render(data, console)
    if latency is not None:
        render_compare_latency(latency, console)
    for note in notes:
        console.print(f"note: {note}", markup=False)
    if args.plot:
        console.print(f"wrote {args.plot}", markup=False)
    return 0
