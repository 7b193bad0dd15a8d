"""Constant folding: evaluate an ONNX node whose inputs are all known arrays, with a bound on the work.

Common shape-arithmetic ops run in numpy; a listed set of other ops of the default domain
(`REFERENCE_OPS`: elementwise, reductions, data movement, each costing time in proportion to its
inputs and outputs) runs in onnx's reference evaluator on at most `MAX_REFERENCE_ELEMENTS` elements.
Nothing else is evaluated: no control flow (Loop, If, Scan and every other node holding a subgraph),
no random ops, no op whose cost is not bounded by its sizes. Output sizes are checked before they
are allocated (`MAX_FOLD_ELEMENTS`), so a hostile ConstantOfShape, Expand or broadcast cannot
exhaust memory.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_FOLD_ELEMENTS = 2**28
MAX_REFERENCE_ELEMENTS = 2**20  # inputs plus outputs of one node run in the (partly pure-Python) reference evaluator
REFERENCE_OPS = frozenset({
    # elementwise
    "Abs", "Acos", "Acosh", "And", "Asin", "Asinh", "Atan", "Atanh", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "Celu", "Clip", "Cos", "Cosh", "Elu", "Equal", "Erf", "Exp", "Gelu", "Greater", "GreaterOrEqual",
    "HardSigmoid", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max", "Mean", "Min", "Mod", "Not", "Or",
    "Pow", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Xor", "DequantizeLinear", "QuantizeLinear",
    # reductions and scans
    "ArgMax", "ArgMin", "CumSum", "LogSoftmax", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMin", "ReduceProd", "ReduceSumSquare", "Softmax",
    # data movement
    "DepthToSpace", "EyeLike", "Flatten", "GatherElements", "Pad", "Range", "SpaceToDepth", "Split", "Tile", "Trilu",
})


class CannotFold(Exception):
    """The node cannot be evaluated at import time (the reason is the message)."""


def attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _guard(shape) -> None:
    n = math.prod(int(d) for d in shape)
    if any(int(d) < 0 for d in shape) or n > MAX_FOLD_ELEMENTS:
        raise CannotFold(f"folding would create a tensor of shape {list(map(int, shape))}")


def _axes(node, ins, a, opset, name="axes"):
    if opset >= 13 and len(ins) > 1 and ins[1] is not None:
        return [int(v) for v in ins[1]]
    return list(a.get(name, []))


def _slice(node, ins, a, opset):
    x = ins[0]
    if opset >= 10:
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    else:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", range(len(starts)))
        steps = [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return [x[tuple(index)]]


def _reshape(node, ins, a, opset):
    x, shape = ins[0], [int(v) for v in ins[1]]
    allowzero = a.get("allowzero", 0)
    target = [x.shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(shape)]
    return [x.reshape(target)]


def _squeeze(node, ins, a, opset):
    axes = _axes(node, ins, a, opset)
    return [np.squeeze(ins[0], axis=tuple(axes)) if axes else np.squeeze(ins[0])]


def _unsqueeze(node, ins, a, opset):
    axes = _axes(node, ins, a, opset)
    rank = ins[0].ndim + len(axes)
    out = ins[0]
    for ax in sorted(int(v) % rank for v in axes):
        out = np.expand_dims(out, ax)
    return [out]


def _constant_of_shape(node, ins, a, opset):
    shape = [int(v) for v in ins[0]]
    _guard(shape)
    value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _constant(node, ins, a, opset):
    if "value" in a:
        return [numpy_helper.to_array(a["value"])]
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return [np.array(a[key], dtype=dtype)]
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return [np.array(a[key], dtype=dtype)]
    raise CannotFold(f"Constant with attribute {', '.join(a)}")


def _cast(node, ins, a, opset):
    to = onnx.helper.tensor_dtype_to_np_dtype(a["to"])
    return [ins[0].astype(to)]


def _shape(node, ins, a, opset):
    dims = np.array(ins[0].shape, dtype=np.int64)
    return [dims[a.get("start", 0):a.get("end", None)]]


def _expand(node, ins, a, opset):
    try:
        shape = np.broadcast_shapes(ins[0].shape, tuple(int(v) for v in ins[1]))
    except ValueError as e:
        raise CannotFold(f"Expand: {e}") from None
    _guard(shape)
    return [np.broadcast_to(ins[0], shape).copy()]


def _gather(node, ins, a, opset):
    data, indices, axis = ins[0], ins[1], a.get("axis", 0)
    if not -data.ndim <= axis < data.ndim:
        raise CannotFold(f"Gather axis {axis} of a {data.ndim}-d input")
    axis %= data.ndim
    _guard([*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]])
    return [np.take(data, indices.astype(np.int64), axis=axis)]


def _gather_nd(node, ins, a, opset):
    data, indices = ins[0], ins[1].astype(np.int64)
    if a.get("batch_dims", 0):
        raise CannotFold("GatherND with batch_dims")
    if indices.ndim < 1 or not 1 <= indices.shape[-1] <= data.ndim:
        raise CannotFold(f"GatherND indices of shape {list(indices.shape)} for a {data.ndim}-d input")
    _guard([*indices.shape[:-1], *data.shape[indices.shape[-1]:]])
    return [data[tuple(np.moveaxis(indices, -1, 0))]]


def _broadcast(*arrays: np.ndarray) -> None:
    """Refuse a broadcast whose result would be too large, before computing it."""
    try:
        _guard(np.broadcast_shapes(*(x.shape for x in arrays)))
    except ValueError as e:
        raise CannotFold(f"broadcast: {e}") from None


def _where(node, ins, a, opset):
    _broadcast(*ins)
    return [np.where(ins[0].astype(bool), ins[1], ins[2])]


def _reduce(op: str):
    def fold(node, ins, a, opset):
        x = ins[0]
        if op == "ReduceMean" and not np.issubdtype(x.dtype, np.floating):
            return _reference(node, ins, opset)  # the integer mean's rounding is the evaluator's
        axes = _axes(node, ins, a, opset)
        if not axes and a.get("noop_with_empty_axes", 0):
            return [x]
        axes = tuple(int(v) % max(x.ndim, 1) for v in axes) if axes else None
        reduce = np.mean if op == "ReduceMean" else np.sum
        return [np.asarray(reduce(x, axis=axes, keepdims=bool(a.get("keepdims", 1)))).astype(x.dtype)]

    return fold


def _binary(fn):
    def fold(node, ins, a, opset):
        _broadcast(ins[0], ins[1])
        return [np.asarray(fn(ins[0], ins[1])).astype(np.result_type(ins[0], ins[1]))]

    return fold


def _div(node, ins, a, opset):
    x, y = ins
    _broadcast(x, y)
    if np.issubdtype(x.dtype, np.integer):
        if np.any(y == 0):
            raise CannotFold("integer division by zero")
        return [np.trunc(x / y).astype(x.dtype)]
    return [(x / y).astype(x.dtype)]


NUMPY_FOLDERS = {
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Identity": lambda node, ins, a, opset: [ins[0]],
    "Cast": _cast,
    "CastLike": lambda node, ins, a, opset: [ins[0].astype(ins[1].dtype)],
    "Shape": _shape,
    "Size": lambda node, ins, a, opset: [np.array(ins[0].size, dtype=np.int64)],
    "Expand": _expand,
    "Gather": _gather,
    "GatherND": _gather_nd,
    "Where": _where,
    "ReduceSum": _reduce("ReduceSum"),
    "ReduceMean": _reduce("ReduceMean"),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda node, ins, a, opset: [np.concatenate(ins, axis=a["axis"])],
    "Reshape": _reshape,
    "Slice": _slice,
    "Transpose": lambda node, ins, a, opset: [np.transpose(ins[0], a.get("perm"))],
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _div,
    "Floor": lambda node, ins, a, opset: [np.floor(ins[0])],
    "Ceil": lambda node, ins, a, opset: [np.ceil(ins[0])],
    "Sqrt": lambda node, ins, a, opset: [np.sqrt(ins[0])],
    "Neg": lambda node, ins, a, opset: [np.negative(ins[0])],
}


def foldable(node: onnx.NodeProto) -> bool:
    """Ops of the default domain folded in numpy or, when listed, in the reference evaluator; never a node with a subgraph."""
    if node.domain not in ("", "ai.onnx") or (node.op_type not in NUMPY_FOLDERS and node.op_type not in REFERENCE_OPS):
        return False
    return not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Outputs of `node` for known `inputs` (None for an absent optional input); raises CannotFold."""
    if not foldable(node):
        raise CannotFold(f"{node.op_type} is not evaluated at import")
    a = attrs_of(node)
    folder = NUMPY_FOLDERS.get(node.op_type)
    try:
        if folder is not None:
            outs = folder(node, inputs, a, opset)
        else:
            outs = _reference(node, inputs, opset)
    except CannotFold:
        raise
    except Exception as e:  # a node the evaluator rejects stays unfolded; the importer decides what to do
        raise CannotFold(f"{node.op_type} could not be evaluated ({type(e).__name__}: {str(e)[:120]})") from None
    for out in outs:
        _guard(np.shape(out))
    return [np.asarray(o) for o in outs]


def _reference(node: onnx.NodeProto, inputs: list, opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    too_many = CannotFold(f"{node.op_type} on more than {MAX_REFERENCE_ELEMENTS} elements is not evaluated at import")
    budget = MAX_REFERENCE_ELEMENTS - sum(int(np.size(x)) for x in inputs if x is not None)
    if budget < 0:
        raise too_many
    names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    outputs = [f"o{k}" if o else "" for k, o in enumerate(node.output)]
    single = helper.make_node(node.op_type, names, outputs, domain=node.domain)
    single.attribute.extend(node.attribute)
    constants = [numpy_helper.from_array(np.asarray(x), n) for n, x in zip(names, inputs) if x is not None]
    graph_outputs = [helper.make_empty_tensor_value_info(o) for o in outputs if o]
    model = helper.make_model(
        helper.make_graph([single], "fold", [], graph_outputs, constants), opset_imports=[helper.make_opsetid("", opset)]
    )
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    for vi in inferred.graph.output:
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            raise CannotFold(f"the output size of {node.op_type} is not known before running it")
        _guard([d.dim_value for d in dims])
        budget -= math.prod(d.dim_value for d in dims)
    if budget < 0:
        raise too_many
    return list(ReferenceEvaluator(model).run(None, {}))
