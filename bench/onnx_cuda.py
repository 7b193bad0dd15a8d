"""`convstudio infer --provider cuda` on resnet50, for a machine with a GPU.

Exports the resnet50 template (initialized weights, 3x224x224) into a temporary folder, then runs
the `infer` verb on it with CUDA and, for comparison, on CPU; each prints its output summary and
latency median and p90. Without a usable GPU the CUDA run ends with one `error:` line and exit 2.

    python bench/onnx_cuda.py [--runs 50] [--batch 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from convstudio.backends.onnx.export import export_file
from convstudio.designer.cli.main import main as convstudio
from convstudio.ir.templates import build_template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per provider")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the random input")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "resnet50.onnx"
        report = export_file(build_template("resnet50"), model)
        print(f"exported resnet50: opset {report['opset']}, {report['bytes'] / 2**20:.1f} MiB")
        codes = {}
        for provider in ("cuda", "cpu"):
            print(f"--- convstudio infer --provider {provider} --random --batch {args.batch} --runs {args.runs}", flush=True)
            codes[provider] = convstudio(["infer", str(model), "--random", "--provider", provider, "--batch", str(args.batch),
                                          "--runs", str(args.runs), "--warmup", "5"])
            sys.stdout.flush()
    return codes["cuda"]


if __name__ == "__main__":
    sys.exit(main())
