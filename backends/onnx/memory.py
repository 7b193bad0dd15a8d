"""What running an ONNX model needs in memory, estimated from its structure before ONNX Runtime allocates anything.

Initializers are the parameters; every value the graph computes is an activation, live from the node that
makes it to its last reader (graph outputs to the end), with shapes from ONNX shape inference at the shapes
of the actual inputs. The result is an `ir.budget.MemoryEstimate`, checked against the same limit as designs.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import helper

from convstudio.ir.budget import HINT, MemoryEstimate, check_estimate

SMALL_INITIALIZER = 64  # elements; initializers up to this size stay in the copy shape inference reads (shape tensors)


def _itemsize(elem_type: int) -> int:
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):  # strings and undefined types
        return 0


def _tensor_bytes(dims, elem_type: int) -> int:
    return math.prod(int(d) for d in dims) * _itemsize(elem_type)


def read_structure(path: str | Path) -> onnx.ModelProto | None:
    """The model without its external data (only shapes are needed); None when it does not parse (the session says why)."""
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: the model is reported when the session opens it
        return None


def _value_shapes(model: onnx.ModelProto, inputs: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Bytes of every value whose shape is fully known once the inputs have `inputs`' shapes."""
    graph = model.graph
    stripped = onnx.ModelProto(ir_version=model.ir_version)
    stripped.opset_import.extend(model.opset_import)
    stripped.functions.extend(model.functions)
    g = stripped.graph
    g.node.extend(graph.node)
    g.output.extend(graph.output)
    inits = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        added = g.input.add()
        added.CopyFrom(vi)
        if vi.name in inputs:
            dims = added.type.tensor_type.shape.dim
            del dims[:]
            for d in inputs[vi.name]:
                dims.add().dim_value = int(d)
    for t in graph.initializer:
        if math.prod(t.dims) <= SMALL_INITIALIZER and t.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.add().CopyFrom(t)
        else:  # a large weight only needs its shape here
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        inferred = onnx.shape_inference.infer_shapes(stripped, data_prop=True)
    except Exception:  # a model shape inference cannot follow: its activations stay unknown (0)
        return {}
    sizes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = vi.type.tensor_type
        dims = tensor.shape.dim
        if vi.type.HasField("tensor_type") and tensor.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            sizes[vi.name] = _tensor_bytes([d.dim_value for d in dims], tensor.elem_type)
    return sizes


def estimate_model(model: onnx.ModelProto, inputs: dict[str, tuple[int, ...]], batch: int) -> MemoryEstimate:
    """Initializer bytes plus the peak of live values over the node order, for inputs of the given full shapes."""
    graph = model.graph
    largest = ("", "activations", 0)
    params = 0
    for t in graph.initializer:
        size = _tensor_bytes(t.dims, t.data_type)
        params += size
        if size > largest[2]:
            largest = (f"initializer '{t.name}'", "parameters", size)
    sizes = _value_shapes(model, inputs)
    steps = len(graph.node)
    born = {name: 0 for name in inputs}
    last = dict.fromkeys(inputs, 0)
    maker = {}
    for step, node in enumerate(graph.node):
        for name in node.input:
            if name in born:
                last[name] = step
        for name in node.output:
            if name and name in sizes:
                born[name] = last[name] = step
                maker[name] = node.name or f"{node.op_type} {name}"
    for out in graph.output:
        if out.name in born:
            last[out.name] = steps
    live = [0] * (steps + 2)
    for name, start in born.items():
        size = sizes.get(name, 0) if name not in inputs else _tensor_bytes(inputs[name], _input_type(graph, name))
        live[start] += size
        live[last[name] + 1] -= size
        if name in maker and size > largest[2]:
            largest = (f"node '{maker[name]}'", "activations", size)
    running = peak = 0
    for delta in live:
        running += delta
        peak = max(peak, running)
    return MemoryEstimate(batch, params, peak, 0, largest[0], largest[1], largest[2])


def _input_type(graph: onnx.GraphProto, name: str) -> int:
    return next((vi.type.tensor_type.elem_type for vi in graph.input if vi.name == name), onnx.TensorProto.FLOAT)


def check_model_memory(model: onnx.ModelProto | None, inputs: dict[str, tuple[int, ...]], batch: int, limit: int | None,
                       where: str, hint: str = HINT) -> MemoryEstimate | None:
    """Refuse running `model` on inputs of these shapes when it needs more than `limit` bytes (None: the default limit)."""
    if model is None:
        return None
    return check_estimate(estimate_model(model, inputs, batch), limit, where, hint, subject="the model")
