"""The ONNX -> IR mapping table: one function per ONNX op type (layout ops are in `layout`).

Each function reads its inputs through the importer (`imp.runtime`, `imp.const`, `imp.peek`), adds
IR nodes with `imp.add`, and returns one Value per present ONNX output; it raises Unmappable (with
the reason) when the node's attributes or inputs are outside what the IR expresses exactly.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from convstudio.backends.onnx.fold import attrs_of
from convstudio.backends.onnx.importer_core import FLOAT, Importer, InvalidModel, Unmappable, Value, base_name
from convstudio.backends.onnx.layout import LAYOUT_MAPPERS
from convstudio.backends.onnx.map_common import first_input, one_value, only_first_output, pair, text
from convstudio.backends.onnx.opaque import output_types
from convstudio.backends.onnx.ops import SELU_ALPHA, SELU_GAMMA
from convstudio.ir.graph import parse_ref


def _pads(a: dict, in_hw, kernel, strides, dilations, extra=(0, 0, 0, 0)) -> tuple[int, int]:
    """Symmetric (pad_h, pad_w) from ONNX pads/auto_pad plus an absorbed Pad; else Unmappable."""
    t, l_, b, r = _four_pads(a, in_hw, kernel, strides, dilations, extra)
    if t != b or l_ != r:
        raise Unmappable(f"asymmetric padding (top {t}, bottom {b}, left {l_}, right {r}) has no IR form")
    return t, l_


def _four_pads(a: dict, in_hw, kernel, strides, dilations, extra=(0, 0, 0, 0)) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ONNX pads/auto_pad plus an absorbed Pad."""
    auto = text(a.get("auto_pad", "NOTSET"))
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        pads = begin + end
    if len(pads) != 4:
        raise Unmappable(f"pads {pads} are not 2-d")
    return pads[0] + extra[0], pads[1] + extra[1], pads[2] + extra[2], pads[3] + extra[3]


def _stored_bias(imp: Importer, node: onnx.NodeProto, index: int) -> np.ndarray | None:
    """The bias input, or None when absent or zeros the exporter computed (no parameter in the source)."""
    bias = imp.const_or_none(node, index)
    if bias is not None and imp.values[node.input[index]].info.get("computed") and not bias.any():
        return None
    return bias


def _conv_bias(imp: Importer, node: onnx.NodeProto, index: int, channels: int) -> np.ndarray | None:
    """The stored bias of a convolution; one of another shape than [channels] is invalid ONNX (onnxruntime refuses it too)."""
    bias = _stored_bias(imp, node, index)
    if bias is not None and bias.shape != (channels,):
        raise InvalidModel(f"{node.op_type} bias has shape {list(bias.shape)}; ONNX needs one value per output channel ([{channels}])")
    return bias


def _absorbed_pad(imp: Importer, name: str) -> tuple[Value, tuple[int, int, int, int]]:
    """The value feeding a zero Pad (and its pads t, l, b, r) when `name` is such a Pad's output."""
    v = imp.peek(name)
    if v.deferred is not None and "pad" in v.info:
        src, pads = v.info["pad"]
        return imp.runtime(src), pads
    return imp.runtime(name), (0, 0, 0, 0)


# ---- convolutions -------------------------------------------------------------------------------


