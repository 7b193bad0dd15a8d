"""The PyTorch lowering table: one entry per IR op, keyed exactly like the op registry.

An entry is a function ``(emit, attrs, in_shapes, args) -> list of fx values`` (one per output of the
op). `attrs` are the node's resolved attributes, `in_shapes` the per-sample input shapes and `args` the
fx values feeding it. Entries build submodules through ``emit.module(spec, args)`` with a ModuleSpec,
so code generation writes exactly the constructor the lowering used; tensor functions and methods go
through ``emit.function`` and ``emit.method``.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convstudio.backends.torch.deform import DeformConv2d
from convstudio.backends.torch.layers import LayerNorm2d, Scale, StochasticDepth


@dataclass(frozen=True)
class ModuleSpec:
    """How to construct one submodule: a class and its constructor arguments."""

    cls: type
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        return self.cls(*self.args, **self.kwargs)

    def source(self) -> str:
        """Constructor call as Python source, leaving out arguments equal to the defaults."""
        defaults = {
            name: p.default
            for name, p in inspect.signature(self.cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        parts = [_literal(v) for v in self.args]
        for key, value in self.kwargs.items():
            if key in defaults and _same_value(_compact(value), defaults[key]):
                continue
            parts.append(f"{key}={_literal(value)}")
        prefix = "nn." if self.cls.__module__.startswith("torch.nn") else ""
        return f"{prefix}{self.cls.__name__}({', '.join(parts)})"


def _compact(value):
    """(3, 3) -> 3: torch reads a single number as a square pair."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


def _same_value(value, default) -> bool:
    return type(value) is type(default) and value == default


def _literal(value) -> str:
    return repr(_compact(value))


# ---- helpers that make entries ----------------------------------------------------------------

# Ops whose output is a new tensor that their own backward does not read: an activation that is the
# only reader of such an output may overwrite it in place (with no fused activation on the producer).
FRESH_OUTPUT_OPS = frozenset({"Conv2d", "ConvTranspose2d", "DeformConv2d", "Linear", "BatchNorm2d", "BatchNorm1d", "Add", "Mul", "Concat"})
INPLACE_FUSED_ACTIVATIONS = frozenset({"relu", "relu6"})

FUSED_ACTIVATION_FUNCTIONS = {
    "relu": (F.relu, False),
    "relu6": (F.relu6, False),
    "leaky_relu": (F.leaky_relu, True),
    "elu": (F.elu, True),
    "sigmoid": (torch.sigmoid, False),
    "tanh": (torch.tanh, False),
    "silu": (F.silu, False),
    "hardswish": (F.hardswish, False),
}


def module_op(make_spec, fused_activation: bool = False):
    """An entry that calls one submodule built by `make_spec(attrs, in_shapes)`; optionally the fused activation after it."""

    def lower(emit, a, ins, args):
        out = emit.module(make_spec(a, ins), args)
        if fused_activation and a["activation"] != "none":
            fn, takes_param = FUSED_ACTIVATION_FUNCTIONS[a["activation"]]
            extra = (a["activation_param"],) if takes_param else ()
            inplace = {"inplace": True} if a["activation"] in INPLACE_FUSED_ACTIVATIONS else {}
            out = emit.function(fn, (out, *extra), inplace, suffix="_" + a["activation"])
        return [out]

    return lower


def simple(cls, *attr_names):
    """An entry for a module whose constructor takes these attributes as keywords."""
    return module_op(lambda a, ins: ModuleSpec(cls, (), {k: a[k] for k in attr_names}))


def inplace_activation(cls):
    """ReLU/ReLU6 overwrite their input when it is a fresh tensor nothing else reads (as torchvision does)."""

    def lower(emit, a, ins, args):
        kwargs = {"inplace": True} if emit.owns_input(0, FRESH_OUTPUT_OPS) else {}
        return [emit.module(ModuleSpec(cls, (), kwargs), args)]

    return lower


