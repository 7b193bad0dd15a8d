"""Our ONNX exporter vs torch.onnx.export on the same resnet50 with the same weights, side by side.

Measures, in one run: export time of each exporter (alternating, median), then ONNX Runtime CPU
latency at batch 1, 224x224 of both exported models with graph optimizations on and off (runs
alternate between the two models; medians). torch's model is exported from the lowered module
(`backends.torch.lower`) with the TorchScript exporter (`dynamo=False`) at the same opset as ours.

    python bench/onnx_speed.py [--runs 30] [--exports 3] [--threads 1] [--template resnet50]
"""

from __future__ import annotations

import argparse
import collections
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.runtime import open_session, run
from convstudio.backends.torch import lower
from convstudio.backends.weights import init_params
from convstudio.ir.templates import build_template


def torch_export(module: torch.nn.Module, x: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), buffer, dynamo=False, opset_version=opset, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
        )
    return buffer.getvalue()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def export_times(graph, module, x, repeats: int) -> tuple[dict[str, list[float]], dict[str, bytes | onnx.ModelProto]]:
    """Alternate the exporters `repeats` times; returns each one's times and its last model."""
    times: dict[str, list[float]] = {"ours": [], "ours --fuse": [], "torch": []}
    models: dict[str, bytes | onnx.ModelProto] = {}
    for _ in range(repeats):
        t, models["ours"] = timed(lambda: export_model(graph))
        times["ours"].append(t)
        t, models["ours --fuse"] = timed(lambda: export_model(graph, fuse=True))
        times["ours --fuse"].append(t)
        opset = models["ours"].opset_import[0].version
        t, models["torch"] = timed(lambda opset=opset: torch_export(module, x, opset))
        times["torch"].append(t)
    return times, models


def latencies(models: dict, x: np.ndarray, optimize: bool, runs: int, threads: int) -> tuple[dict[str, list[float]], float]:
    """Single-run latencies (ms) of every model, run in rotating order; and the largest output difference."""
    sessions = {name: open_session(model, "cpu", optimize=optimize, threads=threads)[0] for name, model in models.items()}
    feeds = {"x": x}
    outputs = [run(session, feeds)[0] for session in sessions.values()]
    for _ in range(3):
        for session in sessions.values():
            run(session, feeds)
    names = list(sessions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            run(sessions[name], feeds)
            times[name].append((time.perf_counter() - start) * 1000)
    return times, max(float(np.abs(out - outputs[0]).max()) for out in outputs)


def optimized_ops(model: bytes | onnx.ModelProto, threads: int) -> collections.Counter:
    """Op counts of the graph onnxruntime runs after its CPU graph optimizations."""
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="resnet50")
    parser.add_argument("--runs", type=int, default=30, help="latency runs per model and setting")
    parser.add_argument("--exports", type=int, default=3, help="export repetitions per exporter")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: one per core)")
    args = parser.parse_args(argv)

    graph = build_template(args.template, (3, 224, 224), 1000)
    init_params(graph, seed=0)
    module = lower(graph).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    export_t, models = export_times(graph, module, x, args.exports)
    rows = [("export time (s)", {k: statistics.median(v) for k, v in export_t.items()})]
    diffs = []
    for optimize in (True, False):
        times, diff = latencies(models, x.numpy(), optimize, args.runs, args.threads)
        diffs.append(diff)
        label = f"ORT CPU latency, optimizations {'on' if optimize else 'off'} (ms)"
        rows.append((label, {k: statistics.median(v) for k, v in times.items()}))

    ours = models["ours"]
    opset = ours.opset_import[0].version
    print(f"{args.template}, batch 1, 3x224x224, same weights; torch.onnx.export with dynamo=False (TorchScript exporter), opset {opset}")
    print(f"onnxruntime CPU, {args.threads or 'default'} intra-op thread(s), {args.runs} runs per model in rotating order, medians; "
          f"exports repeated {args.exports}x alternating, medians")
    width = max(len(r[0]) for r in rows)
    names = list(models)
    print(f"{'':{width}}" + "".join(f"  {n:>12}" for n in names) + f"  {'ours/torch':>11}  {'fused/torch':>11}")
    for label, values in rows:
        cells = "".join(f"  {values[n]:12.3f}" for n in names)
        print(f"{label:{width}}{cells}  {values['ours'] / values['torch']:11.3f}  {values['ours --fuse'] / values['torch']:11.3f}")
    print("torch.onnx.export folds BatchNorm into the convs (eval mode, constant folding): with optimizations off, "
          "'ours --fuse' is the like-for-like column")
    print(f"max output difference between the models: {max(diffs):.2e}")
    same = optimized_ops(models["ours"], args.threads) == optimized_ops(models["torch"], args.threads)
    print(f"after onnxruntime's optimizations ours and torch's run the same ops: {'yes' if same else 'no'}")
    nodes = {n: len((m if isinstance(m, onnx.ModelProto) else onnx.load_model_from_string(m)).graph.node) for n, m in models.items()}
    print("ONNX nodes: " + ", ".join(f"{n} {k}" for n, k in nodes.items()))


if __name__ == "__main__":
    main()
