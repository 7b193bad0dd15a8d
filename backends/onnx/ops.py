"""How each IR op becomes ONNX nodes: one table entry per op name, keyed like the IR registry.

An entry has `emit(e, site)`, which appends nodes through the emitter `e` (backends/onnx/emitter.py),
and `min_opset(attrs, in_shapes)`, the oldest opset its emitted form needs. Emitters read the
exporter's opset (`e.opset`) where the ONNX spelling of an op changed between opsets.
Value k of node X is named ``X`` (k = 0) or ``X:k``; helper values and nodes are ``X/<what>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convstudio.ir.ops import registry
from convstudio.ir.ops.activation import FUSED_ACTIVATIONS
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.ops.pool import pool_out_size, pool_stride
from convstudio.ir.passes.fuse import ACTIVATION_PARAM

if TYPE_CHECKING:
    from convstudio.backends.onnx.emitter import Emitter, Site

FLOOR_OPSET = 11  # the oldest opset this exporter writes (Clip bounds as inputs, Resize coordinate modes)
SELU_ALPHA = 1.6732632423543772
SELU_GAMMA = 1.0507009873554805

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Lowering:
    """ONNX lowering of one IR op."""

    emit: Callable[["Emitter", "Site"], None]
    min_opset: Callable[[dict, list[Shape]], int] = lambda a, ins: FLOOR_OPSET


def _at_least(n: int) -> Callable[[dict, list[Shape]], int]:
    return lambda a, ins: n


def _pair(v) -> list[int]:
    return [int(v[0]), int(v[1])]


def _scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


# ---- activations ----------------------------------------------------------------------------------
# Each takes (emitter, owner node name, resolved attrs, input value, output value).


def _unary(op_type: str) -> Callable:
    def emit(e, owner, a, x, y):
        e.node(op_type, [x], [y], owner)

    return emit


def _leaky(e, owner, a, x, y):
    e.node("LeakyRelu", [x], [y], owner, alpha=float(a["negative_slope"]))


def _elu(e, owner, a, x, y):
    e.node("Elu", [x], [y], owner, alpha=float(a["alpha"]))


def _rrelu(e, owner, a, x, y):
    e.node("LeakyRelu", [x], [y], owner, alpha=(float(a["lower"]) + float(a["upper"])) / 2)


def _relu6(e, owner, a, x, y):
    lo = e.const(owner, "min", _scalar(0.0))
    hi = e.const(owner, "max", _scalar(6.0))
    e.node("Clip", [x, lo, hi], [y], owner)


def _silu(e, owner, a, x, y):
    s = e.node("Sigmoid", [x], [e.tmp(owner, "sigmoid")], owner + "/sigmoid")
    e.node("Mul", [x, s], [y], owner)


def _hardsigmoid(e, owner, a, x, y):
    e.node("HardSigmoid", [x], [y], owner, alpha=1.0 / 6, beta=0.5)


def _hardswish(e, owner, a, x, y):
    if e.opset >= 14:
        e.node("HardSwish", [x], [y], owner)
        return
    s = e.tmp(owner, "hardsigmoid")
    _hardsigmoid(e, owner + "/hardsigmoid", a, x, s)
    e.node("Mul", [x, s], [y], owner)


def _selu(e, owner, a, x, y):
    e.node("Selu", [x], [y], owner, alpha=SELU_ALPHA, gamma=SELU_GAMMA)


def _gelu(e, owner, a, x, y):
    if e.opset >= 20:
        e.node("Gelu", [x], [y], owner, approximate=a["approximate"])
        return
    half, one = e.const(owner, "half", _scalar(0.5)), e.const(owner, "one", _scalar(1.0))
    if a["approximate"] == "tanh":
        # 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x³)))
        x2 = e.node("Mul", [x, x], [e.tmp(owner, "x2")], owner + "/x2")
        x3 = e.node("Mul", [x2, x], [e.tmp(owner, "x3")], owner + "/x3")
        cubic = e.node("Mul", [x3, e.const(owner, "coef", _scalar(0.044715))], [e.tmp(owner, "cubic")], owner + "/cubic")
        inner = e.node("Add", [x, cubic], [e.tmp(owner, "inner")], owner + "/inner")
        scaled = e.node("Mul", [inner, e.const(owner, "k", _scalar(math.sqrt(2 / math.pi)))], [e.tmp(owner, "scaled")], owner + "/scaled")
        core = e.node("Tanh", [scaled], [e.tmp(owner, "tanh")], owner + "/tanh")
    else:
        # 0.5·x·(1 + erf(x / sqrt(2)))
        div = e.node("Div", [x, e.const(owner, "sqrt2", _scalar(math.sqrt(2)))], [e.tmp(owner, "div")], owner + "/div")
        core = e.node("Erf", [div], [e.tmp(owner, "erf")], owner + "/erf")
    plus = e.node("Add", [core, one], [e.tmp(owner, "plus1")], owner + "/plus1")
    prod = e.node("Mul", [x, plus], [e.tmp(owner, "xmul")], owner + "/xmul")
    e.node("Mul", [prod, half], [y], owner)


def _softmax(e, owner, a, x, y):
    e.node("Softmax", [x], [y], owner, axis=int(a["dim"]))


ACTIVATIONS: dict[str, Callable] = {
    "ReLU": _unary("Relu"),
    "ReLU6": _relu6,
    "LeakyReLU": _leaky,
    "ELU": _elu,
    "RReLU": _rrelu,
    "SELU": _selu,
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "SiLU": _silu,
    "GELU": _gelu,
    "Hardswish": _hardswish,
    "Hardsigmoid": _hardsigmoid,
    "Softmax": _softmax,
}


def _activation_entry(op: str) -> Lowering:
    def emit(e, s):
        ACTIVATIONS[op](e, s.node.name, s.a, s.ins[0], s.outs[0])

    return Lowering(emit)


def _softmax_min(a: dict, ins: list[Shape]) -> int:
    rank = len(ins[0]) + 1
    # Before opset 13 Softmax flattens from `axis` on: the same only when axis is the last one.
    return FLOOR_OPSET if a["dim"] % rank == rank - 1 else 13


def fused_target(e, s) -> str:
    """Where the main op writes: the node output, or a helper value when an activation follows."""
    return s.outs[0] if s.a.get("activation", "none") == "none" else e.tmp(s.node.name, "preact")


def emit_fused_activation(e, s, pre: str) -> None:
    """Apply the node's fused `activation` attribute as a standard op after the main one."""
    act = s.a.get("activation", "none")
    if act == "none":
        return
    op = FUSED_ACTIVATIONS[act]
    attrs = {ACTIVATION_PARAM[op]: s.a["activation_param"]} if op in ACTIVATION_PARAM else {}
    ACTIVATIONS[op](e, s.node.name + "/" + act, registry.get(op).resolve(attrs), pre, s.outs[0])


