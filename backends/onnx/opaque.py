"""Opaque nodes: ONNX nodes the IR keeps as they are.

`opaque_to_onnx` re-emits one for the exporter; `output_types` finds the output shapes of an
ONNX node with onnx shape inference, else takes the shapes the model file declares for them.
Nothing from the file is run to learn a shape: a Loop's trip count, a custom op or a shape that
depends on the data are known only to a run, and a run of an untrusted model has no bound.
"""

from __future__ import annotations

import base64

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Node


def encode_proto(proto: onnx.NodeProto) -> str:
    return base64.b64encode(proto.SerializeToString()).decode("ascii")


def decode_proto(node: Node) -> onnx.NodeProto:
    proto = onnx.NodeProto()
    try:
        proto.ParseFromString(base64.b64decode(node.attrs["proto"], validate=True))
    except Exception:
        raise DesignError("proto is not a base64 serialized ONNX NodeProto", f"node '{node.name}' attrs.proto") from None
    return proto


def opaque_to_onnx(node: Node, input_names: list[str], output_names: list[str]) -> onnx.NodeProto:
    """The original ONNX node of an Opaque IR node, reading `input_names` and writing `output_names`.

    Absent optional inputs and outputs stay empty; a Constant gets its value back from node.params.
    """
    proto = decode_proto(node)
    present_in = [i for i in proto.input if i]
    present_out = [o for o in proto.output if o]
    where = f"node '{node.name}'"
    if len(input_names) != len(present_in):
        raise DesignError(f"opaque {proto.op_type} needs {len(present_in)} input names, got {len(input_names)}", where)
    if len(output_names) != len(present_out):
        raise DesignError(f"opaque {proto.op_type} needs {len(present_out)} output names, got {len(output_names)}", where)
    names_in, names_out = iter(input_names), iter(output_names)
    out = onnx.NodeProto()
    out.CopyFrom(proto)
    out.name = node.name
    del out.input[:]
    del out.output[:]
    out.input.extend(next(names_in) if i else "" for i in proto.input)
    out.output.extend(next(names_out) if o else "" for o in proto.output)
    if proto.op_type == "Constant" and "value" in node.params:
        value = numpy_helper.from_array(np.asarray(node.params["value"], dtype=np.float32))
        out.attribute.append(helper.make_attribute("value", value))
    return out


def constant_proto(value: np.ndarray, keep_value: bool) -> onnx.NodeProto:
    """A Constant NodeProto; without `keep_value` the value lives in node.params instead."""
    node = helper.make_node("Constant", [], ["value"])
    if keep_value:
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
    return node


def output_types(
    proto: onnx.NodeProto,
    inputs: list[tuple[tuple, int] | np.ndarray | None],
    opsets: dict[str, int],
    declared: list[tuple[tuple[int, ...], int] | None] | None = None,
) -> list[tuple[tuple[int, ...], int]]:
    """(full shape, ONNX element type) of each present output of `proto`.

    `inputs` gives, per ONNX input position, (full shape, element type) for a runtime value, the array
    for a constant, or None when absent. `declared` gives, per present output, the full shape and type
    the model file states for it (None: not stated); they count where shape inference cannot tell.
    """
    model = _single_node_model(proto, inputs, opsets)
    problem = ""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output
    except Exception as e:  # shape inference gave up: the declared shapes decide
        inferred, problem = [], f" (shape inference: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__})"
    found = {vi.name: _known(vi) for vi in inferred}
    for vi, o in zip(inferred, [o for o in proto.output if o]):
        kind = vi.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            raise DesignError(f"{proto.op_type} output '{o}' is a {kind.removesuffix('_type')}, not a tensor; designs hold tensors",
                              f"ONNX node '{proto.name or proto.op_type}'")
    result = [found.get(f"out{k}") for k, o in enumerate(proto.output) if o]
    if declared is not None:
        result = [r if r is not None else d for r, d in zip(result, declared)]
    missing = [o for o, r in zip([o for o in proto.output if o], result) if r is None]
    if missing:
        raise DesignError(
            f"the shape of {proto.op_type} output '{missing[0]}' is known only by running the node{problem}, and import runs nothing "
            "from the file: declare the shape in the model's value_info",
            f"ONNX node '{proto.name or proto.op_type}'",
        )
    return result


def declared_types(model: onnx.ModelProto) -> dict[str, tuple[tuple[int | None, ...], int]]:
    """value name -> (shape, element type) the model states (value_info, graph outputs) or ONNX shape inference
    of the whole model derives; a dimension that is symbolic or unknown is None."""
    try:
        graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:  # what the file itself states still counts
        graph = model.graph
    found = {}
    for vi in [*graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and tt.elem_type:
            found[vi.name] = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim), tt.elem_type)
    return found


def _known(vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], int] | None:
    """(shape, element type) of a value whose type is a tensor with every dimension known, else None."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or tt.elem_type == 0:
        return None
    if any(not d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return tuple(d.dim_value for d in tt.shape.dim), tt.elem_type


def _single_node_model(proto: onnx.NodeProto, inputs: list, opsets: dict[str, int]) -> onnx.ModelProto:
    """A model of `proto` alone: runtime inputs as graph inputs of their shapes, constants as initializers."""
    names, graph_inputs, inits = [], [], []
    for k, item in enumerate(inputs):
        if item is None:
            names.append("")
            continue
        name = f"in{k}"
        names.append(name)
        if isinstance(item, np.ndarray):
            inits.append(numpy_helper.from_array(item, name))
        else:
            shape, elem = item
            graph_inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
    outputs = [f"out{k}" if o else "" for k, o in enumerate(proto.output)]
    node = onnx.NodeProto()
    node.CopyFrom(proto)
    del node.input[:]
    del node.output[:]
    node.input.extend(names)
    node.output.extend(outputs)
    graph = helper.make_graph([node], "opaque", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outputs if o], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = min(model.ir_version, 10)
    return model
