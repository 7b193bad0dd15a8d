"""The latency table of docs/latency.md on a GPU: each compression strategy (and fusion) on resnet18 and
mobilenet_v2, MACs ratio beside the measured latency ratio on ONNX Runtime's CUDA provider and on PyTorch CUDA
(synchronised), batch 1 and 8; then the per-layer profile of resnet18 on both, slowest layers first.

Without a usable GPU it says so in one line and exits 0.

    python bench/profile_cuda.py [--runs 20] [--size 224]
"""

from __future__ import annotations

import argparse
import sys

from latency_doc import BASES, BATCHES, variants  # bench/ scripts run from their folder

from convstudio.backends.profile import measure_latency, profile_design
from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.templates import build_template


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None."""
    import torch

    from convstudio.backends.onnx.export import build
    from convstudio.backends.onnx.runtime import open_session

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        open_session(build(build_template("lenet"))[2], "cuda")
    except DesignError as e:
        return e.line()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    problem = cuda_problem()
    if problem is not None:
        print(f"no usable GPU here ({problem}); nothing to measure")
        sys.exit(0)
    for name in BASES:
        print(f"\n{name}, input 3x{args.size}x{args.size}: ratios to the original")
        print(f"{'variant':24} {'MACs':>6} " + " ".join(f"{'ort b' + str(b):>8} {'torch b' + str(b):>9}" for b in BATCHES))
        reference = None
        for label, graph in variants(name, args.size):
            macs = analyze(graph.copy(), "flops", None, strict=True).total.macs
            times = {}
            for b in BATCHES:
                times[("ort", b)] = measure_latency(graph, b, 0, args.runs, "cuda")["median"]
                times[("torch", b)] = profile_design(graph, "torch", "cuda", b, 0, args.runs)[0].end_to_end["median"]
            if reference is None:
                reference = {"macs": macs, **times}
            cells = " ".join(f"{times[('ort', b)] / reference[('ort', b)]:8.2f} {times[('torch', b)] / reference[('torch', b)]:9.2f}" for b in BATCHES)
            print(f"{label:24} {macs / reference['macs']:6.2f} {cells}", flush=True)
    graph = build_template("resnet18", input_shape=[3, args.size, args.size])
    for report in profile_design(graph, "both", "cuda", 8, 0, args.runs):
        e2e = report.end_to_end
        print(f"\nresnet18 on {report.runtime} {report.provider}, batch 8: median {e2e['median']:.3f} ms, "
              f"layers sum to {report.node_sum_ms:.3f} ms (unattributed {report.unattributed_ms:+.3f} ms)")
        for n in sorted(report.nodes, key=lambda n: -n.latency_ms)[:10]:
            print(f"  {n.name:28} {n.op:14} {n.latency_ms:8.3f} ms {100 * n.share:5.1f}% {n.gflops_per_s:9.1f} GFLOP/s")


if __name__ == "__main__":
    main()