# ---- convolution and linear -----------------------------------------------------------------------


def _weights(e, s) -> list[str]:
    names = [e.param(s.node, "weight")]
    if s.a["bias"]:
        names.append(e.param(s.node, "bias"))
    return names


def _conv(e, s):
    a = s.a
    (pt, pb), (pl, pr) = conv_pads(a)
    y = fused_target(e, s)
    e.node(
        "Conv", [s.ins[0], *_weights(e, s)], [y], s.node.name,
        kernel_shape=_pair(a["kernel_size"]), strides=_pair(a["stride"]), pads=[pt, pl, pb, pr],
        dilations=_pair(a["dilation"]), group=int(a["groups"]),
    )
    emit_fused_activation(e, s, y)


def _conv_transpose(e, s):
    a = s.a
    ph, pw = a["padding"]
    y = fused_target(e, s)
    e.node(
        "ConvTranspose", [s.ins[0], *_weights(e, s)], [y], s.node.name,
        kernel_shape=_pair(a["kernel_size"]), strides=_pair(a["stride"]), pads=[ph, pw, ph, pw],
        dilations=_pair(a["dilation"]), group=int(a["groups"]), output_padding=_pair(a["output_padding"]),
    )
    emit_fused_activation(e, s, y)


def _deform_conv(e, s):
    a = s.a
    ph, pw = a["padding"]
    inputs = [s.ins[0], e.param(s.node, "weight"), s.ins[1], e.param(s.node, "bias") if a["bias"] else ""]
    if len(s.ins) > 2:
        inputs.append(s.ins[2])
    while inputs[-1] == "":
        inputs.pop()
    e.node(
        "DeformConv", inputs, [s.outs[0]], s.node.name,
        kernel_shape=_pair(a["kernel_size"]), strides=_pair(a["stride"]), pads=[ph, pw, ph, pw],
        dilations=_pair(a["dilation"]), group=int(a["groups"]), offset_group=int(a["offset_groups"]),
    )


