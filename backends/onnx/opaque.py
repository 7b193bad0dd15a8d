"""Opaque nodes: ONNX nodes the IR keeps as they are.

`opaque_to_onnx` re-emits one for the exporter; `output_types` finds the output shapes of an
ONNX node with onnx shape inference, or by running it once in onnxruntime on zeros when shape
inference cannot tell.
"""

from __future__ import annotations

import base64

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Node

# Ops whose output size comes from input values: never run on guessed inputs to learn their shape.
SIZE_FROM_DATA = {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "Reshape", "Slice", "NonZero"}
MAX_PROBE_ELEMENTS = 2**26


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
) -> list[tuple[tuple[int, ...], int]]:
    """(full shape, ONNX element type) of each present output of `proto`.

    `inputs` gives, per ONNX input position, (full shape, element type) for a runtime value, the array
    for a constant, or None when absent.
    """
    model, feeds = _single_node_model(proto, inputs, opsets)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        found = []
        for vi in inferred.graph.output:
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or tt.elem_type == 0:
                break
            if any(not d.HasField("dim_value") for d in tt.shape.dim):
                break
            found.append((tuple(d.dim_value for d in tt.shape.dim), tt.elem_type))
        else:
            return found
    except Exception:  # shape inference gave up: running the node below decides
        pass
    if proto.op_type in SIZE_FROM_DATA or sum(int(np.prod(x.shape)) for x in feeds.values()) > MAX_PROBE_ELEMENTS:
        where = f"ONNX node '{proto.name or proto.op_type}'"
        raise DesignError(f"the output shape of {proto.op_type} is unknown and running it to find out is not safe", where)
    return _run_once(model, feeds, proto)


def _single_node_model(proto, inputs, opsets):
    names, graph_inputs, inits, feeds = [], [], [], {}
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
            feeds[name] = np.zeros(shape, dtype=helper.tensor_dtype_to_np_dtype(elem))
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
    return model, feeds


def _run_once(model: onnx.ModelProto, feeds: dict, proto: onnx.NodeProto) -> list[tuple[tuple[int, ...], int]]:
    import onnxruntime as ort

    where = f"ONNX node '{proto.name or proto.op_type}'"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = session.run(None, feeds)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DesignError(
            f"cannot determine the output shapes of {proto.domain + '.' if proto.domain else ''}{proto.op_type} ({first})", where
        ) from None
    out = []
    for value in results:
        if not isinstance(value, np.ndarray):
            raise DesignError(f"{proto.op_type} produces a {type(value).__name__}, not a tensor", where)
        out.append((tuple(value.shape), helper.np_dtype_to_tensor_dtype(value.dtype)))
    return out
