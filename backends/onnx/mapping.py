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
from convstudio.backends.onnx.importer import FLOAT, Importer, Unmappable, Value, base_name
from convstudio.backends.onnx.layout import LAYOUT_MAPPERS
from convstudio.backends.onnx.map_common import first_input, only_first_output, pair, text
from convstudio.backends.onnx.opaque import output_types
from convstudio.backends.onnx.ops import SELU_ALPHA, SELU_GAMMA


def _pads(a: dict, in_hw, kernel, strides, dilations, extra=(0, 0, 0, 0)) -> tuple[int, int]:
    """Symmetric (pad_h, pad_w) from ONNX pads/auto_pad plus an absorbed Pad; else Unmappable."""
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
    t, l_, b, r = (pads[0] + extra[0], pads[1] + extra[1], pads[2] + extra[2], pads[3] + extra[3])
    if t != b or l_ != r:
        raise Unmappable(f"asymmetric padding (top {t}, bottom {b}, left {l_}, right {r}) has no IR form")
    return t, l_


def _stored_bias(imp: Importer, node: onnx.NodeProto, index: int) -> np.ndarray | None:
    """The bias input, or None when absent or zeros the exporter computed (no parameter in the source)."""
    bias = imp.const_or_none(node, index)
    if bias is not None and imp.values[node.input[index]].info.get("computed") and not bias.any():
        return None
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
    bias = _stored_bias(imp, node, 2)
    a = attrs_of(node)
    kernel = pair(a.get("kernel_shape", w.shape[2:]), "kernel_shape")
    if kernel != tuple(w.shape[2:]):
        raise Unmappable(f"kernel_shape {list(kernel)} differs from the weight's {list(w.shape[2:])}")
    strides = pair(a.get("strides", [1, 1]), "strides")
    dilations = pair(a.get("dilations", [1, 1]), "dilations")
    padding = _pads(a, x.shape[1:], kernel, strides, dilations, extra)
    attrs = {
        "out_channels": int(w.shape[0]),
        "kernel_size": list(kernel),
        "stride": list(strides),
        "padding": list(padding),
        "dilation": list(dilations),
        "groups": int(a.get("group", 1)),
        "bias": bias is not None,
    }
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias.reshape(-1)}
    return [imp.out(imp.add("Conv2d", [x.ref], base_name(node), attrs, params))]