def _linear(e, s):
    y = fused_target(e, s)
    name = s.node.name
    if len(s.in_shapes[0]) == 1:
        e.node("Gemm", [s.ins[0], *_weights(e, s)], [y], name, transB=1)
    else:
        wt = e.node("Transpose", [e.param(s.node, "weight")], [e.tmp(name, "weight_t")], name + "/weight_t", perm=[1, 0])
        if s.a["bias"]:
            mm = e.node("MatMul", [s.ins[0], wt], [e.tmp(name, "matmul")], name + "/matmul")
            e.node("Add", [mm, e.param(s.node, "bias")], [y], name)
        else:
            e.node("MatMul", [s.ins[0], wt], [y], name)
    emit_fused_activation(e, s, y)


# ---- normalization --------------------------------------------------------------------------------


def _reduce_mean(e, name: str, x: str, axes: list[int], label: str) -> str:
    out = e.tmp(name, label)
    if e.opset >= 18:
        axes_value = e.const(name, label + "_axes", np.array(axes, dtype=np.int64))
        return e.node("ReduceMean", [x, axes_value], [out], f"{name}/{label}", keepdims=1)
    return e.node("ReduceMean", [x], [out], f"{name}/{label}", axes=axes, keepdims=1)


def _batchnorm(e, s):
    a, node, name = s.a, s.node, s.node.name
    c = s.in_shapes[0][0]
    rank = len(s.in_shapes[0]) + 1
    if a["affine"]:
        scale, shift = e.param(node, "weight"), e.param(node, "bias")
    else:
        scale = e.const(name, "scale", np.ones(c, np.float32))
        shift = e.const(name, "shift", np.zeros(c, np.float32))
    eps = float(a["eps"])
    if a["track_running_stats"]:
        e.node("BatchNormalization", [s.ins[0], scale, shift, e.param(node, "running_mean"), e.param(node, "running_var")],
               [s.outs[0]], name, epsilon=eps)
        return
    # Without running statistics PyTorch normalizes with the batch's own (biased) statistics.
    x = s.ins[0]
    axes = [0, *range(2, rank)]
    per_channel = [c] + [1] * (rank - 2)
    mean = _reduce_mean(e, name, x, axes, "mean")
    centered = e.node("Sub", [x, mean], [e.tmp(name, "centered")], name + "/centered")
    sq = e.node("Mul", [centered, centered], [e.tmp(name, "sq")], name + "/sq")
    var = _reduce_mean(e, name, sq, axes, "var")
    var_eps = e.node("Add", [var, e.const(name, "eps", _scalar(eps))], [e.tmp(name, "var_eps")], name + "/var_eps")
    std = e.node("Sqrt", [var_eps], [e.tmp(name, "std")], name + "/std")
    normed = e.node("Div", [centered, std], [e.tmp(name, "normed")], name + "/normed")
    shape = e.const(name, "channel_shape", np.array(per_channel, dtype=np.int64))
    scale_r = e.node("Reshape", [scale, shape], [e.tmp(name, "scale_r")], name + "/scale_r")
    shift_r = e.node("Reshape", [shift, shape], [e.tmp(name, "shift_r")], name + "/shift_r")
    scaled = e.node("Mul", [normed, scale_r], [e.tmp(name, "scaled")], name + "/scaled")
    e.node("Add", [scaled, shift_r], [s.outs[0]], name)


