"""`convstudio fuse FILE -o OUT`: fold BatchNorm and activations into convs for inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from convstudio.backends.weights import has_params, init_params, load_design_weights, save_weights, share_params
from convstudio.designer.cli.common import load_design, print_json
from convstudio.designer.cli.verb_compress import render_before_after
from convstudio.ir.design import Design, save
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compare import before_after
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.shapes import infer_shapes

VERB = "fuse"
HELP = "fuse conv + BatchNorm (+ activation) for inference and show the before / after cost"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("-o", "--output", required=True, help="where to write the fused design (weights go beside it)")
    parser.add_argument("--verify", action="store_true", help="run both graphs in PyTorch and ONNX Runtime and print the max difference")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random input (and weights when the design has none)")
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


def random_inputs(graph: Graph, seed: int, batch: int = 2) -> dict[str, np.ndarray]:
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


def verify_fusion(original: Graph, fused: Graph, seed: int) -> dict:
    """Max difference between the unfused and fused graphs in PyTorch and ONNX Runtime on random input."""
    inputs = random_inputs(original, seed)
    return {
        "torch": _difference(_outputs_torch(original, inputs), _outputs_torch(fused, inputs)),
        "onnxruntime": _difference(_outputs_onnx(original, inputs), _outputs_onnx(fused, inputs)),
    }


def run(args) -> int:
    design = load_design(args.file)
    graph = design.graph
    has_weights = load_design_weights(design)
    result = fuse(graph)
    costs = before_after(graph, result.graph)
    out = Path(args.output)
    weights_name = out.with_suffix(".safetensors").name if has_weights and has_params(result.graph) else None
    save(Design(result.graph, design.training, weights_name), out)
    if weights_name:
        save_weights(result.graph, out.with_name(weights_name))
    data = {"output": str(out), "weights": weights_name, **costs, "fused": result.data["fused"], "declined": result.data["declined"]}
    if args.verify:
        checked, checked_fused = graph, result.graph
        if not has_weights:
            checked = graph.copy()
            init_params(checked, args.seed)
            randomize_bn(checked, args.seed)
            checked_fused = fuse(checked).graph
        data["verify"] = verify_fusion(checked, checked_fused, args.seed)
        data["verify"]["weights"] = "the design's" if has_weights else f"random (seed {args.seed}) with random BN statistics"
    if args.json:
        print_json(data)
        return 0
    console = Console(highlight=False, soft_wrap=True)
    render_before_after(data, console, f"fusion of {design.name}")
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
    console.print(f"wrote {out}" + (f" and {weights_name}" if weights_name else ""), markup=False)
    return 0
