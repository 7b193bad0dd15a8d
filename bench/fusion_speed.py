"""Inference speed of fused vs unfused designs, measured side by side in one run.

For mobilenet_v2 (BN-heavy) and resnet50 at batch 1 and 8 (224x224), with random weights and random
BN statistics: ONNX Runtime CPU latency of the unfused and the fused export, with graph optimizations
disabled and enabled; PyTorch eval forward of the unfused and the fused lowering, with torch.fx's own
`torch.fx.experimental.optimization.fuse()` of the unfused module as the reference. The variants of one
group run alternately (rotating order), after warm-up; the table shows medians (or, with --stat min,
the fastest run, which is steadier on a machine shared with other jobs) and speedups (unfused time /
variant time). Both runtimes use --threads threads (default: every core).
Usage: python bench/fusion_speed.py [--reps N] [--models a,b] [--batches 1,8] [--threads T] [--stat median|min]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.fx.experimental.optimization import fuse as fx_fuse

from convstudio.backends.onnx.export import export_model
from convstudio.backends.torch import lower
from convstudio.backends.weights import init_params
from convstudio.designer.cli.verb_fuse import randomize_bn
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import build_template

STATS = {"median": statistics.median, "min": min}


def interleaved(variants: dict, reps: int, stat: str, warmup: int = 2) -> dict[str, float]:
    """Seconds per call of each variant (median or min over `reps`), calling them in rotating order."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: STATS[stat](t) for name, t in times.items()}


def torch_call(module, x):
    def call():
        with torch.inference_mode():
            module(x)
    return call


def ort_call(session, feed):
    return lambda: session.run(None, feed)


def ort_session(model: bytes, optimize: bool, threads: int):
    """A CPU onnxruntime session with graph optimizations all on or all off.

    Worker threads do not spin after a run: spinning pools of the other sessions would steal the cores
    from the session being timed.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def bench_model(name: str, batches: list[int], reps: int, threads: int, stat: str) -> tuple[list[tuple], int]:
    graph = build_template(name)
    init_params(graph, seed=0)
    randomize_bn(graph, seed=1)
    result = fuse(graph)
    fused = result.graph
    unfused_module = lower(graph).eval()
    fused_module = lower(fused).eval()
    fx_module = fx_fuse(lower(graph).eval())
    models = {"unfused": export_model(graph).SerializeToString(), "fused": export_model(fused).SerializeToString()}
    sessions = {(v, opt): ort_session(models[v], opt, threads) for v in models for opt in (False, True)}
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            ref = unfused_module(x)
            diff = max(float((m(x) - ref).abs().max()) for m in (fused_module, fx_module)) / float(ref.abs().max())
        calls = {"unfused": unfused_module, "fused": fused_module, "fx": fx_module}
        t = interleaved({k: torch_call(m, x) for k, m in calls.items()}, reps, stat)
        rows.append((name, batch, "PyTorch eager", t["unfused"], t["fused"], t["fx"], diff))
        feed = {graph.inputs[0]: x.numpy()}
        for opt in (False, True):
            t = interleaved({v: ort_call(sessions[(v, opt)], feed) for v in models}, reps, stat)
            rows.append((name, batch, f"ORT CPU, opt {'on' if opt else 'off'}", t["unfused"], t["fused"], None, None))
    return rows, len(result.data["fused"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--models", default="mobilenet_v2,resnet50")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stat", choices=list(STATS), default="median", help="median, or min (steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each; "
          f"{args.reps} alternating runs per variant, {args.stat} times")
    header = (f"{'model':<13} {'batch':>5}  {'runtime':<18} {'unfused ms':>10} {'fused ms':>9} {'speedup':>8} "
              f"{'fx.fuse ms':>10} {'fx speedup':>10} {'rel diff':>9}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        rows, count = bench_model(name, batches, args.reps, args.threads, args.stat)
        for model, batch, runtime, unfused, fused, fx, diff in rows:
            fx_cells = f"{fx * 1e3:>10.2f} {unfused / fx:>9.3f}x" if fx is not None else f"{'':>10} {'':>10}"
            diff_cell = f"{diff:>9.1e}" if diff is not None else ""
            times = f"{unfused * 1e3:>10.2f} {fused * 1e3:>9.2f} {unfused / fused:>7.3f}x"
            print(f"{model:<13} {batch:>5}  {runtime:<18} {times} {fx_cells} {diff_cell}")
        print(f"{name}: {count} patterns fused")


if __name__ == "__main__":
    main()
