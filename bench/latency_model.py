"""Accuracy of the latency model on designs it was not calibrated on, beside the MACs-proportional baseline.

In one run: calibrate on this machine (ONNX Runtime CPU; or reuse the stored model with --reuse), then
for templates at two input sizes and compressed and fused variants, measure end-to-end latency as
calibration measures it (after a warm-up, the fastest of --runs: with --threads 1 its CPU time, which
leaves out the waits other processes on a shared machine cause; else its wall time) and print predicted
vs measured for the model and for the baseline (total MACs times one constant fitted on the same
calibration runs), with the fraction within ±15 %. Then, for resnet18 and mobilenet_v2, how close the per-node
latencies of `convstudio profile` sum to its end-to-end figure on each runtime.

    python bench/latency_model.py [--runs 30] [--threads 1] [--sizes 128,96] [--reuse] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

from convstudio.backends.latency_model import calibrate, find_model, predict
from convstudio.backends.profile import measure_latency, profile_design
from convstudio.ir.cost import analyze
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import build_template

TEMPLATES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
             "shufflenet_v2_x1_0", "squeezenet1_1", "regnet_y_400mf", "googlenet", "densenet121", "resnext50_32x4d")
VARIANT_BASES = ("resnet18", "mobilenet_v2")
WITHIN = 0.15


def designs(sizes: list[int]) -> list[tuple[str, Graph]]:
    out = []
    for name in TEMPLATES:
        for size in sizes:
            out.append((f"{name} {size}", build_template(name, input_shape=[3, size, size])))
    size = sizes[0]
    for name in VARIANT_BASES:
        base = build_template(name, input_shape=[3, size, size])
        out.append((f"{name} {size} fused", fuse(base).graph))
        for strategy in STRATEGIES:
            result = STRATEGIES[strategy].apply(base, None)
            if result.changed:
                out.append((f"{name} {size} {strategy}", result.graph))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="128,96", help="input sizes of the templates")
    parser.add_argument("--reuse", action="store_true", help="use the stored model instead of calibrating now")
    parser.add_argument("--quick", action="store_true", help="calibrate on the tiny grid (a smoke run, not a result)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    model = find_model("ort", "cpu", args.threads) if args.reuse else None
    if model is None:
        model = calibrate("ort", "cpu", args.threads, args.quick)
        print(f"calibrated in {time.perf_counter() - start:.0f} s ({len(model.families)} op families)")
    print(f"{'design':34} {'measured ms':>11} {'model ms':>9} {'error':>7} {'MACs-prop. ms':>13} {'error':>7}")
    errors, base_errors = [], []
    for label, graph in designs(sizes):
        measured = measure_latency(graph, 1, args.threads, args.runs)["reference"]
        predicted = predict(graph, 1, model)[1]
        macs = analyze(graph.copy(), "flops", 1, strict=True).total.macs
        base = macs / 1e9 * model.baseline_ms_per_gmac
        err, berr = predicted / measured - 1, base / measured - 1
        errors.append(err)
        base_errors.append(berr)
        print(f"{label:34} {measured:11.2f} {predicted:9.2f} {100 * err:+6.1f}% {base:13.2f} {100 * berr:+6.1f}%", flush=True)
    n = len(errors)
    within = sum(abs(e) <= WITHIN for e in errors)
    base_within = sum(abs(e) <= WITHIN for e in base_errors)
    print(f"model: {within}/{n} designs within ±{100 * WITHIN:.0f}% ({100 * within / n:.0f}%), "
          f"median |error| {100 * statistics.median(map(abs, errors)):.1f}%")
    print(f"MACs-proportional baseline: {base_within}/{n} within ±{100 * WITHIN:.0f}% ({100 * base_within / n:.0f}%), "
          f"median |error| {100 * statistics.median(map(abs, base_errors)):.1f}%")
    print_node_sums(sizes[0], args.threads)


def print_node_sums(size: int, threads: int) -> None:
    """Per-node latencies of `profile` against its end-to-end median, per runtime."""
    print(f"\nper-node sum against end to end (profile, 10 runs, batch 1, input {size}):")
    for name in VARIANT_BASES:
        graph = build_template(name, input_shape=[3, size, size])
        for report in profile_design(graph, "both", "cpu", 1, threads, 10):
            e2e = report.end_to_end["median"]
            outside = f", {report.outside_run_ms:.3f} ms of it outside the runtime's run" if report.outside_run_ms is not None else ""
            print(f"  {name:14} {report.runtime:5} end to end {e2e:8.3f} ms, nodes sum to {report.node_sum_ms:8.3f} ms, "
                  f"unattributed {report.unattributed_ms:+.3f} ms ({100 * report.unattributed_ms / e2e:+.1f}%){outside}", flush=True)


if __name__ == "__main__":
    main()