def channels_last_perm(rank: int) -> list[int]:
    """Transpose order moving the channels (dim 1) last: [0, 2, 3, 1] for NCHW."""
    return [0, *range(2, rank), 1]


def channels_first_perm(rank: int) -> list[int]:
    """The inverse of `channels_last_perm`: [0, 3, 1, 2] for NHWC."""
    return [0, rank - 1, *range(1, rank - 1)]


def _layer_norm(e, s):
    a, node, name = s.a, s.node, s.node.name
    rank = len(s.in_shapes[0]) + 1
    c = s.in_shapes[0][-1 if a["channels_last"] else 0]
    if a["elementwise_affine"]:
        affine = [e.param(node, "weight"), e.param(node, "bias")]
    else:
        affine = [e.const(name, "scale", np.ones(c, np.float32))]
    # channels-first over more than one channel axis position: normalize channels-last between two transposes
    around = not a["channels_last"] and rank > 2
    x = s.ins[0]
    if around:
        x = e.node("Transpose", [x], [e.tmp(name, "channels_last")], name + "/channels_last", perm=channels_last_perm(rank))
    y = e.tmp(name, "normalized") if around else s.outs[0]
    e.node("LayerNormalization", [x, *affine], [y], name, axis=-1, epsilon=float(a["eps"]))
    if around:
        e.node("Transpose", [y], [s.outs[0]], name + "/channels_first", perm=channels_first_perm(rank))


