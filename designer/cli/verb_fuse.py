"""`convstudio fuse FILE -o OUT`: fold BatchNorm and activations into convs for inference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console

from convstudio.backends.onnx.runtime import call_with_time_limit
from convstudio.backends.weights import has_params, init_params, save_design_and_weights, share_params
from convstudio.designer.cli.common import (
    Progress,
    add_memory_argument,
    add_weights_argument,
    check_design_memory,
    load_design,
    load_weights_for,
    print_json,
    refuse_overwriting,
)
from convstudio.designer.cli.latency import add_latency_arguments, latency_delta, render_latency
from convstudio.designer.cli.verb_compress import render_before_after
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.shapes import infer_shapes

VERB = "fuse"
HELP = "fuse conv + BatchNorm (+ activation) for inference and show the before / after cost"
VERIFY_BATCH = 2  # samples of the random input --verify runs
VERIFY_TIME_LIMIT = 300.0  # seconds the four --verify runs may take together


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("-o", "--output", required=True, help="where to write the fused design (weights go beside it)")
    add_weights_argument(parser)
    parser.add_argument("--verify", action="store_true", help="run both graphs in PyTorch and ONNX Runtime and print the max difference")
    parser.add_argument("--time-limit", type=float, default=VERIFY_TIME_LIMIT, metavar="SECONDS",
                        help=f"stop --verify after SECONDS (default {VERIFY_TIME_LIMIT:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random input (and weights when the design has none)")
    add_memory_argument(parser)
    add_latency_arguments(parser, "--measure", "also measure both designs on ONNX Runtime CPU and print the latency change")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def randomize_bn(graph: Graph, seed: int) -> None:
    """Give every BatchNorm random affine parameters and running statistics (so folding is really tested);
    the members of a sharing group keep sharing one set."""
    rng = np.random.default_rng(seed)
    for node in graph:
        if node.op in ("BatchNorm2d", "BatchNorm1d") and node.params:
            c = node.params["running_mean"].shape[0] if "running_mean" in node.params else next(iter(node.params.values())).shape[0]
            values = {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.2, c),
                      "running_mean": rng.normal(0, 0.2, c), "running_var": rng.uniform(0.5, 1.5, c)}
            node.params = {k: values[k].astype(np.float32) for k in node.params}
    share_params(graph)


def random_inputs(graph: Graph, seed: int, batch: int = VERIFY_BATCH) -> dict[str, np.ndarray]:
    """Standard-normal float32 arrays for every input of `graph`, with a batch dimension."""
    infer_shapes(graph, strict=True)
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((batch, *graph.nodes[name].meta["shapes"][0])).astype(np.float32) for name in graph.inputs}


def _outputs_torch(graph: Graph, inputs: dict) -> list[np.ndarray]:
    import torch

    from convstudio.backends.torch import lower

    module = lower(graph).eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(inputs[n]) for n in graph.inputs])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _outputs_onnx(graph: Graph, inputs: dict) -> list[np.ndarray]:
    from convstudio.backends.onnx.export import export_model
    from convstudio.backends.onnx.runtime import open_session, run

    session = open_session(export_model(graph).SerializeToString(), provider="cpu")[0]
    return run(session, inputs)


def _difference(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(x))) for x in a)
    return {"max_abs_diff": worst, "max_rel_diff": worst / scale if scale else worst}


def verify_fusion(original: Graph, fused: Graph, seed: int, on_run=None) -> dict:
    """Max difference between the unfused and fused graphs in PyTorch and ONNX Runtime on random input (4 runs, `on_run()` after each)."""
    inputs = random_inputs(original, seed)
    found = {}
    for backend, outputs in (("torch", _outputs_torch), ("onnxruntime", _outputs_onnx)):
        pair = []
        for graph in (original, fused):
            pair.append(outputs(graph, inputs))
            if on_run:
                on_run()
        found[backend] = _difference(*pair)
    return found


def run(args) -> int:
    design = load_design(args.file)
    graph = design.graph
    if not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        raise DesignError(f"time limit must be a positive number of seconds, got {args.time_limit:g}", "--time-limit")
    check_design_memory(design, VERIFY_BATCH if args.verify else 1, args.max_memory)  # before weights are read or initialized
    weights = load_weights_for(design, args)
    has_weights = weights is not None
    refuse_overwriting(Path(args.output), [Path(args.file), weights])
    result = fuse(graph)
    costs = before_after(graph, result.graph)
    out = Path(args.output)
    data = {"output": str(out), "weights": None, **costs, "fused": result.data["fused"], "declined": result.data["declined"],
            "latency_ms": latency_delta(graph, result.graph, args)}
    if args.verify:
        checked, checked_fused = graph, result.graph
        if not has_weights:
            checked = graph.copy()
            init_params(checked, args.seed)
            randomize_bn(checked, args.seed)
            checked_fused = fuse(checked).graph
        with Progress("verifying: unfused and fused in torch and ONNX Runtime", total=4, show=not args.json) as progress:
            # in a child process stopped at the limit: an imported opaque node may run without end
            data["verify"] = call_with_time_limit(verify_fusion, (checked, checked_fused, args.seed), args.time_limit,
                                                  "verifying the fusion", f"file '{args.file}'", progress.advance)
        data["verify"]["weights"] = "the design's" if has_weights else f"random (seed {args.seed}) with random BN statistics"
    written = save_design_and_weights(Design(result.graph, design.training), out, result.graph if has_weights and has_params(result.graph) else None)
    data["weights"] = written.name if written else None  # written once verified: a failed check leaves no output
    if args.json:
        print_json(data)
        return 0
    console = Console(highlight=False, soft_wrap=True)
    render_before_after(data, console, f"fusion of {design.name}")
    render_latency(data["latency_ms"], console)
    console.print(f"fused {len(result.data['fused'])} patterns:", markup=False)
    for f in result.data["fused"]:
        console.print(f"  {' + '.join(f['nodes'])} -> {f['into']} ({f['pattern']})", markup=False)
    if result.data["declined"]:
        console.print(f"declined {len(result.data['declined'])}:", markup=False)
        for d in result.data["declined"]:
            console.print(f"  {' + '.join(d['nodes'])}: {d['reason']}", markup=False)
    if args.verify:
        v = data["verify"]
        console.print(f"verify on random input, weights: {v['weights']}", markup=False)
        for backend in ("torch", "onnxruntime"):
            d = v[backend]
            console.print(f"  {backend}: max abs diff {d['max_abs_diff']:.3g} (relative {d['max_rel_diff']:.3g})", markup=False)
    console.print(f"wrote {out}" + (f" and {data['weights']}" if data["weights"] else ""), markup=False)
    return 0
