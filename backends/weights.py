"""Parameters of a design as numpy arrays: default initialization and safetensors files.

Keys are ``"<node>.<param>"``; nodes in a sharing group store their parameters once, under the
group's first node. Both the torch and the ONNX backends read ``node.params`` filled from here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from convstudio.ir.design import Design, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.shapes import infer_shapes


def param_shapes(graph: Graph) -> dict[str, dict[str, tuple]]:
    """node -> {param or buffer name -> shape} for the nodes that own parameters."""
    infer_shapes(graph, strict=True)
    out: dict[str, dict[str, tuple]] = {}
    for name, node in graph.nodes.items():
        if graph.param_owner(name) != name:
            continue
        ins = [graph.nodes[parse_ref(r)[0]].meta["shapes"][parse_ref(r)[1]] for r in node.inputs]
        a = node.resolved
        shapes = {**node.opdef.params(a, ins), **node.opdef.buffers(a, ins)}
        if shapes:
            out[name] = {k: tuple(v) for k, v in shapes.items()}
    return out


def _fan_in(op: str, shape: tuple) -> int:
    if op == "ConvTranspose2d":
        return shape[1] * math.prod(shape[2:])
    return math.prod(shape[1:]) if len(shape) > 1 else shape[0]


def init_params(graph: Graph, seed: int = 0, only_missing: bool = True) -> list[str]:
    """Fill node.params with PyTorch's default initialization; returns the nodes initialized."""
    rng = np.random.default_rng(seed)
    done = []
    for name, shapes in param_shapes(graph).items():
        node = graph.nodes[name]
        if only_missing and node.params and set(node.params) >= set(shapes):
            continue
        a = node.resolved
        params: dict[str, np.ndarray] = {}
        weight_shape = shapes.get("weight")
        for key, shape in shapes.items():
            if node.op in ("BatchNorm2d", "BatchNorm1d"):
                value = np.ones(shape) if key in ("weight", "running_var") else np.zeros(shape)
            elif node.op == "PReLU":
                value = np.full(shape, a["init"])
            else:
                fan_in = _fan_in(node.op, weight_shape)
                bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
                value = rng.random(shape, dtype=np.float32)  # U(-bound, bound) drawn in float32: no float64 copy of large layers
                value *= np.float32(2 * bound)
                value -= np.float32(bound)
            params[key] = value.astype(np.float32, copy=False)
        node.params = params
        done.append(name)
    share_params(graph)
    return done


def share_params(graph: Graph) -> None:
    """Point every member of a sharing group at its owner's arrays."""
    for members in graph.share_groups().values():
        owner = graph.nodes[members[0]]
        for m in members[1:]:
            graph.nodes[m].params = owner.params


def check_params(graph: Graph) -> None:
    """Every owner has exactly the parameters its op and input shapes need."""
    for name, shapes in param_shapes(graph).items():
        params = graph.nodes[name].params
        for key, shape in shapes.items():
            if key not in params:
                raise DesignError(f"weights lack '{name}.{key}'", f"node '{name}'")
            if tuple(params[key].shape) != shape:
                raise DesignError(f"weight '{name}.{key}' has shape {list(params[key].shape)}, the design needs {list(shape)}", f"node '{name}'")


def has_params(graph: Graph) -> bool:
    shapes = param_shapes(graph)
    return all(graph.nodes[n].params and set(graph.nodes[n].params) >= set(s) for n, s in shapes.items())


def weights_to_dict(graph: Graph) -> dict[str, np.ndarray]:
    out = {}
    for name, shapes in param_shapes(graph).items():
        for key in shapes:
            if key in graph.nodes[name].params:
                out[f"{name}.{key}"] = np.ascontiguousarray(graph.nodes[name].params[key], dtype=np.float32)
    return out


def save_weights(graph: Graph, path: Path | str) -> None:
    """Write the parameters as a safetensors file, atomically."""
    from safetensors.numpy import save

    write_atomic(path, save(weights_to_dict(graph), metadata={"format": "convstudio.weights", "design": graph.name}))


def load_weights(graph: Graph, path: Path | str) -> None:
    """Read a safetensors file into node.params; every needed tensor must be there with its shape."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.exists():
        raise DesignError("weights file not found", f"file '{path}'")
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise DesignError(f"not a readable safetensors file ({str(e).splitlines()[0]})", f"file '{path}'") from None
    shapes = param_shapes(graph)
    for key in tensors:
        node, _, param = key.partition(".")
        if node not in shapes or param not in shapes[node]:
            raise DesignError(f"tensor '{key}' matches no parameter of the design", f"file '{path}'")
    for name, needed in shapes.items():
        graph.nodes[name].params = {k: tensors[f"{name}.{k}"].astype(np.float32) for k in needed if f"{name}.{k}" in tensors}
    share_params(graph)
    try:
        check_params(graph)
    except DesignError as e:
        raise DesignError(e.what, f"{e.where} file '{path}'") from None


def load_design_weights(design: Design, required: bool = False) -> bool:
    """Load the weights a design names; with `required`, a design without weights is an error."""
    path = design.weights_path()
    if path is None:
        if required:
            raise DesignError("the design has no weights (train it or give --weights)", f"design '{design.name}'")
        return False
    load_weights(design.graph, path)
    return True