def conv_transpose(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    w = imp.const(node.input[1])
    if w.ndim != 4:
        raise Unmappable("only 2-d transposed convolutions map")
    bias = _stored_bias(imp, node, 2)
    a = attrs_of(node)
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
    bias = imp.const_or_none(node, 3)
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
        params["bias"] = _bias_vector(c, weight.shape[0]) * np.float32(beta)
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
        return [Value(FLOAT, ref=lin.ref, shape=lin.shape)]
    return None


def _silu(imp: Importer, node: onnx.NodeProto) -> list[Value] | None:
    """Mul(x, Sigmoid(x)) -> SiLU(x) when the Sigmoid feeds nothing else."""
    if len(node.input) != 2:
        return None
    for s_in, x_in in ((0, 1), (1, 0)):
        s = imp.values[node.input[s_in]]
        if s.is_const or s.info.get("sigmoid_of") != node.input[x_in] or imp.uses[node.input[s_in]] != 1:
            continue
        x = imp.runtime(node.input[x_in])
        imp.graph.erase(s.info["node"])
        return [imp.out(imp.add("SiLU", [x.ref], base_name(node)))]
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


def _affine(imp: Importer, node: onnx.NodeProto, op: str) -> list[Value] | None:
    """x·s and x + b with per-channel constants: a BatchNorm with identity statistics (eps 0), which is exact.

    An Add right after such a Mul (its only consumer) becomes that BatchNorm's bias.
    """
    if len(node.input) != 2:
        return None
    values = [imp.values[i] for i in node.input]
    if sum(v.is_const for v in values) != 1:
        return None
    k = 0 if values[1].is_const else 1
    x = imp.runtime(node.input[k])
    c = imp.const(node.input[1 - k])
    if op == "Sub" and k == 1:
        return None
    vector = _per_channel(c, x)
    if vector is None or len(x.shape) not in (1, 2, 3):
        return None
    if op == "Sub":
        vector = -vector
    previous = x.info.get("affine")
    if op != "Mul" and previous and imp.uses[x.info["source"]] == 1:
        bn = imp.graph.nodes[previous]
        bn.params["bias"] = (bn.params["bias"] + vector).astype(np.float32)
        return [Value(FLOAT, ref=x.ref, shape=x.shape)]
    channels = len(vector)
    scale = vector if op == "Mul" else np.ones(channels, np.float32)
    shift = vector if op != "Mul" else np.zeros(channels, np.float32)
    params = {"weight": scale, "bias": shift, "running_mean": np.zeros(channels, np.float32), "running_var": np.ones(channels, np.float32)}
    bn_op = "BatchNorm2d" if len(x.shape) == 3 else "BatchNorm1d"
    name = imp.add(bn_op, [x.ref], base_name(node), {"eps": 0.0}, params)
    return [imp.out(name, affine=name, source=node.output[0])]


def _elementwise(op: str):
    def mapper(imp: Importer, node: onnx.NodeProto) -> list[Value]:
        if op == "Add":
            fused = _linear_bias(imp, node) or _affine(imp, node, "Add")
            if fused:
                return fused
        if op == "Mul":
            fused = _silu(imp, node) or _affine(imp, node, "Mul")
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
        return [imp.out(imp.add(op, [x.ref for x in xs], base_name(node)))]

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
        info = {"sigmoid_of": node.input[0], "node": name} if op == "Sigmoid" else {}
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
        lo = float(lo_arr) if lo_arr is not None else -np.inf
        hi = float(hi_arr) if hi_arr is not None else np.inf
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
    elif slope.size == channels and slope.shape[0] == channels and len(slope.shape) <= len(x.shape):
        n = channels
    else:
        raise Unmappable(f"slope of shape {list(slope.shape)} is not one value or one per channel")
    return [imp.out(imp.add("PReLU", [x.ref], base_name(node), {"num_parameters": n}, {"weight": slope.reshape(n)}))]


# ---- normalization ------------------------------------------------------------------------------


def batch_norm(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    a = attrs_of(node)
    if a.get("spatial", 1) != 1 and len(x.shape) > 1:
        raise Unmappable("spatial=0 normalizes every position separately")
    if a.get("training_mode", 0):
        raise Unmappable("training_mode=1")
    only_first_output(imp, node)
    scale, bias, mean, var = (imp.const(node.input[k]) for k in range(1, 5))
    op = "BatchNorm2d" if len(x.shape) == 3 else "BatchNorm1d"
    momentum = min(max(1.0 - float(a.get("momentum", 0.9)), 0.0), 1.0)
    attrs = {"eps": float(a.get("epsilon", 1e-5)), "momentum": momentum}
    params = {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var}
    return [imp.out(imp.add(op, [x.ref], base_name(node), attrs, params))]


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
    """ReduceMean/ReduceMax over H and W: a global pool (then a flatten when keepdims=0)."""

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
        pooled = imp.add(op, [x.ref], base_name(node))
        if a.get("keepdims", 1):
            return [imp.out(pooled)]
        return [imp.out(imp.add("Flatten", [pooled], f"{base_name(node)}_flatten"))]

    return mapper


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
        sizes = imp.const_or_none(node, 3)
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
    x = first_input(imp, node)
    only_first_output(imp, node)
    a = attrs_of(node)
    ratio = imp.const_or_none(node, 1)
    p = float(ratio) if ratio is not None else float(a.get("ratio", 0.5))
    training = imp.const_or_none(node, 2)
    if training is not None and bool(training):
        raise Unmappable("training_mode is on")
    return [imp.out(imp.add("Dropout", [x.ref], base_name(node), {"p": p}))]


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
    "Tanh": _activation("Tanh"),
    "HardSwish": _activation("Hardswish"),
    "HardSigmoid": _activation("Hardsigmoid", _hardsigmoid_attrs),
    "Gelu": _activation("GELU", _gelu_attrs),
    "Clip": clip,
    "Softmax": softmax,
    "PRelu": prelu,
    "BatchNormalization": batch_norm,
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
