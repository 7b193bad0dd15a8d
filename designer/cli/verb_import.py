"""`convstudio import model.onnx -o design.json`: read an ONNX model into a design with its weights."""

from __future__ import annotations

from pathlib import Path

from convstudio.designer.cli.common import Progress, add_memory_argument, check_design_memory, human, parse_shape, print_json
from convstudio.ir.errors import DesignError

VERB = "import"
HELP = "import an ONNX model as a design (design.json plus design.safetensors beside it)"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("-o", "--output", required=True, help="design file to write (weights go beside it as .safetensors)")
    parser.add_argument("--name", help="design name (default: the model file's name)")
    parser.add_argument("--input", action="append", metavar="[NAME=]SHAPE",
                        help="fix an input's symbolic dimensions, e.g. 3x224x224 (repeat with NAME= for several inputs)")
    add_memory_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the import report as JSON")


def write_design(design, path: Path) -> Path:
    """Write the design and its weights beside it as one pair (see save_design_and_weights); returns the weights path."""
    from convstudio.backends.weights import save_design_and_weights

    return save_design_and_weights(design, path, design.graph)


def run(args) -> int:
    from convstudio.backends.onnx.importer import import_model
    from convstudio.ir.cost import analyze

    out = Path(args.output)
    if not out.parent.is_dir():
        raise DesignError("folder does not exist", f"file '{out}'")
    if out.suffix == ".safetensors":
        raise DesignError("the design file needs another suffix: its weights are written as .safetensors beside it", f"file '{out}'")
    model = Path(args.model).resolve()
    if model in (out.resolve(), out.with_suffix(".safetensors").resolve()):
        raise DesignError("would overwrite the ONNX model being imported; write the design elsewhere", f"file '{out}'")
    shapes = {}
    for spec in args.input or []:
        key, _, text = spec.rpartition("=")
        shapes[key] = parse_shape(text)
    with Progress(f"importing {Path(args.model).name}", show=not args.json):
        design, report = import_model(args.model, name=args.name, input_shapes=shapes)
        check_design_memory(design, 1, args.max_memory, args.model)  # before the weights are serialized
        weights = write_design(design, out)
    total = analyze(design.graph, "torchvision").total
    report = {**report, "design": str(out), "weights": str(weights), "params": total.params, "macs": total.macs}
    if args.json:
        print_json(report)
        return 0
    counts = report["counts"]
    params = f"{total.params:,}" if total.params < 1000 else f"{total.params:,} ({human(total.params)})"
    print(
        f"{args.model} -> {out} (weights {weights.name}): {counts['mapped']} mapped, {counts['folded']} folded, "
        f"{counts['opaque']} opaque; {params} params, {human(total.macs)} MACs{' (opaque nodes count 0)' if counts['opaque'] else ''}"
    )
    for entry in report["opaque"]:
        print(f"  opaque {entry['ir']} ({entry['op']}): {entry['reason']}")
    return 0
