"""Normalization: BatchNorm2d, BatchNorm1d, LRN."""

from __future__ import annotations

from convstudio.ir.errors import ShapeError
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, checked, need_rank, numel, register

BN_ATTRS = (
    Attr("eps", "float", 1e-5, min=0.0),
    Attr("momentum", "float", 0.1, min=0.0, max=1.0),
    Attr("affine", "bool", True),
    Attr("track_running_stats", "bool", True),
    Attr("num_features", "int", None, min=1, optional=True, doc="checked against the input when set"),
)


def _bn_infer(rank_ok: tuple[int, ...]):
    def infer(a: dict, ins: list) -> list:
        if len(ins[0]) not in rank_ok:
            names = " or ".join(f"{r + 1}-d" for r in rank_ok)
            raise ShapeError(f"input must be {names}, got {['N', *ins[0]]}", "inputs")
        c = ins[0][0]
        if a["num_features"] is not None and a["num_features"] != c:
            raise ShapeError(f"num_features is {a['num_features']} but the input has {c} channels", "attrs.num_features")
        return checked([ins[0]])

    return infer


def _bn_params(a: dict, ins: list) -> dict:
    c = ins[0][0]
    return {"weight": (c,), "bias": (c,)} if a["affine"] else {}


def _bn_buffers(a: dict, ins: list) -> dict:
    c = ins[0][0]
    return {"running_mean": (c,), "running_var": (c,)} if a["track_running_stats"] else {}


def _bn_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(outs[0])
    fv = (2 if a["affine"] else 1) * n
    return OpCost(
        0,
        2 * n,
        fv,
        {
            "macs": "0",
            "flops": f"2·numel (eval: folded scale and shift) = 2·{n}",
            "fvcore": f"{2 if a['affine'] else 1}·numel (eval{', affine' if a['affine'] else ''}) = {fv}",
        },
    )


for _name, _ranks, _doc in (
    ("BatchNorm2d", (3,), "batch normalization over N, H, W per channel"),
    ("BatchNorm1d", (1, 2), "batch normalization of (N, C) or (N, C, L) per channel"),
):
    register(
        OpDef(_name, "normalization", BN_ATTRS, (1, 1), _bn_infer(_ranks), _bn_cost, params=_bn_params, buffers=_bn_buffers, doc=_doc)
    )


def _lrn_infer(a: dict, ins: list) -> list:
    need_rank(ins[0], 3)
    return checked([ins[0]])


def _lrn_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(outs[0])
    per = a["size"] + 4
    return OpCost(0, per * n, 0, {"macs": "0", "flops": f"(size + 4)·numel = {per}·{n}", "fvcore": "0 (not counted by fvcore)"})


register(
    OpDef(
        "LRN",
        "normalization",
        (
            Attr("size", "int", min=1),
            Attr("alpha", "float", 1e-4),
            Attr("beta", "float", 0.75),
            Attr("k", "float", 1.0),
        ),
        (1, 1),
        _lrn_infer,
        _lrn_cost,
        doc="local response normalization across `size` neighbouring channels",
    )
)


# ---- LayerNorm ----------------------------------------------------------------------------------


def layer_norm_channels(a: dict, shape: tuple) -> int:
    """The size normalized over: the channels (dim 1) or, channels-last, the last dimension."""
    return shape[-1] if a["channels_last"] else shape[0]


def _ln_infer(a: dict, ins: list) -> list:
    if not ins[0]:
        raise ShapeError("input must have a dimension besides the batch", "inputs")
    return checked([ins[0]])


def _ln_params(a: dict, ins: list) -> dict:
    c = layer_norm_channels(a, ins[0])
    return {"weight": (c,), "bias": (c,)} if a["elementwise_affine"] else {}


def _ln_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(outs[0])
    affine = a["elementwise_affine"]
    per, fv = (7, 5) if affine else (5, 4)
    return OpCost(
        0,
        per * n,
        fv * n,
        {
            "macs": "0",
            "flops": f"{per}·numel (mean, subtract, square, variance, normalize{', scale, shift' if affine else ''}) = {per}·{n}",
            "fvcore": f"{fv}·numel (fvcore's layer_norm{', affine' if affine else ''}) = {fv * n}",
        },
    )


register(
    OpDef(
        "LayerNorm",
        "normalization",
        (
            Attr("eps", "float", 1e-5, min=0.0),
            Attr("elementwise_affine", "bool", True, doc="learned per-channel weight and bias"),
            Attr("channels_last", "bool", False, doc="normalize over the last dimension instead of the channels (dim 1)"),
        ),
        (1, 1),
        _ln_infer,
        _ln_cost,
        params=_ln_params,
        doc="layer normalization over the channels at every position (ConvNeXt's LayerNorm2d), or over the last dimension",
    )
)
