"""`convstudio export FILE -o model.onnx`: write the design as an ONNX model with its weights."""

from __future__ import annotations

from pathlib import Path

from convstudio.backends.onnx.export import export_file
from convstudio.backends.weights import load_design_weights
from convstudio.designer.cli.common import apply_input_shapes, human_bytes, load_design, print_json
from convstudio.ir.errors import DesignError

VERB = "export"
HELP = "export the design to ONNX (dynamic batch, lowest opset that covers it, weights included)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and activations into convs first")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset to write (default: the lowest that covers the design)")
    parser.add_argument("--input", action="append", metavar="[NAME=]SHAPE", help="override an input shape, e.g. 3x160x160")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise DesignError("is a folder; give a file name", f"file '{out}'")
    design = load_design(args.file)
    apply_input_shapes(design.graph, args.input)
    had_weights = load_design_weights(design)
    report = export_file(design, out, opset=args.opset, fuse=args.fuse)
    report["weights_file"] = str(design.weights_path()) if had_weights else None
    if args.json:
        print_json(report)
        return 0
    print(f"wrote {out} ({human_bytes(report['bytes'])}): opset {report['opset']}, IR version {report['ir_version']}, "
          f"{report['onnx_nodes']} nodes, {report['initializers']} initializers")
    if report["weights_initialized"]:
        print(f"weights: initialized (seed 0) for {len(report['initialized_nodes'])} nodes; the design has no trained weights")
    else:
        print(f"weights: from {report['weights_file'] or 'the design'}")
    if args.fuse:
        rewrites = [line for line in report["fused"] if line.startswith("fused")]
        print(f"fusion: {len(rewrites)} rewrites (--json lists them)")
        for line in report["fused"]:
            if not line.startswith("fused"):
                print(f"fusion: {line}")
    return 0
