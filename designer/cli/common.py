"""Helpers shared by the command-line verbs: loading designs, parsing shapes, output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from convstudio.ir.budget import MemoryEstimate, check_memory, default_limit, parse_size, size_text
from convstudio.ir.cost import CostReport, analyze
from convstudio.ir.design import Design, load
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops.registry import MAX_NUMEL, approx


def load_design(path: str) -> Design:
    return load(Path(path))


def add_weights_argument(parser) -> None:
    """`--weights FILE`: weights to use instead of the ones paired with the design."""
    parser.add_argument("--weights", metavar="W.safetensors",
                        help="weights to use (default: the design's own, <design>.safetensors beside it)")


def load_weights_for(design: Design, args) -> Path | None:
    """Load the `--weights` file, else the design's paired weights; returns the file read (None: the design has none)."""
    from convstudio.backends.weights import load_design_weights

    return load_design_weights(design, args.weights)


def refuse_overwriting(out: Path, read: list[Path | None]) -> None:
    """A design written to `out` (and its weights beside it) must not replace a file the verb reads."""
    written = (out, out.with_suffix(".safetensors"))
    for source in filter(None, read):
        for target in written:
            if target.resolve() == Path(source).resolve():
                raise DesignError(f"would overwrite '{source}', which this command reads; write elsewhere", f"file '{out}'")


def analyze_design(design: Design, convention: str = "flops", batch: int | None = None, latency=None, memory: bool = True,
                   nodes: bool | int = True) -> CostReport:
    """Strict shapes and cost of a loaded design (with predicted latency from the table `latency`; peak memory unless `memory`
    is false; per-node costs unless `nodes` is false, or of the top `nodes` layers only, see `analyze`); an error also names
    the design file."""
    try:
        return analyze(design.graph, convention, batch, strict=True, latency=latency, memory=memory, nodes=nodes)
    except DesignError as e:
        if design.path is None:
            raise
        raise type(e)(e.what, f"{e.where} in '{design.path}'".strip()) from None


def memory_size(text: str) -> int:
    """The argparse type of --max-memory: '512M', '16G', '2GiB' or plain bytes."""
    try:
        return parse_size(text)
    except DesignError as e:
        raise argparse.ArgumentTypeError(e.what) from None


def add_memory_argument(parser) -> None:
    """`--max-memory SIZE`: the most memory a run may need (parameters and activations, estimated before allocating)."""
    parser.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                        help=f"refuse designs whose parameters and activations need more than SIZE, e.g. 512M, 16G, 2GiB or bytes "
                             f"(K/M/G are powers of 1024; default {size_text(default_limit())}: 8 GiB, or half the memory of a smaller machine)")


def check_design_memory(design: Design, batch: int | None, limit: int | None, source: str | Path | None = None) -> MemoryEstimate:
    """Refuse a design whose parameters and activations at `batch` need more than `limit` bytes (None: the default
    limit), before anything is allocated; an error also names `source`, by default the design file."""
    source = design.path if source is None else source
    try:
        return check_memory(design.graph, batch or 1, limit)
    except DesignError as e:
        if source is None:
            raise
        raise type(e)(e.what, f"{e.where} in '{source}'" if e.where else f"file '{source}'") from None


