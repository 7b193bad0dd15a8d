"""`convstudio profile FILE`: measured per-node latency on ONNX Runtime and/or PyTorch, a roofline, and
`--calibrate` to fit this machine's latency model (what `cost --convention latency` reads)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from convstudio.designer.cli.common import Progress, check_design_memory, human_bytes, load_design, print_json
from convstudio.ir.errors import DesignError

VERB = "profile"
HELP = "measure per-layer latency on ONNX Runtime / PyTorch (roofline, memory-bound layers); --calibrate fits the latency model"


def add_arguments(parser) -> None:
    parser.add_argument("file", nargs="?", help="design file (not needed with --calibrate)")
    parser.add_argument("--runtime", choices=("ort", "torch", "both"), default="ort", help="ONNX Runtime (default), PyTorch or both")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when usable, else CPU")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: the runtime's own choice)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs after a warm-up (default 10)")
    parser.add_argument("--fuse", action="store_true", help="fuse conv+BN+activation first (as deployed)")
    parser.add_argument("--plot", metavar="PNG", help="draw each layer on this machine's roofline")
    parser.add_argument("--top", type=int, metavar="K", help="show only the K slowest layers")
    parser.add_argument("--calibrate", action="store_true", help="run micro-benchmarks and store this machine's latency model")
    parser.add_argument("--quick", action="store_true", help="with --calibrate: a tiny grid (seconds, for a first look)")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")


def run(args) -> int:
    from convstudio.backends.profile import check_options

    check_options(args.runtime, args.provider, args.batch, args.threads, args.runs)
    if args.top is not None and args.top < 1:
        raise DesignError(f"top must be at least 1, got {args.top}", "--top")
    if args.quick and not args.calibrate:
        raise DesignError("--quick only applies to --calibrate", "--quick")
    if args.calibrate:
        if args.file or args.plot or args.fuse:
            raise DesignError("--calibrate takes no design file, --plot or --fuse", "--calibrate")
        return _calibrate(args)
    if not args.file:
        raise DesignError("give a design file to profile (or --calibrate)", "FILE")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise DesignError("the plot is a PNG file: give a name ending in .png", "--plot")
    return _profile(args)


def _calibrate(args) -> int:
    from convstudio.backends.latency_model import calibrate, model_path

    if args.runtime == "both":
        raise DesignError("calibrate one runtime at a time: --runtime ort or --runtime torch", "--runtime")
    provider = "cpu" if args.provider == "auto" else args.provider
    with Progress("calibrating", show=not args.json) as bar:
        table = calibrate(args.runtime, provider, args.threads, args.quick, progress=bar.update)
    path = model_path(table.runtime, table.provider, table.threads)
    if args.json:
        print_json({"path": str(path), **table.to_dict()})
        return 0
    print(f"latency model for {table.runtime} on {table.provider} ({table.threads or 'default'} threads): "
          f"{len(table.families)} op families from {table.meta['networks']} networks")
    print(f"written to {path}")
    return 0


def _profile(args) -> int:
    from convstudio.backends.profile import profile_design
    from convstudio.backends.roofline import plot, roofline, summary

    design = load_design(args.file)
    check_design_memory(design, args.batch, None)
    roofs = {}

    def roof_for(runtime, provider, threads):
        roofs[runtime] = roofline(runtime, provider, threads)
        return roofs[runtime]

    names = 2 if args.runtime == "both" else 1
    with Progress(f"profiling {design.graph.name}", total=names * (args.runs + 2), show=not args.json) as bar:
        reports = profile_design(design.graph, args.runtime, args.provider, args.batch, args.threads, args.runs, args.fuse,
                                 progress=bar.update, roofline=roof_for)
    if args.plot:
        plot(reports, roofs, args.plot)
    if args.json:
        data = [r.to_json() for r in reports]
        print_json(data if args.runtime == "both" else data[0])
        return 0
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=200)
    for report in reports:
        _render(report, summary(roofs[report.runtime]), args.top, console)
    if args.plot:
        console.print(f"roofline plot written to {args.plot}")
    return 0


def _render(report, roof_text: str, top: int | None, console: Console) -> None:
    e2e = report.end_to_end
    if report.note:
        console.print(report.note)
    rows = report.nodes if top is None else sorted(report.nodes, key=lambda n: -n.latency_ms)[:top]
    table = Table(title=f"{report.runtime} on {report.provider}, batch {report.batch}, threads {report.threads or 'default'}",
                  title_justify="left")
    for header in ("name", "op", "ms", "share", "GFLOP/s", "bytes", "FLOP/B", "peak mem", "bound"):
        table.add_column(header, justify="left" if header in ("name", "op", "bound") else "right", overflow="fold")
    for n in rows:
        table.add_row(n.name, n.op, f"{n.latency_ms:.3f}", f"{100 * n.share:.1f}%", f"{n.gflops_per_s:.1f}", human_bytes(n.bytes),
                      f"{n.intensity:.1f}", human_bytes(n.peak_bytes), n.bound or "")
    console.print(table)
    console.print(f"end to end: median {e2e['median']:.3f} ms (min {e2e['min']:.3f}, max {e2e['max']:.3f}, {e2e['runs']} runs)")
    diff = report.unattributed_ms
    outside = report.outside_run_ms
    where = f": {outside:.3f} ms outside {report.runtime}'s run (the Python call, input and output copies)" if outside is not None else ""
    console.print(f"layers sum to {report.node_sum_ms:.3f} ms; unattributed {diff:+.3f} ms ({100 * diff / e2e['median']:+.1f}% of end to end){where}")
    memory_bound = [n.name for n in report.nodes if n.bound == "memory"]
    console.print(f"roofline: {roof_text}; {len(memory_bound)} of {len(report.nodes)} layers memory-bound "
                  f"({sum(n.latency_ms for n in report.nodes if n.bound == 'memory'):.3f} ms of the layer time)")
    if report.fused_by_runtime:
        shown = ", ".join(f"{k} ({'+'.join(v)})" for k, v in list(report.fused_by_runtime.items())[:3])
        more = len(report.fused_by_runtime) - 3
        console.print(f"{report.runtime} fused {len(report.fused_by_runtime)} kernels over several layers, time split by FLOPs: "
                      f"{shown}{f' and {more} more' if more > 0 else ''}")