def _chain(fn):
    """n-ary Add/Mul as a left fold of the binary operator (broadcasting as torch does)."""

    def lower(emit, a, ins, args):
        out = args[0]
        for i, arg in enumerate(args[1:], 1):
            out = emit.function(fn, (out, arg), suffix="" if i == len(args) - 1 else f"_part{i}")
        return [out]

    return lower


# ---- entries ------------------------------------------------------------------------------------


CONV_ARGS = ("kernel_size", "stride", "padding", "dilation", "groups", "bias")
CONV_TRANSPOSE_ARGS = ("kernel_size", "stride", "padding", "output_padding", "groups", "bias", "dilation")


def _conv(cls, arg_names=CONV_ARGS):
    """A convolution layer: (in_channels, out_channels) from the input and the attributes `arg_names` as keywords."""
    return lambda a, ins: ModuleSpec(cls, (ins[0][0], a["out_channels"]), {k: a[k] for k in arg_names})


CONV2D = module_op(_conv(nn.Conv2d), fused_activation=True)


def _conv2d(emit, a, ins, args):
    """Conv2d; four-sided padding that is not symmetric becomes F.pad before an unpadded convolution."""
    pad = a["padding"]
    if not isinstance(pad, str) and len(pad) == 4:
        top, left, bottom, right = pad
        if (top, left) != (bottom, right):
            args = [emit.function(F.pad, (args[0], (left, right, top, bottom)), suffix="_pad")]
        a = {**a, "padding": (top, left) if (top, left) == (bottom, right) else (0, 0)}
    return CONV2D(emit, a, ins, args)


def _linear(a, ins):
    return ModuleSpec(nn.Linear, (ins[0][-1], a["out_features"]), {"bias": a["bias"]})


def _batch_norm(cls):
    return module_op(
        lambda a, ins: ModuleSpec(
            cls,
            (ins[0][0],),
            {"eps": a["eps"], "momentum": a["momentum"], "affine": a["affine"], "track_running_stats": a["track_running_stats"]},
        )
    )


def _max_pool(a, ins):
    kwargs = {"stride": a["stride"], "padding": a["padding"], "dilation": a["dilation"], "ceil_mode": a["ceil_mode"]}
    return ModuleSpec(nn.MaxPool2d, (a["kernel_size"],), kwargs)


def _avg_pool(a, ins):
    kwargs = {"stride": a["stride"], "padding": a["padding"], "ceil_mode": a["ceil_mode"], "count_include_pad": a["count_include_pad"]}
    return ModuleSpec(nn.AvgPool2d, (a["kernel_size"],), kwargs)


def _upsample(a, ins):
    kwargs = {"size": a["size"], "scale_factor": _compact(a["scale_factor"]), "mode": a["mode"]}
    if a["mode"] == "bilinear":
        kwargs["align_corners"] = a["align_corners"]
    return ModuleSpec(nn.Upsample, (), kwargs)


def _layer_norm(a, ins):
    if a["channels_last"]:
        return ModuleSpec(nn.LayerNorm, (ins[0][-1],), {"eps": a["eps"], "elementwise_affine": a["elementwise_affine"]})
    return ModuleSpec(LayerNorm2d, (ins[0][0],), {"eps": a["eps"], "elementwise_affine": a["elementwise_affine"]})


def _scale(a, ins):
    rank = len(ins[0]) + 1
    axis = a["axis"] % rank
    return ModuleSpec(Scale, (ins[0][axis - 1],), {"axis": axis, "init": a["init"]})


def _permute(emit, a, ins, args):
    return [emit.method("permute", (args[0], *a["dims"]))]


def _global_avg_pool(emit, a, ins, args):
    if a["mean"]:
        return [emit.method("mean", (args[0], (2, 3)), {"keepdim": True})]
    return [emit.module(ModuleSpec(nn.AdaptiveAvgPool2d, (1,)), args)]


