"""`convstudio compare A B ...`: totals side by side, a breakdown by op category, deltas and a bar chart."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from designer.cli.common import human, human_bytes, load_design, print_json
from ir.cost import CONVENTIONS
from ir.design import write_atomic
from ir.errors import DesignError
from ir.graph import Graph
from ir.passes.compare import CATEGORIES, compare
from ir.passes.compress import STRATEGIES
from ir.passes.fuse import fuse

VERB = "compare"
HELP = "compare designs (and their fused / compressed variants): totals, category breakdown, deltas, chart"

TOTAL_ROWS = (
    ("nodes", "nodes", str),
    ("params", "params", human),
    ("macs", "MACs", human),
    ("flops", "FLOPs", human),
    ("activation_bytes", "activation memory", human_bytes),
    ("peak_activation_bytes", "peak memory", human_bytes),
)


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", help="design files; the first is the baseline for deltas")
    parser.add_argument("--variants", help="comma-separated: fused and/or strategy names, added for each design")
    parser.add_argument("--convention", choices=CONVENTIONS, default="flops", help="how FLOPs are counted")
    parser.add_argument("--plot", metavar="PNG", help="write a grouped bar chart of the category breakdown")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def variant(graph: Graph, name: str) -> Graph:
    """The fused graph, or the graph with strategy `name` applied everywhere it applies."""
    if name == "fused":
        return fuse(graph).graph
    if name not in STRATEGIES:
        raise DesignError(f"unknown variant '{name}' (fused or one of: {', '.join(STRATEGIES)})", "--variants")
    return STRATEGIES[name].apply(graph, None).graph


def collect(files: list[str], variants: list[str]) -> dict[str, Graph]:
    graphs: dict[str, Graph] = {}
    for path in files:
        graph = load_design(path).graph
        label = graph.name if graph.name not in graphs else Path(path).stem
        if label in graphs:
            label = path
        graphs[label] = graph
        for v in variants:
            graphs[f"{label}+{v}"] = variant(graph, v)
    return graphs


def _delta_text(d: dict) -> str:
    return "" if d["pct"] is None else f"{d['pct']:+.1f}%"


def render(data: dict, console: Console) -> None:
    labels = data["labels"]
    totals = Table(title=f"totals (convention {data['convention']}), deltas vs {labels[0]}", title_justify="left")
    totals.add_column("", no_wrap=True)
    for label in labels:
        totals.add_column(label, justify="right", no_wrap=True)
    for key, name, fmt in TOTAL_ROWS:
        totals.add_row(name, *[fmt(data["totals"][lb][key]) for lb in labels])
        totals.add_row(f"  Δ {name}", *[_delta_text(data["deltas"][lb]["totals"][key]) for lb in labels], style="dim")
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
        if v != "fused" and v not in STRATEGIES:
            raise DesignError(f"unknown variant '{v}' (fused or one of: {', '.join(STRATEGIES)})", "--variants")
    data = compare(collect(args.files, variants), args.convention)
    if args.plot:
        plot(data, args.plot)
    if args.json:
        print_json(data)
        return 0
    console = Console(highlight=False, width=max(100, 26 + sum(max(len(label), 10) + 3 for label in data["labels"])))
    render(data, console)
    if args.plot:
        console.print(f"wrote {args.plot}", markup=False)
    return 0
