"""`convstudio explore FILE --data DATA --variants ...`: compression variants fine-tuned and measured, with their Pareto front."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convstudio.designer.cli.common import Progress, human, print_json
from convstudio.ir.errors import DesignError

VERB = "explore"
HELP = "sweep compression variants (fine-tuned by distillation) into an accuracy-versus-cost table, Pareto front and chart"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="trained design (its weights beside it, or --weights)")
    p.add_argument("--data", required=True, metavar="digits|X.npz|FOLDER", help="data for fine-tuning and accuracy (the validation split is measured)")
    p.add_argument("--variants", action="append", required=True, metavar="'V V ...'",
                   help="NAME[:V,V,...] per strategy, several in one quoted value or the option repeated: each V one variant, a value of the "
                        "first parameter or k=v pairs joined by '+' (--variants 'prune:0.25,0.5 lowrank:energy=0.9 separable width:0.5 int8')")
    p.add_argument("--weights", metavar="W.safetensors", help="the design's weights (default: <design>.safetensors beside it)")
    p.add_argument("--finetune-epochs", type=int, default=1, metavar="N", help="epochs of distillation from the original per variant (default 1; 0: none)")
    p.add_argument("--alpha", type=float, default=0.5, metavar="X", help="weight of the distillation term (default 0.5)")
    p.add_argument("--temperature", type=float, default=4.0, metavar="T", help="distillation temperature (default 4)")
    p.add_argument("--lr", type=float, metavar="X", help="learning rate of fine-tuning (default: the design's training section)")
    p.add_argument("--latency", choices=("auto", "predicted", "measured"), default="auto",
                   help="predicted by this machine's latency model, or measured in ONNX Runtime (auto: predicted when calibrated and no int8)")
    p.add_argument("--jobs", type=int, default=1, metavar="J", help="variants run in J worker processes (default 1)")
    p.add_argument("--out-dir", metavar="DIR", help="where variants and results.jsonl go (default: <design>_explore beside it); a rerun resumes")
    p.add_argument("--plot", metavar="PARETO.png", help="chart of accuracy against MACs and latency")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help='print {"baseline": {...}, "variants": [...]} as JSON')


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def render(summary: dict, console: Console) -> None:
    table = Table(title=f"variants (latency {summary['latency_source']}, * Pareto front on accuracy and MACs)", title_justify="left")
    for column in ("variant", "params", "MACs", "latency ms", "accuracy", "front", "design"):
        table.add_column(column, justify="left" if column in ("variant", "design") else "right", no_wrap=column != "design", overflow="fold")
    for row in [summary["baseline"], *summary["variants"]]:
        if "error" in row:
            table.add_row(row["name"], "", "", "", "failed", "", row["error"])
            continue
        front = ("*" if row["pareto"] else "") + (" lat" if row["pareto_latency"] else "")
        table.add_row(row["name"], human(row["params"]), human(row["macs"]), f"{row['latency_ms']:.3f}", percent(row["accuracy"]), front, row["design"])
    console.print(table)


def run(args) -> int:
    from convstudio.backends.explore import Settings, explore, parse_variants, write_chart

    variants = parse_variants([item for value in args.variants for item in value.split()])
    design = Path(args.file)
    if not design.is_file():
        raise DesignError("no such design file", f"file '{design}'")
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise DesignError(f"folder '{Path(args.plot).parent}' does not exist", "--plot")
    if args.lr is not None and not args.lr > 0:
        raise DesignError(f"must be positive, got {args.lr:g}", "--lr")
    out_dir = Path(args.out_dir) if args.out_dir else design.with_name(design.stem + "_explore")
    settings = Settings(design, args.data, out_dir, Path(args.weights) if args.weights else None, args.finetune_epochs, args.alpha, args.temperature,
                        args.latency, overrides={"optimizer": {"lr": args.lr}} if args.lr is not None else {})
    console = Console(highlight=False, soft_wrap=True, stderr=True)
    progress = Progress("variants", total=len(variants) + 1, show=not (args.no_progress or args.json))

    def on_result(row: dict, done: int, total: int) -> None:
        progress.update(done, total)
        if "error" in row:
            progress.finish()
            console.print(f"variant {row['name']} failed: {row['error']}", markup=False)

    try:
        progress.update(0)
        summary = explore(settings, variants, args.jobs, on_result)
    finally:
        progress.finish()
    if "error" in summary["baseline"]:
        raise DesignError(f"the baseline could not be measured: {summary['baseline']['error']}", f"file '{design}'")
    if args.plot:
        write_chart(summary, args.plot)
    if args.json:
        print_json({"baseline": summary["baseline"], "variants": summary["variants"]})
        return 0
    out = Console(highlight=False, soft_wrap=True)
    render(summary, out)
    out.print(f"results: {summary['results']}" + (f"  chart: {args.plot}" if args.plot else ""), markup=False)
    return 0
