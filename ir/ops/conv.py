"""Convolutions: Conv2d (standard, 1x1, grouped, dilated, depthwise), ConvTranspose2d, DeformConv2d."""

from __future__ import annotations

from convstudio.ir.errors import AttrError, ShapeError
from convstudio.ir.ops.activation import fused_activation_attrs, fused_activation_flops
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, checked, fmt, need_rank, numel, register


def conv_pads(a: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) padding, resolving 'same' and 'valid' as PyTorch does and
    four-sided padding [top, left, bottom, right] (ONNX's order)."""
    pad = a["padding"]
    if pad == "valid":
        return (0, 0), (0, 0)
    if pad == "same":
        out = []
        for k, d in zip(a["kernel_size"], a["dilation"]):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return out[0], out[1]
    if len(pad) == 4:
        return (pad[0], pad[2]), (pad[1], pad[3])
    return (pad[0], pad[0]), (pad[1], pad[1])


def conv_out_size(size: int, k: int, s: int, pads: tuple[int, int], d: int) -> int:
    return (size + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def _groups_divide_out(a: dict) -> None:
    if a["out_channels"] % a["groups"]:
        raise AttrError(f"groups ({a['groups']}) must divide out_channels ({a['out_channels']})", "attrs.groups")


def _conv_check(a: dict) -> None:
    _groups_divide_out(a)
    if a["padding"] == "same" and a["stride"] != (1, 1):
        raise AttrError("padding 'same' needs stride 1 (as in PyTorch)", "attrs.padding")


def _check_in_channels(a: dict, c: int) -> None:
    if a["in_channels"] is not None and a["in_channels"] != c:
        raise ShapeError(f"in_channels is {a['in_channels']} but the input has {c} channels", "attrs.in_channels")
    if c % a["groups"]:
        raise ShapeError(f"groups ({a['groups']}) must divide the input's {c} channels", "attrs.groups")


def _conv_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    c, h, w = ins[0]
    _check_in_channels(a, c)
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    ph, pw = conv_pads(a)
    ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise ShapeError(f"kernel {kh}x{kw} (dilation {dh}x{dw}) is larger than the padded {h}x{w} input", "attrs.kernel_size")
    return checked([(a["out_channels"], ho, wo)])


def _conv_params(a: dict, ins: list) -> dict:
    c = ins[0][0]
    kh, kw = a["kernel_size"]
    out = {"weight": (a["out_channels"], c // a["groups"], kh, kw)}
    if a["bias"]:
        out["bias"] = (a["out_channels"],)
    return out


def mac_layer_cost(a: dict, macs: int, mac_text: str, out_numel: int, extra: int = 0, extra_text: str = "") -> OpCost:
    """Cost of a conv or linear layer: fvcore counts its MACs; flops add 2·MACs, `extra`, bias and a fused activation."""
    bias = out_numel if a["bias"] else 0
    act, act_text = fused_activation_flops(a, out_numel)
    flops_text = f"2·macs{extra_text}{' + bias ' + str(out_numel) if bias else ''}{act_text}"
    return OpCost(macs, 2 * macs + extra + bias + act, macs, {"macs": mac_text, "flops": flops_text, "fvcore": mac_text})


def _conv_macs(a: dict, ins: list, outs: list) -> tuple[int, str]:
    """MACs of a convolution over its output positions, and the formula with its numbers."""
    c = ins[0][0]
    cout, ho, wo = outs[0]
    kh, kw = a["kernel_size"]
    g = a["groups"]
    return cout * ho * wo * (c // g) * kh * kw, f"Cout·Ho·Wo·(Cin/g)·kh·kw = {fmt(cout, ho, wo, c // g, kh, kw)}"


def _conv_cost(a: dict, ins: list, outs: list) -> OpCost:
    return mac_layer_cost(a, *_conv_macs(a, ins, outs), numel(outs[0]))


def conv_attrs(padding: str = "pair", after_padding: tuple = (), after_groups: tuple = ()) -> tuple[Attr, ...]:
    """The attributes every convolution has, in display order, with op-specific ones slotted in."""
    return (
        Attr("out_channels", "int", min=1),
        Attr("kernel_size", "pair", min=1),
        Attr("stride", "pair", 1, min=1),
        Attr("padding", padding, 0, min=0),
        *after_padding,
        Attr("dilation", "pair", 1, min=1),
        Attr("groups", "int", 1, min=1),
        *after_groups,
        Attr("bias", "bool", True),
        Attr("in_channels", "int", None, min=1, optional=True, doc="checked against the input when set"),
    )

register(
    OpDef(
        "Conv2d",
        "conv",
        conv_attrs("padding") + fused_activation_attrs(),
        (1, 1),
        _conv_infer,
        _conv_cost,
        params=_conv_params,
        check=_conv_check,
        doc="2-d convolution: groups = channels gives depthwise; kernel 1 gives pointwise",
    )
)


# ---- transposed ---------------------------------------------------------------------------------


def _convt_check(a: dict) -> None:
    _groups_divide_out(a)
    for op_, s, d in zip(a["output_padding"], a["stride"], a["dilation"]):
        if op_ >= max(s, d):
            raise AttrError(f"output_padding ({op_}) must be smaller than stride or dilation ({max(s, d)})", "attrs.output_padding")


def _convt_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    c, h, w = ins[0]
    _check_in_channels(a, c)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oph, opw) = (
        a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["output_padding"]
    )
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if ho < 1 or wo < 1:
        raise ShapeError(f"padding {ph}x{pw} leaves no output for a {h}x{w} input", "attrs.padding")
    return checked([(a["out_channels"], ho, wo)])


def _convt_params(a: dict, ins: list) -> dict:
    kh, kw = a["kernel_size"]
    out = {"weight": (ins[0][0], a["out_channels"] // a["groups"], kh, kw)}
    if a["bias"]:
        out["bias"] = (a["out_channels"],)
    return out


def _convt_cost(a: dict, ins: list, outs: list) -> OpCost:
    c, h, w = ins[0]
    cout = a["out_channels"]
    kh, kw = a["kernel_size"]
    g = a["groups"]
    macs = c * h * w * (cout // g) * kh * kw
    return mac_layer_cost(a, macs, f"Cin·H·W·(Cout/g)·kh·kw = {fmt(c, h, w, cout // g, kh, kw)}", numel(outs[0]))


register(
    OpDef(
        "ConvTranspose2d",
        "conv",
        conv_attrs(after_padding=(Attr("output_padding", "pair", 0, min=0),)) + fused_activation_attrs(),
        (1, 1),
        _convt_infer,
        _convt_cost,
        params=_convt_params,
        check=_convt_check,
        doc="transposed convolution (learned upsampling); MACs count over input positions",
    )
)


# ---- deformable ---------------------------------------------------------------------------------


def _deform_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    c, h, w = ins[0]
    _check_in_channels(a, c)
    if c % a["offset_groups"]:
        raise ShapeError(f"offset_groups ({a['offset_groups']}) must divide the input's {c} channels", "attrs.offset_groups")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
    ho = conv_out_size(h, kh, sh, (ph, ph), dh)
    wo = conv_out_size(w, kw, sw, (pw, pw), dw)
    if ho < 1 or wo < 1:
        raise ShapeError(f"kernel {kh}x{kw} is larger than the padded {h}x{w} input", "attrs.kernel_size")
    og = a["offset_groups"]
    expected = (2 * og * kh * kw, ho, wo)
    if tuple(ins[1]) != expected:
        raise ShapeError(f"offset must be {['N', *expected]}, got {['N', *ins[1]]}", "input 1 (offset)")
    if len(ins) > 2:
        mask = (og * kh * kw, ho, wo)
        if tuple(ins[2]) != mask:
            raise ShapeError(f"mask must be {['N', *mask]}, got {['N', *ins[2]]}", "input 2 (mask)")
    return checked([(a["out_channels"], ho, wo)])


def _deform_cost(a: dict, ins: list, outs: list) -> OpCost:
    c = ins[0][0]
    _, ho, wo = outs[0]
    kh, kw = a["kernel_size"]
    samples = c * kh * kw * ho * wo
    per_sample = 7 + (1 if len(ins) > 2 else 0)
    sampling = f" + bilinear sampling {per_sample}·Cin·kh·kw·Ho·Wo = {fmt(per_sample, samples)}"
    return mac_layer_cost(a, *_conv_macs(a, ins, outs), numel(outs[0]), per_sample * samples, sampling)


register(
    OpDef(
        "DeformConv2d",
        "conv",
        conv_attrs(after_groups=(Attr("offset_groups", "int", 1, min=1),)),
        (2, 3),
        _deform_infer,
        _deform_cost,
        params=_conv_params,
        check=_groups_divide_out,
        doc="deformable convolution: input, offsets (2·offset_groups·kh·kw channels), optional mask",
    )
)