def conv(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x, extra = _absorbed_pad(imp, node.input[0])
    if len(x.shape) != 3:
        raise Unmappable("only 2-d convolutions map")
    w = imp.const(node.input[1])
    if w.ndim != 4:
        raise Unmappable("only 2-d convolutions map")
    bias = _conv_bias(imp, node, 2, int(w.shape[0]))
    a = attrs_of(node)
    kernel = pair(a.get("kernel_shape", w.shape[2:]), "kernel_shape")
    if kernel != tuple(w.shape[2:]):
        raise Unmappable(f"kernel_shape {list(kernel)} differs from the weight's {list(w.shape[2:])}")
    strides = pair(a.get("strides", [1, 1]), "strides")
    dilations = pair(a.get("dilations", [1, 1]), "dilations")
    t, l_, b, r = _four_pads(a, x.shape[1:], kernel, strides, dilations, extra)
    attrs = {
        "out_channels": int(w.shape[0]),
        "kernel_size": list(kernel),
        "stride": list(strides),
        "padding": [t, l_] if (t, l_) == (b, r) else [t, l_, b, r],
        "dilation": list(dilations),
        "groups": int(a.get("group", 1)),
        "bias": bias is not None,
    }
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [imp.out(imp.add("Conv2d", [x.ref], base_name(node), attrs, params))]


def conv_transpose(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    w = imp.const(node.input[1])
    if w.ndim != 4:
        raise Unmappable("only 2-d transposed convolutions map")
    a = attrs_of(node)
    bias = _conv_bias(imp, node, 2, int(w.shape[1]) * int(a.get("group", 1)))
    if "output_shape" in a:
        raise Unmappable("output_shape is not mapped (give pads and output_padding)")
    if text(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID", ""):
        raise Unmappable("auto_pad SAME on a transposed convolution is not mapped")
    group = int(a.get("group", 1))
    strides = pair(a.get("strides", [1, 1]), "strides")
    dilations = pair(a.get("dilations", [1, 1]), "dilations")
    padding = _pads({"pads": a.get("pads", [0, 0, 0, 0])}, x.shape[1:], w.shape[2:], strides, dilations)
    attrs = {
        "out_channels": int(w.shape[1]) * group,
        "kernel_size": [int(k) for k in w.shape[2:]],
        "stride": list(strides),
        "padding": list(padding),
        "output_padding": list(pair(a.get("output_padding", [0, 0]), "output_padding")),
        "dilation": list(dilations),
        "groups": group,
        "bias": bias is not None,
    }
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [imp.out(imp.add("ConvTranspose2d", [x.ref], base_name(node), attrs, params))]


def deform_conv(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    w = imp.const(node.input[1])
    offset = imp.runtime(node.input[2])
    bias = _conv_bias(imp, node, 3, int(w.shape[0]))
    mask = imp.runtime(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    a = attrs_of(node)
    strides = pair(a.get("strides", [1, 1]), "strides")
    dilations = pair(a.get("dilations", [1, 1]), "dilations")
    padding = _pads({"pads": a.get("pads", [0, 0, 0, 0])}, x.shape[1:], w.shape[2:], strides, dilations)
    attrs = {
        "out_channels": int(w.shape[0]),
        "kernel_size": [int(k) for k in w.shape[2:]],
        "stride": list(strides),
        "padding": list(padding),
        "dilation": list(dilations),
        "groups": int(a.get("group", 1)),
        "offset_groups": int(a.get("offset_group", 1)),
        "bias": bias is not None,
    }
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    inputs = [x.ref, offset.ref] + ([mask.ref] if mask is not None else [])
    return [imp.out(imp.add("DeformConv2d", inputs, base_name(node), attrs, params))]


# ---- linear -------------------------------------------------------------------------------------


def _bias_vector(c: np.ndarray, m: int) -> np.ndarray:
    if c.size == m and (c.ndim == 1 or (c.ndim == 2 and c.shape[0] == 1)):
        return c.reshape(m)
    if c.size == 1:
        return np.full(m, c.reshape(-1)[0], dtype=np.float32)
    raise Unmappable(f"bias of shape {list(c.shape)} is not one value per output feature")


def gemm(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 1)
    b = imp.const(node.input[1])
    a = attrs_of(node)
    if a.get("transA", 0):
        raise Unmappable("transA=1 is not a Linear layer")
    weight = b if a.get("transB", 0) else b.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if alpha != 1.0:
        weight = weight * np.float32(alpha)
    c = imp.const_or_none(node, 2)
    params = {"weight": weight}
    if c is not None:
        bias = _bias_vector(c, weight.shape[0])
        params["bias"] = bias * np.float32(beta) if beta != 1.0 else bias  # a view of a stored bias keeps its source (sharing)
    attrs = {"out_features": int(weight.shape[0]), "bias": c is not None}
    return [imp.out(imp.add("Linear", [x.ref], base_name(node), attrs, params))]


def matmul(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    w = imp.const(node.input[1])
    if w.ndim != 2:
        raise Unmappable("MatMul with a non-matrix constant is not a Linear layer")
    name = imp.add("Linear", [x.ref], base_name(node), {"out_features": int(w.shape[1]), "bias": False}, {"weight": w.T})
    return [imp.out(name, linear=name, source=node.output[0])]


# ---- elementwise --------------------------------------------------------------------------------


def _linear_bias(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """Add(MatMul(x, W), b) -> the MatMul's Linear gets the bias."""
    if len(node.input) != 2:
        return None
    for lin_in, bias_in in ((0, 1), (1, 0)):
        lin = imp.values[node.input[lin_in]]
        bias = imp.values[node.input[bias_in]]
        if lin.is_const or not bias.is_const or "linear" not in lin.info or imp.uses[lin.info["source"]] != 1:
            continue
        name = lin.info["linear"]
        ir = imp.graph.nodes[name]
        if ir.attrs.get("bias", True):
            continue
        vector = _bias_vector(imp.const(node.input[bias_in]), ir.attrs["out_features"])
        imp.graph.set_attr(name, "bias", True)
        ir.params["bias"] = np.array(vector, dtype=np.float32)
        imp.note_source(name, "bias", vector)
        return [Value(FLOAT, ref=lin.ref, shape=lin.shape)]
    return None


# x times a gate of x: the gate op -> the gated activation
GATED = {"Sigmoid": "SiLU", "Hardsigmoid": "Hardswish"}


def _gated(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """Mul(x, Sigmoid(x)) -> SiLU(x) and Mul(x, HardSigmoid(x)) -> Hardswish(x) when the gate feeds nothing else."""
    if len(node.input) != 2:
        return None
    for s_in, x_in in ((0, 1), (1, 0)):
        s = imp.values[node.input[s_in]]
        gate = s.info.get("gate_of")
        if s.is_const or not gate or gate[1] != node.input[x_in] or imp.uses[node.input[s_in]] != 1:
            continue
        x = imp.runtime(node.input[x_in])
        imp.graph.erase(s.info["node"])
        return [imp.out(imp.add(GATED[gate[0]], [x.ref], base_name(node)))]
    return None


def _per_channel(c: np.ndarray, x: Value) -> np.ndarray | None:
    """`c` as one value per channel of x when it broadcasts that way (scalar, [C], [C,1,1], [1,C,1,1])."""
    channels = x.shape[0] if x.shape else 0
    if c.dtype != np.float32 or not x.shape or c.ndim > len(x.shape) + 1:
        return None
    if c.size == 1:
        return np.full(channels, c.reshape(-1)[0], np.float32)
    dims = list(c.shape)
    if len(dims) == len(x.shape) + 1:
        if dims[0] != 1:
            return None
        dims = dims[1:]
    if len(dims) == len(x.shape) and dims[0] == channels and all(d == 1 for d in dims[1:]):
        return c.reshape(channels)
    return None


def vector_axis(c: np.ndarray, shape: tuple) -> int | None:
    """The dimension of a (batch, *shape) tensor along which `c` holds one value per entry (broadcast
    over every other dimension), else None; constants of one element run along no dimension."""
    full = (0, *shape)
    if c.dtype != np.float32 or c.size < 2 or c.ndim > len(full):
        return None
    dims = (1,) * (len(full) - c.ndim) + tuple(c.shape)
    spread = [i for i, d in enumerate(dims) if d != 1]
    if len(spread) != 1 or spread[0] == 0 or dims[spread[0]] != full[spread[0]]:
        return None
    return spread[0]


def _constant_operand(imp: Importer, node: onnx.NodeProto) -> tuple[int, Value, np.ndarray] | None:
    """A binary node with exactly one constant operand: (index of the other, its value, the constant), else None."""
    if len(node.input) != 2:
        return None
    values = [imp.values[i] for i in node.input]
    if sum(v.is_const for v in values) != 1:
        return None
    k = 0 if values[1].is_const else 1
    return k, imp.runtime(node.input[k]), imp.const(node.input[1 - k])


def _identity_batchnorm(imp: Importer, x_ref: str, shape, name: str, scale: np.ndarray, shift: np.ndarray) -> str:
    """A BatchNorm with identity statistics and eps 0: exactly x·scale + shift per channel."""
    c = len(scale)
    params = {"weight": scale, "bias": shift, "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}
    return imp.add("BatchNorm2d" if len(shape) == 3 else "BatchNorm1d", [x_ref], name, {"eps": 0.0}, params)


def _scale(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """x·c with one constant per channel (or per entry of another dimension): Scale, ConvNeXt's layer scale."""
    operand = _constant_operand(imp, node)
    if operand is None:
        return None
    k, x, c = operand
    axis = vector_axis(c, x.shape)
    if axis is None:
        return None
    rank = len(x.shape) + 1
    attrs = {} if axis == 1 else {"axis": -1 if axis == rank - 1 else axis}
    name = imp.add("Scale", [x.ref], base_name(node), attrs, {"weight": c.reshape(-1)})
    return [imp.out(name, scale=name, source=node.output[0])]


def _scale_then_shift(imp: Importer, x: Value, shift: np.ndarray) -> list[Value] | None:
    """Scale over channels (read only here) + a per-channel constant: one affine BatchNorm (eps 0), which is exact."""
    name = x.info.get("scale")
    if not name or imp.uses[x.info["source"]] != 1 or imp.graph.users(name) or imp.graph.nodes[name].resolved["axis"] != 1:
        return None
    scaled = imp.graph.nodes[name]
    gamma, source = scaled.params["weight"], scaled.inputs[0]
    imp.graph.erase(name)
    imp.taken.discard(name)
    bn = _identity_batchnorm(imp, source, x.shape, name, gamma, shift)
    return [imp.out(bn, affine=bn, source=x.info["source"])]


def _affine(imp: Importer, node: onnx.NodeProto, op: str) -> list[Value] | None:
    """x·s and x + b with per-channel constants: a BatchNorm with identity statistics (eps 0), which is exact.

    An Add right after such a Mul (its only consumer) becomes that BatchNorm's bias.
    """
    operand = _constant_operand(imp, node)
    if operand is None:
        return None
    k, x, c = operand
    if op == "Sub" and k == 1:
        return None
    vector = _per_channel(c, x)
    if vector is None or len(x.shape) not in (1, 2, 3):
        return None
    if op == "Sub":
        vector = -vector
    if op != "Mul":
        shifted = _scale_then_shift(imp, x, vector)
        if shifted:
            return shifted
    previous = x.info.get("affine")
    if op != "Mul" and previous and imp.uses[x.info["source"]] == 1:
        bn = imp.graph.nodes[previous]
        bn.params["bias"] = (bn.params["bias"] + vector).astype(np.float32)
        return [Value(FLOAT, ref=x.ref, shape=x.shape)]
    channels = len(vector)
    scale = vector if op == "Mul" else np.ones(channels, np.float32)
    shift = vector if op != "Mul" else np.zeros(channels, np.float32)
    name = _identity_batchnorm(imp, x.ref, x.shape, base_name(node), scale, shift)
    scalar = (node.input[k], float(c.reshape(-1)[0])) if c.size == 1 else None
    return [imp.out(name, affine=name, source=node.output[0], scalar_of=scalar)]


# ---- GELU spelled out, in the orders exporters write ----------------------------------------------
# erf form:  0.5·x·(1 + erf(x / sqrt(2)))                  opened by Div
# tanh form: 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x³))) opened by Pow(x, 3), or by 0.044715·(x·(x·x))
# Each step is deferred (read once) until the last multiplication makes one GELU; the x·x and x·(x·x)
# nodes of the tanh form, mapped as Mul before the pattern shows, are erased then.
GELU_KAPPA = 0.044715
GELU_BETA = math.sqrt(2 / math.pi)


def _scalar(imp: Importer, name: str) -> float | None:
    """The value of a one-element float constant, else None."""
    v = imp.values[name]
    if not v.is_const or len(v.consts) != 1 or v.consts[0].size != 1 or not np.issubdtype(v.consts[0].dtype, np.floating):
        return None
    return float(v.consts[0].reshape(-1)[0])


def _near(value: float | None, target: float) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=1e-6)


def _gelu_stage(imp: Importer, name: str) -> dict | None:
    """The step reached by a deferred value inside a GELU pattern (step, x, approximate, erase), else None."""
    v = imp.values[name]
    return v.info.get("gelu") if v.deferred is not None else None


def _defer_gelu(imp: Importer, node: onnx.NodeProto, stage: dict, step: str) -> list[Value]:
    if imp.uses[node.output[0]] != 1:
        raise Unmappable(f"{node.op_type} is read more than once (not a step of a GELU)")
    info = {"gelu": {**stage, "step": step}, "reason": f"{node.op_type} that is not a step of a GELU"}
    return [Value(FLOAT, shape=imp.peek(stage["x"]).shape, deferred=node, info=info)]


def _gelu(imp: Importer, node: onnx.NodeProto, stage: dict) -> list[Value]:
    for name in stage["erase"]:
        imp.graph.erase(name)
    attrs = {"approximate": "tanh"} if stage["approximate"] == "tanh" else {}
    return [imp.out(imp.add("GELU", [imp.runtime(stage["x"]).ref], base_name(node), attrs))]


def _steps(imp: Importer, node: onnx.NodeProto):
    """(stage, other input) for each input of a binary node that is a deferred GELU step."""
    for i, j in ((0, 1), (1, 0)) if len(node.input) == 2 else ():
        stage = _gelu_stage(imp, node.input[i])
        if stage is not None:
            yield stage, node.input[j]


def div(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """x / sqrt(2) opens an erf GELU; no other division has an IR op."""
    if len(node.input) == 2 and not imp.values[node.input[0]].is_const and _near(_scalar(imp, node.input[1]), math.sqrt(2)):
        return _defer_gelu(imp, node, {"x": node.input[0], "approximate": "none", "erase": []}, "div")
    raise Unmappable("Div other than the x / sqrt(2) of a GELU")


def pow_(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """x³ opens a tanh GELU; no other power has an IR op."""
    if len(node.input) == 2 and not imp.values[node.input[0]].is_const and _scalar(imp, node.input[1]) == 3.0:
        return _defer_gelu(imp, node, {"x": node.input[0], "approximate": "tanh", "erase": []}, "cube")
    raise Unmappable("Pow other than the x³ of a GELU")


def erf(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    stage = _gelu_stage(imp, node.input[0])
    if stage is None or stage["step"] != "div":
        raise Unmappable("Erf outside a GELU")
    return _defer_gelu(imp, node, stage, "core")


def tanh(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    stage = _gelu_stage(imp, node.input[0])
    if stage is not None and stage["step"] == "scaled":
        return _defer_gelu(imp, node, stage, "core")
    return _activation("Tanh")(imp, node)


def _gelu_add(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """core + 1 (both forms) and x + 0.044715·x³ (tanh form)."""
    for stage, other in _steps(imp, node):
        if stage["step"] == "core" and _scalar(imp, other) == 1.0:
            return _defer_gelu(imp, node, stage, "plus1")
        if stage["step"] == "kcube" and other == stage["x"]:
            return _defer_gelu(imp, node, stage, "inner")
    return None


def _cube_of(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """x·x and x·(x·x) map as Mul; their values remember x so a tanh GELU can take them over."""
    a, b = node.input[0], node.input[1]
    info = {}
    if a == b:
        info["square_of"] = a
    for sq, x in ((a, b), (b, a)):
        if imp.values[sq].info.get("square_of") == x and imp.uses[sq] == 1:
            info["cube_of"] = (x, parse_ref(imp.values[sq].ref)[0])
    return info


def _gelu_mul(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """The scalar steps of the tanh form and the multiplications closing either form (p = 1 + core):
    (x·p)·0.5, x·(p·0.5) or (0.5·x)·p."""
    for k in (0, 1) if len(node.input) == 2 else ():
        cube = imp.values[node.input[k]].info.get("cube_of")
        if cube and _near(_scalar(imp, node.input[1 - k]), GELU_KAPPA) and imp.uses[node.input[k]] == 1:
            erase = [parse_ref(imp.values[node.input[k]].ref)[0], cube[1]]
            return _defer_gelu(imp, node, {"x": cube[0], "approximate": "tanh", "erase": erase}, "kcube")
    for stage, other in _steps(imp, node):
        step, x = stage["step"], stage["x"]
        half = _scalar(imp, other) == 0.5
        if step == "cube" and _near(_scalar(imp, other), GELU_KAPPA):
            return _defer_gelu(imp, node, stage, "kcube")
        if step == "inner" and _near(_scalar(imp, other), GELU_BETA):
            return _defer_gelu(imp, node, stage, "scaled")
        if step == "plus1" and other == x:
            return _defer_gelu(imp, node, stage, "xmul")
        if step == "plus1" and half:
            return _defer_gelu(imp, node, stage, "half")
        if (step == "xmul" and half) or (step == "half" and other == x):
            return _gelu(imp, node, stage)
        halved = imp.values[other]
        if step == "plus1" and halved.info.get("scalar_of") == (x, 0.5) and imp.uses[other] == 1:
            if not imp.graph.users(halved.info["affine"]):
                return _gelu(imp, node, {**stage, "erase": [*stage["erase"], halved.info["affine"]]})
    return None


def _elementwise(op: str):
    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        if op == "Add":
            fused = _gelu_add(imp, node) or _linear_bias(imp, node) or _affine(imp, node, "Add")
            if fused:
                return fused
        if op == "Mul":
            fused = _gelu_mul(imp, node) or _gated(imp, node) or _scale(imp, node) or _affine(imp, node, "Mul")
            if fused:
                return fused
        if op == "Sub":
            fused = _affine(imp, node, "Sub")
            if fused:
                return fused
            raise Unmappable("Sub of two computed values")
        xs = [imp.runtime(i) for i in node.input]
        if len({len(x.shape) for x in xs}) != 1:
            raise Unmappable("inputs of different ranks (the IR broadcasts equal ranks)")
        if len(xs) == 1:
            return [Value(FLOAT, ref=xs[0].ref, shape=xs[0].shape)]
        info = _cube_of(imp, node) if op == "Mul" and len(xs) == 2 else {}
        return [imp.out(imp.add(op, [x.ref for x in xs], base_name(node)), **info)]

    return mapper


def concat(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    xs = [imp.runtime(i) for i in node.input]
    rank = len(xs[0].shape) + 1
    axis = int(attrs_of(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise Unmappable("concatenation along the batch")
    return [imp.out(imp.add("Concat", [x.ref for x in xs], base_name(node), {"dim": axis}))]


# ---- activations --------------------------------------------------------------------------------


def _activation(op: str, attrs_from=None):
    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        x = first_input(imp, node)
        attrs = attrs_from(attrs_of(node)) if attrs_from else {}
        name = imp.add(op, [x.ref], base_name(node), attrs)
        info = {"gate_of": (op, node.input[0]), "node": name} if op in GATED else {}
        return [imp.out(name, **info)]

    return mapper


def _selu_attrs(a: dict) -> dict:
    if not (
        math.isclose(a.get("alpha", SELU_ALPHA), SELU_ALPHA, rel_tol=1e-6)
        and math.isclose(a.get("gamma", SELU_GAMMA), SELU_GAMMA, rel_tol=1e-6)
    ):
        raise Unmappable("Selu with non-standard alpha/gamma")
    return {}


def _hardsigmoid_attrs(a: dict) -> dict:
    if not (math.isclose(a.get("alpha", 0.2), 1 / 6, rel_tol=1e-6) and math.isclose(a.get("beta", 0.5), 0.5)):
        raise Unmappable("HardSigmoid with alpha other than 1/6 or beta other than 0.5")
    return {}


def _gelu_attrs(a: dict) -> dict:
    return {"approximate": text(a.get("approximate", "none"))}


def clip(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    a = attrs_of(node)
    if imp.opset < 11:
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
    else:
        lo_arr, hi_arr = imp.const_or_none(node, 1), imp.const_or_none(node, 2)
        lo = float(one_value(lo_arr)) if lo_arr is not None else -np.inf
        hi = float(one_value(hi_arr)) if hi_arr is not None else np.inf
    if lo == 0 and hi == 6:
        op = "ReLU6"
    elif lo == 0 and hi == np.inf:
        op = "ReLU"
    else:
        raise Unmappable(f"Clip({lo}, {hi}) is neither ReLU nor ReLU6")
    return [imp.out(imp.add(op, [x.ref], base_name(node)))]


def softmax(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    rank = len(x.shape) + 1
    axis = int(attrs_of(node).get("axis", 1 if imp.opset < 13 else -1))
    axis = axis + rank if axis < 0 else axis
    if imp.opset < 13 and math.prod(x.shape[axis:]) != 1 and axis != rank - 1:
        raise Unmappable("Softmax before opset 13 normalizes over all dimensions from axis on")
    if axis == 0:
        raise Unmappable("Softmax over the batch")
    return [imp.out(imp.add("Softmax", [x.ref], base_name(node), {"dim": axis}))]


def prelu(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    slope = imp.const(node.input[1])
    channels = x.shape[0] if x.shape else 1
    if slope.size == 1:
        n = 1
    elif vector_axis(slope, x.shape) == 1:  # [C, 1, 1] or [1, C, 1, 1], broadcast as ONNX does
        n = channels
    else:
        raise Unmappable(f"slope of shape {list(slope.shape)} is not one value or one per channel")
    return [imp.out(imp.add("PReLU", [x.ref], base_name(node), {"num_parameters": n}, {"weight": slope.reshape(n)}))]


# ---- normalization ------------------------------------------------------------------------------


def batch_norm(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """BatchNormalization; in training mode (the batch's own statistics, updated running ones unused) a BatchNorm
    without running statistics, which normalizes with the batch's statistics as ONNX's training mode does."""
    x = first_input(imp, node)
    a = attrs_of(node)
    if a.get("spatial", 1) != 1 and len(x.shape) > 1:
        raise Unmappable("spatial=0 normalizes every position separately")
    only_first_output(imp, node)
    scale, bias = imp.const(node.input[1]), imp.const(node.input[2])
    op = "BatchNorm2d" if len(x.shape) == 3 else "BatchNorm1d"
    # ONNX keeps float32 attributes and the running average's other side: 0.1, not 0.09999999999999998
    momentum = min(max(round(1.0 - _float32_attr(a.get("momentum", 0.9)), 7), 0.0), 1.0)
    attrs = {"eps": _float32_attr(a.get("epsilon", 1e-5)), "momentum": momentum}
    params = {"weight": scale, "bias": bias}
    if a.get("training_mode", 0):
        attrs["track_running_stats"] = False
    else:
        params.update(running_mean=imp.const(node.input[3]), running_var=imp.const(node.input[4]))
    return [imp.out(imp.add(op, [x.ref], base_name(node), attrs, params))]


def _float32_attr(value: float) -> float:
    """A float read from an ONNX attribute (stored as float32) in its shortest form: 1e-06, not 9.99999997e-07."""
    return float(str(np.float32(value)))


def layer_norm(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """LayerNormalization over the last dimension; a Transpose around it is folded by `layout`."""
    x = first_input(imp, node)
    a = attrs_of(node)
    rank = len(x.shape) + 1
    if int(a.get("axis", -1)) % rank != rank - 1:
        raise Unmappable("LayerNormalization over more than the last dimension")
    only_first_output(imp, node)
    c = x.shape[-1]
    scale, bias = imp.const(node.input[1]), imp.const_or_none(node, 2)
    if scale.size != c or (bias is not None and bias.size != c):
        raise Unmappable(f"scale or bias is not one value per entry of the last dimension ({c})")
    eps = _float32_attr(a.get("epsilon", 1e-5))
    attrs = {"channels_last": True} if eps == 1e-5 else {"eps": eps, "channels_last": True}
    stored = {t.name for t in imp.model.graph.initializer} & set(node.input[1:])
    # no affine parameters: ones and no bias (ours, torch's dynamo), or ones and zeros that are not stored weights (torch's legacy)
    if np.all(scale == 1) and (bias is None or (not stored and not bias.any())):
        attrs["elementwise_affine"] = False
        params = {}
    else:
        params = {"weight": scale.reshape(c), "bias": np.zeros(c, np.float32) if bias is None else bias.reshape(c)}
    name = imp.add("LayerNorm", [x.ref], base_name(node), attrs, params)
    info = {"layer_norm": name, "source": node.output[0]}
    if "permute" in x.info:
        info["after_permute"] = (x.info["permute"], x.info["source"])
    return [imp.out(name, **info)]


def lrn(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    a = attrs_of(node)
    attrs = {
        "size": int(a["size"]),
        "alpha": float(a.get("alpha", 1e-4)),
        "beta": float(a.get("beta", 0.75)),
        "k": float(a.get("bias", 1.0)),
    }
    return [imp.out(imp.add("LRN", [x.ref], base_name(node), attrs))]


# ---- pooling ------------------------------------------------------------------------------------


def _check_onnx_shape(imp: Importer, node: onnx.NodeProto, x: Value, out: Value) -> None:
    """Compare with ONNX's own output shape (pooling ceil rules differ between versions)."""
    b = imp.batches[0]
    src = [((b, *x.shape), FLOAT)] + [imp.const(i) if i else None for i in node.input[1:]]
    (shape, _), *_ = output_types(node, src, imp.opsets)
    if tuple(shape[1:]) != out.shape:
        raise Unmappable(f"ONNX gives output {list(shape[1:])}, the IR op {list(out.shape)}")


def _pool(op: str):
    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        a = attrs_of(node)
        count_include_pad = bool(a.get("count_include_pad", 0))
        if op == "AvgPool2d" and count_include_pad:
            x, extra = _absorbed_pad(imp, node.input[0])
        else:
            x, extra = first_input(imp, node), (0, 0, 0, 0)
        if len(x.shape) != 3:
            raise Unmappable("only 2-d pooling maps")
        only_first_output(imp, node)
        if a.get("storage_order", 0):
            raise Unmappable("storage_order=1")
        kernel = pair(a["kernel_shape"], "kernel_shape")
        strides = pair(a.get("strides", [1, 1]), "strides")
        dilations = pair(a.get("dilations", [1, 1]), "dilations")
        if op == "AvgPool2d" and dilations != (1, 1):
            raise Unmappable("dilated average pooling")
        ceil_mode = bool(a.get("ceil_mode", 0))
        try:
            padding = _pads(a, x.shape[1:], kernel, strides, dilations, extra)
        except Unmappable:
            # extra end padding that only completes the last window is ceil mode (not for zero-counting averages)
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
            if ceil_mode or extra != (0, 0, 0, 0) or count_include_pad or len(pads) != 4 or pads[2] < pads[0] or pads[3] < pads[1]:
                raise
            padding, ceil_mode = (pads[0], pads[1]), True
        attrs = {"kernel_size": list(kernel), "stride": list(strides), "padding": list(padding), "ceil_mode": ceil_mode}
        if op == "MaxPool2d":
            attrs["dilation"] = list(dilations)
        else:
            attrs["count_include_pad"] = count_include_pad or extra != (0, 0, 0, 0)
        out = imp.out(imp.add(op, [x.ref], base_name(node), attrs))
        if attrs["ceil_mode"] and extra == (0, 0, 0, 0):
            _check_onnx_shape(imp, node, x, out)
        return [out]

    return mapper


def _global(op: str):
    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        x = first_input(imp, node, 3)
        return [imp.out(imp.add(op, [x.ref], base_name(node)))]

    return mapper


def _reduce_spatial(op: str, since: int):
    """ReduceMean/ReduceMax over H and W: a global pool (then a flatten when keepdims=0); a ReduceMean stays a mean."""

    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        x = first_input(imp, node, 3)
        a = attrs_of(node)
        if imp.opset >= since:
            given = imp.const_or_none(node, 1)
            axes = [] if given is None else [int(v) for v in given]
        else:
            axes = [int(v) for v in a.get("axes", [])]
        if sorted(ax % 4 for ax in axes) != [2, 3]:
            raise Unmappable(f"reduction over axes {axes}, not H and W")
        pooled = imp.add(op, [x.ref], base_name(node), {"mean": True} if op == "GlobalAvgPool" else None)
        if a.get("keepdims", 1):
            return [imp.out(pooled)]
        return [imp.out(imp.add("Flatten", [pooled], f"{base_name(node)}_flatten"))]

    return mapper


def _resize_sizes(imp: Importer, node: onnx.NodeProto) -> np.ndarray | None:
    """Resize's `sizes`; sizes built from the input's shape (F.interpolate(size=x.shape[-2:])) lead with the batch size."""
    if len(node.input) < 4 or not node.input[3]:
        return None
    v = imp.value(node.input[3])
    if not v.is_const or len(v.consts) == 1:
        return imp.const(node.input[3])
    rows = [np.asarray(c).reshape(-1) for c in v.consts]
    if not all(len(r) == 4 and r[0] == b and np.array_equal(r[1:], rows[0][1:]) for r, b in zip(rows, imp.batches)):
        raise Unmappable(f"sizes '{node.input[3]}' depend on the batch size other than as their first entry")
    return rows[0]


def resize(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    a = attrs_of(node)
    strings = {k: text(v) for k, v in a.items()}
    mode = strings.get("mode", "nearest")
    if node.op_type == "Upsample" or imp.opset < 11:
        scales = a.get("scales") if "scales" in a else imp.const(node.input[1])
        sizes = None
        transform = "asymmetric"
        nearest = "floor"
    else:
        scales = imp.const_or_none(node, 2)
        sizes = _resize_sizes(imp, node)
        transform = strings.get("coordinate_transformation_mode", "half_pixel")
        nearest = strings.get("nearest_mode", "round_prefer_floor")
        if a.get("antialias", 0) or "axes" in a or strings.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise Unmappable("antialias, axes or keep_aspect_ratio_policy")
    attrs: dict = {}
    if sizes is not None and np.size(sizes) > 0:
        sizes = [int(s) for s in sizes]
        if len(sizes) != 4 or tuple(sizes[1:2]) != x.shape[:1]:
            raise Unmappable(f"sizes {sizes} resize more than H and W")
        attrs["size"] = sizes[2:]
        scale_hw = (sizes[2] / x.shape[1], sizes[3] / x.shape[2])
    elif scales is not None and np.size(scales) > 0:
        scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        if len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
            raise Unmappable(f"scales {scales} resize more than H and W")
        attrs["scale_factor"] = scales[2:]
        scale_hw = tuple(scales[2:])
    else:
        raise Unmappable("neither scales nor sizes")
    if mode == "nearest":
        integer = all(float(s).is_integer() for s in scale_hw)
        if not (transform == "asymmetric" and (nearest == "floor" or integer)):
            raise Unmappable(f"nearest with {transform}/{nearest} rounding differs from PyTorch's")
        attrs["mode"] = "nearest"
    elif mode in ("linear", "bilinear"):
        if node.op_type == "Upsample" or imp.opset < 11:
            raise Unmappable("linear Upsample uses asymmetric coordinates")
        if transform == "align_corners":
            attrs["align_corners"] = True
        elif transform not in ("half_pixel", "pytorch_half_pixel"):
            raise Unmappable(f"linear with {transform} coordinates")
        attrs["mode"] = "bilinear"
    else:
        raise Unmappable(f"mode {mode}")
    out = imp.out(imp.add("Upsample", [x.ref], base_name(node), attrs))
    if "scale_factor" in attrs:
        _check_onnx_shape(imp, node, x, out)
    return [out]


# ---- structure ----------------------------------------------------------------------------------


def identity(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    v = imp.peek(node.input[0])
    if v.deferred is not None:
        # an Identity inside a pattern (the contiguous() of a channel shuffle) keeps the pattern open
        return [Value(v.elem, shape=v.shape, deferred=v.deferred, info={**v.info, "alias_of": node.input[0]})]
    v = imp.runtime(node.input[0], float_only=False)
    return [Value(v.elem, ref=v.ref, shape=v.shape)]


def cast(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    if attrs_of(node)["to"] != FLOAT:
        raise Unmappable("Cast to a type other than float32")
    return [Value(FLOAT, ref=x.ref, shape=x.shape)]


def dropout(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """Dropout(p), in training mode too (a training export of the layer): the design's Dropout drops in training as the file does."""
    x = first_input(imp, node)
    only_first_output(imp, node)
    a = attrs_of(node)
    ratio = imp.const_or_none(node, 1)
    p = float(one_value(ratio)) if ratio is not None else float(a.get("ratio", 0.5))
    return [imp.out(imp.add("Dropout", [x.ref], base_name(node), {"p": _float32_attr(p)}))]


MAPPERS = {
    **LAYOUT_MAPPERS,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "DeformConv": deform_conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": _elementwise("Add"),
    "Mul": _elementwise("Mul"),
    "Sum": _elementwise("Add"),
    "Sub": _elementwise("Sub"),
    "Concat": concat,
    "Relu": _activation("ReLU"),
    "LeakyRelu": _activation("LeakyReLU", lambda a: {"negative_slope": float(a.get("alpha", 0.01))}),
    "Elu": _activation("ELU", lambda a: {"alpha": float(a.get("alpha", 1.0))}),
    "Selu": _activation("SELU", _selu_attrs),
    "Sigmoid": _activation("Sigmoid"),
    "Tanh": tanh,
    "HardSwish": _activation("Hardswish"),
    "HardSigmoid": _activation("Hardsigmoid", _hardsigmoid_attrs),
    "Gelu": _activation("GELU", _gelu_attrs),
    "Clip": clip,
    "Softmax": softmax,
    "PRelu": prelu,
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "Div": div,
    "Erf": erf,
    "Pow": pow_,
    "LRN": lrn,
    "MaxPool": _pool("MaxPool2d"),
    "AveragePool": _pool("AvgPool2d"),
    "GlobalAveragePool": _global("GlobalAvgPool"),
    "GlobalMaxPool": _global("GlobalMaxPool"),
    "ReduceMean": _reduce_spatial("GlobalAvgPool", 18),
    "ReduceMax": _reduce_spatial("GlobalMaxPool", 18),
    "Resize": resize,
    "Upsample": resize,
    "Identity": identity,
    "Cast": cast,
    "Dropout": dropout,
}