def parse_shape(text: str, where: str = "--input") -> list[int]:
    """'1x3x224x224' or '3,224,224' -> list of ints."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise DesignError(f"shape must look like 1x3x224x224, got '{text}'", where) from None
    if not dims or any(d < 1 for d in dims):
        raise DesignError(f"shape dimensions must be positive, got '{text}'", where)
    return dims


def format_shape(shape) -> str:
    """['N', 3, 224, 224] -> 'Nx3x224x224'; a list of shapes (a node with several outputs) is joined with commas."""
    if shape is None:
        return ""
    if shape and isinstance(shape[0], (list, tuple)):
        return ", ".join(format_shape(s) for s in shape)
    return "x".join(map(str, shape))


def named_shapes(shapes: dict) -> str:
    """{'x': ['N', 3, 8, 8]} -> 'x Nx3x8x8'."""
    return ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())


def check_batch(batch: int, where: str) -> int:
    """A batch size between 1 and the largest tensor size ConvStudio accepts."""
    if batch < 1:
        raise DesignError(f"batch must be at least 1, got {batch}", where)
    if batch > MAX_NUMEL:
        raise DesignError(f"batch is absurdly large ({approx(batch)})", where)
    return batch


def choose_input(name: str, names: list[str], owner: str, usage: str) -> str:
    """The input an `--input` option means: the named one, or the only one when no name is given."""
    if not name:
        if len(names) != 1:
            raise DesignError(f"the {owner} has inputs {', '.join(names)}: use --input {usage}", "--input")
        return names[0]
    if name not in names:
        raise DesignError(f"the {owner} has no input named '{name}' (inputs: {', '.join(names)})", "--input")
    return name


def apply_input_shapes(graph: Graph, specs: list[str] | None) -> int | None:
    """Set Input shapes from `--input [NAME=]SHAPE` options; returns a batch size when one was given.

    A shape with one more dimension than the input's current shape carries the batch first.
    """
    batch = None
    if not specs:
        return None
    inputs = graph.inputs
    for spec in specs:
        name, _, shape_text = spec.rpartition("=")
        name = choose_input(name, inputs, "design", "NAME=SHAPE")
        dims = parse_shape(shape_text)
        current = graph.nodes[name].attrs["shape"]
        if len(dims) == len(current) + 1:
            batch, dims = check_batch(dims[0], "--input"), dims[1:]
        elif len(dims) != len(current):
            raise DesignError(f"input '{name}' is {len(current) + 1}-d (N{'x' + 'x'.join(map(str, current))}), got '{shape_text}'", "--input")
        graph.set_attr(name, "shape", dims)
    return batch


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def human(n: float, unit: str = "") -> str:
    """12_345_678 -> '12.35 M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip() if unit else f"{n:g}"


def signed(value: float, fmt) -> str:
    """`fmt` of the magnitude with its sign: +12.5 k, -3.00 MiB, 0."""
    sign = "+" if value > 0 else "-" if value < 0 else ""
    return sign + fmt(abs(value))


def human_bytes(n: float) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{int(n)} B"


# Rows of every before / after / side-by-side table: (total key, label, formatter).
METRIC_ROWS = (
    ("nodes", "layers", str),  # Graph.layer_count: Input and Output nodes are not counted
    ("params", "params", human),
    ("macs", "MACs", human),
    ("flops", "FLOPs", human),
    ("activation_bytes", "activation memory", human_bytes),
    ("peak_activation_bytes", "peak memory", human_bytes),
)


class Progress:
    """A transient progress line on stderr for a long step: a bar with counts when the total is known, else a spinner.

    It shows only when `show` is true and the console is a terminal (stderr when no console is given): never in
    --json mode, never when stderr is redirected. `update` starts it; `finish` clears it, and a later `update`
    starts it again (one bar per epoch). As a context manager it starts at once and always finishes.
    """

    def __init__(self, label: str, total: int | None = None, show: bool = True, console=None):
        self.label, self.total, self.console = label, total, console
        self.enabled = show and (console.is_terminal if console is not None else sys.stderr.isatty())
        self.bar = None
        self.task = None

    def update(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        total = self.total if total is None else total
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            label = TextColumn("{task.description}", markup=False)  # the label itself may hold braces
            columns = [label, BarColumn(), MofNCompleteColumn()] if total else [SpinnerColumn(), label]
            self.bar = Bar(*columns, TimeElapsedColumn(), console=self.console or Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def advance(self) -> None:
        """One more step done."""
        if self.bar is not None:
            self.bar.advance(self.task)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "Progress":
        self.update(0)
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
