"""`convstudio export FILE -o model.onnx`: write the design as an ONNX model with its weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from convstudio.backends.onnx.export import export_file
from convstudio.designer.cli.common import (
    Progress,
    add_memory_argument,
    add_weights_argument,
    apply_input_shapes,
    check_design_memory,
    human_bytes,
    load_design,
    load_weights_for,
    print_json,
)
from convstudio.designer.cli.verb_quantize import add_measure_arguments, check_measure_arguments, print_report, quantize
from convstudio.ir.errors import DesignError

VERB = "export"
HELP = "export the design to ONNX (dynamic batch, lowest opset that covers it, weights included)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    add_weights_argument(parser)
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and activations into convs first")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset to write (default: the lowest that covers the design)")
    parser.add_argument("--input", action="append", metavar="[NAME=]SHAPE", help="override an input shape, e.g. 3x160x160")
    add_memory_argument(parser)
    parser.add_argument("--int8", action="store_true", help="write the model quantized to INT8 (as `convstudio quantize`; needs --calib)")
    parser.add_argument("--calib", metavar="digits|X.npz|FOLDER", help="data for --int8: calibration samples and labels for accuracy")
    add_measure_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise DesignError("is a folder; give a file name", f"file '{out}'")
    if args.int8 != bool(args.calib):
        raise DesignError("--int8 and --calib DATA go together", "--calib" if args.int8 else "--int8")
    check_measure_arguments(args)
    design = load_design(args.file)
    batch = apply_input_shapes(design.graph, args.input)
    check_design_memory(design, batch, args.max_memory)  # before any weights are read or initialized
    weights = load_weights_for(design, args)
    if args.int8:
        return export_int8(design, out, weights, args)
    with Progress(f"exporting {out.name}", show=not args.json):
        report = export_file(design, out, opset=args.opset, fuse=args.fuse)
    report["weights_file"] = None if weights is None else str(weights)
    if args.json:
        print_json(report)
        return 0
    print(f"wrote {out} ({human_bytes(report['bytes'])}): opset {report['opset']}, IR version {report['ir_version']}, "
          f"{report['onnx_nodes']} ONNX nodes, {report['initializers']} initializers")
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


def export_int8(design, out: Path, weights: Path | None, args) -> int:
    """Export the float model to a temporary file beside `out`, then quantize it into `out`."""
    if weights is None:
        raise DesignError("--int8 needs trained weights (train the design or give --weights)", f"file '{args.file}'")
    fd, name = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        with Progress(f"exporting {out.name}", show=not args.json):
            export_file(design, name, opset=args.opset, fuse=args.fuse)
        report = quantize(Path(name), out, args.calib, args, show=not args.json)
    finally:
        os.unlink(name)
    report["input"], report["weights_file"] = args.file, str(weights)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0
