"""`convstudio quantize FILE.onnx --data DATA -o q.onnx`: INT8 static quantization, float and int8 measured side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from convstudio.designer.cli.common import Progress, human_bytes, print_json
from convstudio.ir.errors import DesignError

VERB = "quantize"
HELP = "quantize an ONNX model to INT8 (ONNX Runtime, QDQ, per-channel weights) calibrated on data; compare size, accuracy, latency"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="float ONNX model (.onnx)")
    p.add_argument("--data", required=True, metavar="digits|X.npz|FOLDER", help="samples for calibration and labels for accuracy")
    p.add_argument("-o", "--output", required=True, metavar="Q.onnx", help="the int8 model to write")
    add_measure_arguments(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_measure_arguments(p: argparse.ArgumentParser) -> None:
    """Calibration and measurement flags, shared with `export --int8`."""
    p.add_argument("--calib-samples", type=int, default=256, metavar="N", help="training-split samples used for calibration (default 256)")
    p.add_argument("--val-split", type=float, default=0.2, metavar="X", help="held-out share measured for accuracy, the split train makes (default 0.2)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split (default 0, as train)")
    p.add_argument("--runs", type=int, default=30, metavar="N", help="timed runs per model, interleaved (default 30)")


def check_measure_arguments(args) -> None:
    if not 0.0 <= args.val_split <= 0.9:
        raise DesignError(f"must lie in [0, 0.9], got {args.val_split:g}", "--val-split")
    if args.runs < 1:
        raise DesignError(f"must be at least 1, got {args.runs}", "--runs")


def quantize(src: Path, out: Path, data: str, args, show: bool) -> dict:
    from convstudio.backends.onnx.quantize import quantize_file

    if out.is_dir():
        raise DesignError("is a folder; give a file name", f"file '{out}'")
    if not out.parent.is_dir():
        raise DesignError(f"folder '{out.parent}' does not exist", f"file '{out}'")
    with Progress(f"quantizing {src.name}", show=show):
        return quantize_file(src, out, data, args.calib_samples, args.val_split, args.seed, args.runs)


def print_report(report: dict) -> None:
    f, q = report["float"], report["int8"]
    print(f"{'':8}{'size':>12}{'accuracy':>10}{'latency':>12}   ({report['eval_samples']} held-out samples of {report['source']}, batch {f['batch']})")
    for label, row in (("float", f), ("int8", q)):
        print(f"{label:8}{human_bytes(row['bytes']):>12}{100 * row['accuracy']:>9.2f}%{row['latency_ms']:>9.3f} ms")
    print(f"int8 is {report['smaller']:.2f}x smaller, accuracy {100 * (q['accuracy'] - f['accuracy']):+.2f} points, "
          f"latency x{q['latency_ms'] / f['latency_ms']:.2f} (medians of interleaved runs)")
    print(f"wrote {report['output']} (calibrated on {report['calibration_samples']} samples)")


def run(args) -> int:
    check_measure_arguments(args)
    src = Path(args.file)
    if src.suffix.lower() != ".onnx":
        raise DesignError("quantize reads an ONNX model (.onnx); export a design first", f"file '{src}'")
    report = quantize(src, Path(args.output), args.data, args, show=not args.json)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0
