"""Pooling and resampling: MaxPool2d, AvgPool2d, global and adaptive pools, Upsample."""

from __future__ import annotations

import math

from convstudio.ir.errors import AttrError, ShapeError
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, checked, fmt, need_rank, numel, register


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size, including the ceil-mode rule that the last window starts inside."""
    span = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return out
    return span // s + 1


def pool_stride(a: dict) -> tuple[int, int]:
    """A window's stride: the `stride` attribute, defaulting to the kernel size as in PyTorch."""
    return a["stride"] if a["stride"] is not None else a["kernel_size"]


def _pool_check(a: dict) -> None:
    """PyTorch limits padding to half the kernel size (dilation does not enlarge the limit)."""
    for k, p in zip(a["kernel_size"], a["padding"]):
        if p > k // 2:
            raise AttrError(f"padding {p} must be at most half the kernel ({k // 2})", "attrs.padding")


def _pool_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    c, h, w = ins[0]
    (kh, kw), (sh, sw), (ph, pw) = a["kernel_size"], pool_stride(a), a["padding"]
    dh, dw = a.get("dilation") or (1, 1)
    ho = pool_out_size(h, kh, sh, ph, dh, a["ceil_mode"])
    wo = pool_out_size(w, kw, sw, pw, dw, a["ceil_mode"])
    if ho < 1 or wo < 1:
        raise ShapeError(f"kernel {kh}x{kw} is larger than the padded {h}x{w} input", "attrs.kernel_size")
    return checked([(c, ho, wo)])


def _maxpool_cost(a: dict, ins: list, outs: list) -> OpCost:
    kh, kw = a["kernel_size"]
    n = numel(outs[0])
    return OpCost(0, n * (kh * kw - 1), 0, {"macs": "0", "flops": f"numel·(kh·kw - 1) = {fmt(n, kh * kw - 1)}", "fvcore": "0 (not counted by fvcore)"})


def _avgpool_cost(a: dict, ins: list, outs: list) -> OpCost:
    kh, kw = a["kernel_size"]
    n = numel(outs[0])
    return OpCost(0, n * kh * kw, 0, {"macs": "0", "flops": f"numel·kh·kw = {fmt(n, kh * kw)}", "fvcore": "0 (not counted by fvcore)"})


POOL_ATTRS = (
    Attr("kernel_size", "pair", min=1),
    Attr("stride", "pair", None, min=1, optional=True, doc="defaults to kernel_size"),
    Attr("padding", "pair", 0, min=0),
)

register(
    OpDef(
        "MaxPool2d",
        "pooling",
        POOL_ATTRS + (Attr("dilation", "pair", 1, min=1), Attr("ceil_mode", "bool", False)),
        (1, 1),
        _pool_infer,
        _maxpool_cost,
        check=_pool_check,
        doc="maximum over each window",
    )
)
register(
    OpDef(
        "AvgPool2d",
        "pooling",
        POOL_ATTRS + (Attr("ceil_mode", "bool", False), Attr("count_include_pad", "bool", True)),
        (1, 1),
        _pool_infer,
        _avgpool_cost,
        check=_pool_check,
        doc="mean over each window",
    )
)


def _global_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    return checked([(ins[0][0], 1, 1)])


def _global_avg_cost(a: dict, ins: list, outs: list) -> OpCost:
    n_in = numel(ins[0])
    n_out = numel(outs[0])
    flops = f"input numel + output numel = {n_in} + {n_out}"
    if a.get("mean"):  # fvcore counts aten::mean as 0
        return OpCost(0, n_in + n_out, 0, {"macs": "0", "flops": flops, "fvcore": "0 (a mean: not counted by fvcore)"})
    return OpCost(0, n_in + n_out, n_in, {"macs": "0", "flops": flops, "fvcore": f"1·input numel = {n_in}"})


def _global_max_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(ins[0]) - numel(outs[0])
    return OpCost(0, n, 0, {"macs": "0", "flops": f"input numel - output numel = {n}", "fvcore": "0 (not counted by fvcore)"})


GLOBAL_AVG_ATTRS = (Attr("mean", "bool", False, doc="written as a mean over H and W (torch.mean, ONNX ReduceMean), which fvcore counts as 0"),)
register(OpDef("GlobalAvgPool", "pooling", GLOBAL_AVG_ATTRS, (1, 1), _global_infer, _global_avg_cost, doc="mean over H and W, output Cx1x1"))
register(OpDef("GlobalMaxPool", "pooling", (), (1, 1), _global_infer, _global_max_cost, doc="maximum over H and W, output Cx1x1"))


def _adaptive_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    return checked([(ins[0][0], *a["output_size"])])


def adaptive_window_total(size: int, out: int) -> int:
    """Summed length of PyTorch's adaptive windows [floor(i·size/out), ceil((i+1)·size/out)) along one axis
    (the size itself when the windows tile it; more when uneven windows overlap)."""
    return sum(-(-(i + 1) * size // out) - i * size // out for i in range(out))


def _adaptive_cost(a: dict, ins: list, outs: list) -> OpCost:
    c, h, w = ins[0]
    (oh, ow), n_in, n_out = a["output_size"], numel(ins[0]), numel(outs[0])
    summed = c * adaptive_window_total(h, oh) * adaptive_window_total(w, ow)
    flops = f"window sizes summed + output numel = {summed} + {n_out}"
    return OpCost(0, summed + n_out, n_in, {"macs": "0", "flops": flops, "fvcore": f"1·input numel = {n_in}"})


register(
    OpDef(
        "AdaptiveAvgPool2d",
        "pooling",
        (Attr("output_size", "pair", min=1),),
        (1, 1),
        _adaptive_infer,
        _adaptive_cost,
        doc="mean over adaptive windows giving output_size: window i spans [floor(i·H/oh), ceil((i+1)·H/oh))",
    )
)


def _upsample_check(a: dict) -> None:
    if (a["size"] is None) == (a["scale_factor"] is None):
        raise AttrError("give exactly one of size and scale_factor", "attrs.size")
    if a["align_corners"] and a["mode"] != "bilinear":
        raise AttrError("align_corners applies only to mode 'bilinear'", "attrs.align_corners")


def _upsample_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    c, h, w = ins[0]
    if a["size"] is not None:
        return checked([(c, *a["size"])])
    sh, sw = a["scale_factor"]
    return checked([(c, math.floor(h * sh), math.floor(w * sw))])


def _upsample_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(outs[0])
    if a["mode"] == "nearest":
        return OpCost(0, n, n, {"macs": "0", "flops": f"1·output numel = {n}", "fvcore": f"1·output numel = {n}"})
    return OpCost(0, 7 * n, 4 * n, {"macs": "0", "flops": f"7·output numel (4 mul + 3 add) = {7 * n}", "fvcore": f"4·output numel = {4 * n}"})


register(
    OpDef(
        "Upsample",
        "pooling",
        (
            Attr("mode", "choice", "nearest", choices=("nearest", "bilinear")),
            Attr("scale_factor", "scale", None, optional=True),
            Attr("size", "pair", None, min=1, optional=True),
            Attr("align_corners", "bool", False),
        ),
        (1, 1),
        _upsample_infer,
        _upsample_cost,
        check=_upsample_check,
        doc="resize by scale_factor (output floor(H·s)) or to size",
    )
)