def _lrn(e, s):
    a, name = s.a, s.node.name
    attrs = {"size": int(a["size"]), "alpha": float(a["alpha"]), "beta": float(a["beta"]), "bias": float(a["k"])}
    if a["size"] % 2:
        e.node("LRN", [s.ins[0]], [s.outs[0]], name, **attrs)
        return
    # onnxruntime runs odd sizes only: spell out PyTorch's even-size window (one channel more before
    # than after) as an average pool over the squared channels.
    c, h, w = s.in_shapes[0]
    size = int(a["size"])
    sq = e.node("Mul", [s.ins[0], s.ins[0]], [e.tmp(name, "sq")], name + "/sq")
    stacked_shape = e.const(name, "stacked_shape", np.array([0, 1, c, h * w], np.int64))
    stacked = e.node("Reshape", [sq, stacked_shape], [e.tmp(name, "stacked")], name + "/stack")
    avg = e.node("AveragePool", [stacked], [e.tmp(name, "avg")], name + "/avg", kernel_shape=[size, 1],
                 pads=[size // 2, 0, (size - 1) // 2, 0], count_include_pad=1)
    mean = e.node("Reshape", [avg, e.const(name, "shape", np.array([0, c, h, w], np.int64))], [e.tmp(name, "mean_sq")], name + "/unstack")
    scaled = e.node("Mul", [mean, e.const(name, "alpha", _scalar(a["alpha"]))], [e.tmp(name, "scaled")], name + "/scaled")
    biased = e.node("Add", [scaled, e.const(name, "k", _scalar(a["k"]))], [e.tmp(name, "biased")], name + "/biased")
    denom = e.node("Pow", [biased, e.const(name, "beta", _scalar(a["beta"]))], [e.tmp(name, "denom")], name + "/denom")
    e.node("Div", [s.ins[0], denom], [s.outs[0]], name)


# ---- pooling and resampling -----------------------------------------------------------------------


# Pooling never uses ONNX's ceil_mode: its output size rule and its average divisor differ from
# PyTorch's when the last window starts in the padding. Ceil mode becomes explicit end padding that
# gives PyTorch's output size in floor mode.


def _end_pads(a: dict, sizes, begin, dilation=(1, 1), padded=None) -> list[int]:
    """End padding per spatial axis so that floor-mode pooling yields PyTorch's output size.

    `padded` gives the sizes actually pooled when the input was padded beforehand.
    """
    out = []
    for axis, (size, k, st, p, d) in enumerate(zip(sizes, a["kernel_size"], pool_stride(a), a["padding"], dilation)):
        target = pool_out_size(size, k, st, p, d, a["ceil_mode"])
        pooled = padded[axis] if padded else size
        out.append(max(begin[axis], (target - 1) * st + d * (k - 1) + 1 - pooled - begin[axis]))
    return out


def _pad(e, name: str, x: str, begin: list[int], end: list[int], value: float, label: str) -> str:
    pads = e.const(name, label + "_pads", np.array([0, 0, *begin, 0, 0, *end], np.int64))
    fill = e.const(name, label + "_value", _scalar(value))
    return e.node("Pad", [x, pads, fill], [e.tmp(name, label)], f"{name}/{label}", mode="constant")


def _maxpool(e, s):
    a, name, x = s.a, s.node.name, s.ins[0]
    (ph, pw), dilation = a["padding"], a["dilation"]
    end = _end_pads(a, s.in_shapes[0][1:], (ph, pw), dilation)
    kernel = _pair(a["kernel_size"])
    if any(p >= k for p, k in zip(end, kernel)):
        # onnxruntime wants pads smaller than the kernel: pad the extra part beforehand with -inf.
        x = _pad(e, name, x, [0, 0], [p - b for p, b in zip(end, (ph, pw))], -np.inf, "ceil_pad")
        end = [ph, pw]
    e.node("MaxPool", [x], [s.outs[0]], name, kernel_shape=kernel, strides=_pair(pool_stride(a)), pads=[ph, pw, *end],
           dilations=_pair(dilation))


def _avgpool(e, s):
    a, name, x = s.a, s.node.name, s.ins[0]
    (ph, pw), sizes = a["padding"], s.in_shapes[0][1:]
    attrs = {"kernel_shape": _pair(a["kernel_size"]), "strides": _pair(pool_stride(a))}
    if not a["ceil_mode"]:
        e.node("AveragePool", [x], [s.outs[0]], name, **attrs, pads=[ph, pw, ph, pw], count_include_pad=int(a["count_include_pad"]))
        return
    if a["count_include_pad"] and (ph or pw):
        # PyTorch divides by the window clipped to the padded input: pad with zeros explicitly, then
        # count only what lies inside that padded input.
        x = _pad(e, name, x, [ph, pw], [ph, pw], 0.0, "zero_pad")
        end = _end_pads(a, sizes, (0, 0), padded=(sizes[0] + 2 * ph, sizes[1] + 2 * pw))
        begin = (0, 0)
    else:
        begin = (ph, pw)
        end = _end_pads(a, sizes, begin)
    e.node("AveragePool", [x], [s.outs[0]], name, **attrs, pads=[*begin, *end], count_include_pad=0)


def adaptive_window(size: int, out: int) -> tuple[int, int] | None:
    """(kernel, stride) of a fixed pooling window equal to adaptive pooling from size to out, or None."""
    starts, ends = adaptive_bounds(size, out)
    kernel = ends[0] - starts[0]
    stride = starts[1] - starts[0] if out > 1 else kernel
    uniform = all(e - b == kernel for b, e in zip(starts, ends)) and all(b == i * stride for i, b in enumerate(starts))
    return (kernel, stride) if uniform and stride >= 1 else None


def adaptive_bounds(size: int, out: int) -> tuple[list[int], list[int]]:
    """PyTorch's adaptive pooling windows [start, end) along one dimension."""
    return [i * size // out for i in range(out)], [-(-(i + 1) * size // out) for i in range(out)]


def _adaptive_avgpool(e, s):
    _, h, w = s.in_shapes[0]
    oh, ow = s.a["output_size"]
    name = s.node.name
    if (oh, ow) == (1, 1):
        e.node("GlobalAveragePool", [s.ins[0]], [s.outs[0]], name)
        return
    windows = [adaptive_window(h, oh), adaptive_window(w, ow)]
    if None not in windows:
        (kh, sh), (kw, sw) = windows
        e.node("AveragePool", [s.ins[0]], [s.outs[0]], name, kernel_shape=[kh, kw], strides=[sh, sw])
        return
    # Windows of varying size: average each window (Slice + ReduceMean) and concatenate, per axis.
    x = s.ins[0]
    for axis, size, out in ((2, h, oh), (3, w, ow)):
        final = axis == 3
        parts = []
        for i, (b, end) in enumerate(zip(*adaptive_bounds(size, out))):
            label = f"axis{axis}_{i}"
            bounds = [e.const(name, label + "_" + k, np.array([v], np.int64)) for k, v in (("start", b), ("end", end), ("axis", axis))]
            piece = e.node("Slice", [x, *bounds], [e.tmp(name, label)], f"{name}/{label}")
            parts.append(_reduce_mean(e, name, piece, [axis], label + "_mean"))
        out_value, node_name = (s.outs[0], name) if final else (e.tmp(name, f"axis{axis}"), f"{name}/axis{axis}")
        x = e.node("Concat", parts, [out_value], node_name, axis=axis)


def _global(op_type: str) -> Lowering:
    return Lowering(lambda e, s: e.node(op_type, [s.ins[0]], [s.outs[0]], s.node.name))


def _global_avg_pool(e, s):
    if not s.a["mean"]:
        e.node("GlobalAveragePool", [s.ins[0]], [s.outs[0]], s.node.name)
    elif e.opset >= 18:
        e.node("ReduceMean", [s.ins[0], e.const(s.node.name, "axes", np.array([2, 3], np.int64))], [s.outs[0]], s.node.name, keepdims=1)
    else:
        e.node("ReduceMean", [s.ins[0]], [s.outs[0]], s.node.name, axes=[2, 3], keepdims=1)


def _upsample(e, s):
    a, name = s.a, s.node.name
    if a["mode"] == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "align_corners" if a["align_corners"] else "half_pixel"}
    empty = np.zeros(0, np.float32)
    roi = e.const(name, "roi", empty) if e.opset < 13 else ""
    if a["scale_factor"] is not None:
        scales = e.const(name, "scales", np.array([1.0, 1.0, *a["scale_factor"]], dtype=np.float32))
        e.node("Resize", [s.ins[0], roi, scales], [s.outs[0]], name, **attrs)
        return
    # Target sizes: the input's batch and channels followed by the fixed height and width.
    shape = e.node("Shape", [s.ins[0]], [e.tmp(name, "shape")], name + "/shape")
    lead = e.node("Slice", [shape, e.const(name, "zero", np.array([0], np.int64)), e.const(name, "two", np.array([2], np.int64))],
                  [e.tmp(name, "lead")], name + "/lead")
    hw = e.const(name, "hw", np.array(a["size"], dtype=np.int64))
    sizes = e.node("Concat", [lead, hw], [e.tmp(name, "sizes")], name + "/sizes", axis=0)
    scales = e.const(name, "scales", empty) if e.opset < 13 else ""
    e.node("Resize", [s.ins[0], roi, scales, sizes], [s.outs[0]], name, **attrs)


# ---- structure ------------------------------------------------------------------------------------


def _identity(e, s):
    e.node("Identity", [s.ins[0]], [s.outs[0]], s.node.name)


def _flatten(e, s):
    rank = len(s.in_shapes[0]) + 1
    start, end = s.a["start_dim"], s.a["end_dim"] % rank
    if start == 1 and end == rank - 1:
        e.node("Flatten", [s.ins[0]], [s.outs[0]], s.node.name, axis=1)
        return
    shape = e.const(s.node.name, "shape", np.array([0, *s.out_shapes[0]], dtype=np.int64))
    e.node("Reshape", [s.ins[0], shape], [s.outs[0]], s.node.name)


def _chain(op_type: str) -> Lowering:
    def emit(e, s):
        name, acc = s.node.name, s.ins[0]
        for i, x in enumerate(s.ins[1:], 1):
            out = s.outs[0] if i == len(s.ins) - 1 else e.tmp(name, f"partial{i}")
            acc = e.node(op_type, [acc, x], [out], name if i == len(s.ins) - 1 else f"{name}/partial{i}")

    return Lowering(emit)


def _concat(e, s):
    e.node("Concat", list(s.ins), [s.outs[0]], s.node.name, axis=int(s.a["dim"]))


def _channel_shuffle(e, s):
    g, name = int(s.a["groups"]), s.node.name
    c, *rest = s.in_shapes[0]
    grouped = e.const(name, "grouped_shape", np.array([0, g, c // g, *rest], dtype=np.int64))
    flat = e.const(name, "shape", np.array([0, *s.in_shapes[0]], dtype=np.int64))
    r = e.node("Reshape", [s.ins[0], grouped], [e.tmp(name, "grouped")], name + "/group")
    perm = [0, 2, 1, *range(3, len(rest) + 3)]
    t = e.node("Transpose", [r], [e.tmp(name, "transposed")], name + "/transpose", perm=perm)
    e.node("Reshape", [t, flat], [s.outs[0]], name)


def _channel_split(e, s):
    sizes = [shape[0] for shape in s.out_shapes]
    if e.opset >= 13:
        e.node("Split", [s.ins[0], e.const(s.node.name, "split", np.array(sizes, dtype=np.int64))], list(s.outs), s.node.name, axis=1)
    else:
        e.node("Split", [s.ins[0]], list(s.outs), s.node.name, axis=1, split=sizes)


def _permute(e, s):
    e.node("Transpose", [s.ins[0]], [s.outs[0]], s.node.name, perm=[int(d) for d in s.a["dims"]])


def _scale(e, s):
    rank = len(s.in_shapes[0]) + 1
    axis = s.a["axis"] % rank
    weight = e.param(s.node, "weight")
    if axis != rank - 1:
        shape = e.const(s.node.name, "weight_shape", np.array([-1] + [1] * (rank - 1 - axis), dtype=np.int64))
        weight = e.node("Reshape", [weight, shape], [e.tmp(s.node.name, "weight")], s.node.name + "/weight")
    e.node("Mul", [s.ins[0], weight], [s.outs[0]], s.node.name)


def _prelu(e, s):
    slope = e.param(s.node, "weight")
    n, rank = s.a["num_parameters"], len(s.in_shapes[0])
    if n > 1 and rank > 1:
        shape = e.const(s.node.name, "slope_shape", np.array([n] + [1] * (rank - 1), dtype=np.int64))
        slope = e.node("Reshape", [slope, shape], [e.tmp(s.node.name, "slope")], s.node.name + "/slope")
    e.node("PRelu", [s.ins[0], slope], [s.outs[0]], s.node.name)


def _opaque(e, s):
    e.opaque(s)


def _opaque_min(a: dict, ins: list[Shape]) -> int:
    """An imported node keeps the opset it was written for (default domain only)."""
    return max(FLOOR_OPSET, a["opset"]) if not a["domain"] else FLOOR_OPSET


LOWERINGS: dict[str, Lowering] = {
    "Conv2d": Lowering(_conv),
    "ConvTranspose2d": Lowering(_conv_transpose),
    "DeformConv2d": Lowering(_deform_conv, _at_least(19)),
    "Linear": Lowering(_linear),
    **{op: _activation_entry(op) for op in ACTIVATIONS if op != "Softmax"},
    "Softmax": Lowering(_activation_entry("Softmax").emit, _softmax_min),
    "PReLU": Lowering(_prelu),
    "BatchNorm2d": Lowering(_batchnorm),
    "BatchNorm1d": Lowering(_batchnorm),
    "LayerNorm": Lowering(_layer_norm, _at_least(17)),
    "LRN": Lowering(_lrn),
    "MaxPool2d": Lowering(_maxpool),
    "AvgPool2d": Lowering(_avgpool),
    "GlobalAvgPool": Lowering(_global_avg_pool),
    "GlobalMaxPool": _global("GlobalMaxPool"),
    "AdaptiveAvgPool2d": Lowering(_adaptive_avgpool),
    "Upsample": Lowering(_upsample),
    "Identity": Lowering(_identity),
    "Dropout": Lowering(_identity),
    "Flatten": Lowering(_flatten),
    "Add": _chain("Add"),
    "Mul": _chain("Mul"),
    "Concat": Lowering(_concat),
    "ChannelShuffle": Lowering(_channel_shuffle),
    "ChannelSplit": Lowering(_channel_split),
    "Permute": Lowering(_permute),
    "Scale": Lowering(_scale),
    "StochasticDepth": Lowering(_identity),
    "Opaque": Lowering(_opaque, _opaque_min),
}
