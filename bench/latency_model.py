"""Accuracy of the latency model on designs it was not calibrated on, beside the MACs-proportional baseline.

In one run: calibrate on this machine (ONNX Runtime CPU; or reuse the stored model with --reuse), then
for templates at two input sizes and compressed and fused variants, measure end-to-end latency as
calibration measures its references (`latency_model.interleaved_ms`: after a warm-up, --runs rounds that each
run every design once, so no design finds its weights still in cache and a busy period slows all alike; the
fastest run counts: with --threads 1 its CPU time, which leaves out the waits other processes on a shared
machine cause; else its wall time) and print predicted
vs measured for the model and for the baseline (total MACs times one constant fitted on the same
calibration runs), with the fraction within ±15 % and the median |error|. Then, for resnet18 and mobilenet_v2,
how close the per-node latencies of `convstudio profile` sum to its end-to-end figure on each runtime.

What calibration covers (`backends/latency_model.py`): synthetic networks of the blocks templates use (dense,
strided, grouped, depthwise 3x3 / 5x5, pointwise and 5x5 / 7x7 convs with BN and activations, residual adds,
pooling, SE scaling, concat, channel shuffle, upsampling, linear) over the templates' channel counts, entering
at the feature-map sizes of 224, 160 and 64 inputs, plus stems on 224 / 160 / 64 inputs and ShuffleNet-v1 units; and
the templates' own layers at 224, 160 and 64 inputs (`TEMPLATE_SIZES`; --no-templates leaves them out). None of the
designs below is calibrated on: the templates are tested at other input sizes (128 and 96 by default; sizes
calibration uses are refused) and the compressed and fused variants are not calibrated on at any size.

    python bench/latency_model.py [--runs 30] [--threads 1] [--sizes 128,96] [--reuse] [--quick] [--no-templates]
    python bench/latency_model.py --node-sums torch --sizes 128,224   (only the per-node-sum table)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from convstudio.backends.latency_model import TEMPLATE_SIZES, calibrate_and_time, find_model, interleaved_ms, predict
from convstudio.backends.profile import profile_design
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
    parser.add_argument("--runs", type=int, default=30, help="runs per design with --reuse and in the per-node sums (calibrating: its own 30 rounds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="128,96", help="input sizes of the templates")
    parser.add_argument("--reuse", action="store_true", help="use the stored model instead of calibrating now")
    parser.add_argument("--quick", action="store_true", help="calibrate on the tiny grid (a smoke run, not a result)")
    parser.add_argument("--no-templates", action="store_true", help="calibrate on the synthetic networks only, not on the templates' layers")
    parser.add_argument("--node-sums", choices=("ort", "torch", "both"),
                        help="only the per-node-sum table of this runtime (--runs runs), over --sizes, batch 1 and 8, one thread and the default")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.node_sums:
        print_node_sums(sizes, (1, 8), (1, 0), args.node_sums, args.runs)
        return
    if set(sizes) & set(TEMPLATE_SIZES) and not args.no_templates:
        parser.error(f"--sizes: calibration profiles the templates at {', '.join(map(str, TEMPLATE_SIZES))}; test on other sizes")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cases = designs(sizes)
    start = time.perf_counter()
    model = find_model("ort", "cpu", args.threads) if args.reuse else None
    if model is None:  # the designs are timed in the calibration's own interleaved rounds
        model, measured_ms = calibrate_and_time([(graph, 1) for _, graph in cases], args.threads, args.quick, not args.no_templates)
        print(f"calibrated ({model.meta['networks']} networks, {len(model.families)} op families, templates' layers "
              f"{'included' if model.meta['templates'] else 'left out'}) and measured {len(cases)} designs in {time.perf_counter() - start:.0f} s")
    else:
        print(f"reusing the stored model ({model.meta.get('networks')} networks, {len(model.families)} op families, "
              f"templates' layers {'included' if model.meta.get('templates') else 'left out'}): a machine busier or quieter now than then shifts every error")
        measured_ms = interleaved_ms([(graph, 1) for _, graph in cases], args.threads, args.runs)
        print(f"measured {len(cases)} designs in {time.perf_counter() - start:.0f} s, {args.runs} runs each")
    print(f"{'design':34} {'measured ms':>11} {'model ms':>9} {'error':>7} {'MACs-prop. ms':>13} {'error':>7}")
    errors, base_errors, variant = [], [], []
    for (label, graph), measured in zip(cases, measured_ms):
        predicted = predict(graph, 1, model)[1]
        macs = analyze(graph.copy(), "flops", 1, strict=True).total.macs
        base = macs / 1e9 * model.baseline_ms_per_gmac
        err, berr = predicted / measured - 1, base / measured - 1
        errors.append(err)
        base_errors.append(berr)
        variant.append(len(label.split()) > 2)
        print(f"{label:34} {measured:11.2f} {predicted:9.2f} {100 * err:+6.1f}% {base:13.2f} {100 * berr:+6.1f}%", flush=True)
    n = len(errors)
    within = sum(abs(e) <= WITHIN for e in errors)
    base_within = sum(abs(e) <= WITHIN for e in base_errors)
    print(f"model: {within}/{n} designs within ±{100 * WITHIN:.0f}% ({100 * within / n:.0f}%), "
          f"median |error| {100 * statistics.median(map(abs, errors)):.1f}%")
    print(f"MACs-proportional baseline: {base_within}/{n} within ±{100 * WITHIN:.0f}% ({100 * base_within / n:.0f}%), "
          f"median |error| {100 * statistics.median(map(abs, base_errors)):.1f}%")
    for name, pick in (("templates", False), ("compressed and fused variants", True)):
        part = [e for e, v in zip(errors, variant) if v == pick]
        base_part = [e for e, v in zip(base_errors, variant) if v == pick]
        print(f"  {name}: model {sum(abs(e) <= WITHIN for e in part)}/{len(part)}, median |error| {100 * statistics.median(map(abs, part)):.1f}%; "
              f"baseline {sum(abs(e) <= WITHIN for e in base_part)}/{len(base_part)}, median |error| {100 * statistics.median(map(abs, base_part)):.1f}%")
    print(f"model: median predicted / measured {statistics.median(1 + e for e in errors):.3f} (away from 1: the machine ran at another "
          f"speed than during calibration); load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_node_sums(sizes[:1], (1,), (args.threads,))


def print_node_sums(sizes: list[int], batches: tuple[int, ...], threads: tuple[int, ...], runtime: str = "both", runs: int = 10) -> None:
    """Per-node latencies of `profile` against its end-to-end median, per runtime, with how many fall within ±15 %."""
    print(f"\nper-node sum against end to end (profile, {runs} runs; threads 0: the runtime's default; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    within = count = 0
    for name in VARIANT_BASES:
        for size in sizes:
            graph = build_template(name, input_shape=[3, size, size])
            for batch in batches:
                for t in threads:
                    for report in profile_design(graph, runtime, "cpu", batch, t, runs):
                        e2e = report.end_to_end["median"]
                        share = report.unattributed_ms / e2e
                        within += abs(share) <= WITHIN
                        count += 1
                        outside = f", {report.outside_run_ms:.3f} ms of it outside the runtime's run" if report.outside_run_ms is not None else ""
                        spread = report.end_to_end["max"] / report.end_to_end["min"]
                        print(f"  {name:14} {size:4} b{batch:<2} t{t} {report.runtime:5} end to end {e2e:9.3f} ms (max/min {spread:4.1f}), "
                              f"nodes sum to {report.node_sum_ms:9.3f} ms, unattributed {report.unattributed_ms:+8.3f} ms ({100 * share:+5.1f}%){outside}",
                              flush=True)
    print(f"per-node sums within ±{100 * WITHIN:.0f}% of end to end: {within}/{count}; load average at the end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