def _input(emit, a, ins, args):
    return [emit.placeholder()]


def _output(emit, a, ins, args):
    return [args[0]]


def _concat(emit, a, ins, args):
    return [emit.function(torch.cat, (list(args),), {"dim": a["dim"]})]


def _channel_shuffle(emit, a, ins, args):
    groups = a["groups"]
    grouped = emit.method("unflatten", (args[0], 1, (groups, ins[0][0] // groups)), suffix="_groups")
    swapped = emit.method("transpose", (grouped, 1, 2), suffix="_swap")
    return [emit.method("flatten", (swapped, 1, 2))]


def _channel_split(emit, a, ins, args):
    channels = ins[0][0]
    sizes = list(a["sections"]) if a["sections"] else [channels // a["parts"]] * a["parts"]
    parts = emit.method("split", (args[0], sizes), {"dim": 1})
    return [emit.function(operator.getitem, (parts, k), suffix=f"_{k}") for k in range(len(sizes))]


LOWERINGS = {
    "Input": _input,
    "Output": _output,
    # convolution
    "Conv2d": _conv2d,
    "ConvTranspose2d": module_op(_conv(nn.ConvTranspose2d, CONV_TRANSPOSE_ARGS), fused_activation=True),
    "DeformConv2d": module_op(_conv(DeformConv2d)),
    # activation
    "ReLU": inplace_activation(nn.ReLU),
    "ReLU6": inplace_activation(nn.ReLU6),
    "LeakyReLU": simple(nn.LeakyReLU, "negative_slope"),
    "ELU": simple(nn.ELU, "alpha"),
    "PReLU": module_op(lambda a, ins: ModuleSpec(nn.PReLU, (), {"num_parameters": a["num_parameters"], "init": a["init"]})),
    "RReLU": simple(nn.RReLU, "lower", "upper"),
    "SELU": simple(nn.SELU),
    "Sigmoid": simple(nn.Sigmoid),
    "Tanh": simple(nn.Tanh),
    "SiLU": simple(nn.SiLU),
    "GELU": simple(nn.GELU, "approximate"),
    "Hardswish": simple(nn.Hardswish),
    "Hardsigmoid": simple(nn.Hardsigmoid),
    "Softmax": simple(nn.Softmax, "dim"),
    # normalization
    "BatchNorm2d": _batch_norm(nn.BatchNorm2d),
    "BatchNorm1d": _batch_norm(nn.BatchNorm1d),
    "LayerNorm": module_op(_layer_norm),
    "LRN": module_op(lambda a, ins: ModuleSpec(nn.LocalResponseNorm, (a["size"],), {"alpha": a["alpha"], "beta": a["beta"], "k": a["k"]})),
    # pooling and resampling
    "MaxPool2d": module_op(_max_pool),
    "AvgPool2d": module_op(_avg_pool),
    "GlobalAvgPool": _global_avg_pool,
    "GlobalMaxPool": module_op(lambda a, ins: ModuleSpec(nn.AdaptiveMaxPool2d, (1,))),
    "AdaptiveAvgPool2d": module_op(lambda a, ins: ModuleSpec(nn.AdaptiveAvgPool2d, (a["output_size"],))),
    "Upsample": module_op(_upsample),
    # structure
    "Linear": module_op(_linear, fused_activation=True),
    "Flatten": simple(nn.Flatten, "start_dim", "end_dim"),
    "Dropout": simple(nn.Dropout, "p"),
    "Identity": simple(nn.Identity),
    "Add": _chain(operator.add),
    "Mul": _chain(operator.mul),
    "Concat": _concat,
    "ChannelShuffle": _channel_shuffle,
    "ChannelSplit": _channel_split,
    "Permute": _permute,
    "Scale": module_op(_scale),
    "StochasticDepth": simple(StochasticDepth, "p", "mode"),
}
