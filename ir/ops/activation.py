"""Activations: elementwise, shape-preserving (Softmax normalizes along a dimension)."""

from __future__ import annotations

from convstudio.ir.errors import AttrError, ShapeError
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, checked, numel, register

# Per-element flop counts of our convention (documented in docs/cost.md).
ACT_FLOPS: dict[str, int] = {
    "ReLU": 1,          # max(x, 0)
    "ReLU6": 2,         # min(max(x, 0), 6)
    "LeakyReLU": 2,     # compare, multiply
    "PReLU": 2,         # compare, multiply
    "RReLU": 2,         # compare, multiply (eval: fixed slope)
    "ELU": 4,           # compare, exp, subtract, multiply
    "SELU": 5,          # ELU then scale
    "Sigmoid": 4,       # negate, exp, add, divide
    "Tanh": 5,          # two exps, add, subtract, divide
    "SiLU": 5,          # sigmoid, multiply
    "GELU": 8,          # erf-based: divide, erf, add, multiply, multiply (approx count)
    "Hardswish": 4,     # add, clamp, multiply, divide
    "Hardsigmoid": 3,   # add, clamp, divide
    "Softmax": 3,       # exp, sum, divide
}

# Activations a conv/linear node can carry as its `activation` attribute, and the op they replace.
FUSED_ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "relu6": "ReLU6",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "silu": "SiLU",
    "hardswish": "Hardswish",
}
FUSED_ACTIVATION_CHOICES = ("none", *FUSED_ACTIVATIONS)


def fused_activation_attrs() -> tuple[Attr, ...]:
    return (
        Attr("activation", "choice", "none", choices=FUSED_ACTIVATION_CHOICES, doc="fused activation applied to the output"),
        Attr("activation_param", "float", 0.01, doc="negative_slope for leaky_relu, alpha for elu"),
    )


def fused_activation_flops(a: dict, out_numel: int) -> tuple[int, str]:
    act = a.get("activation", "none")
    if act == "none":
        return 0, ""
    per = ACT_FLOPS[FUSED_ACTIVATIONS[act]]
    return per * out_numel, f" + {act} {per}·{out_numel}"


def _same_shape(a: dict, ins: list) -> list:
    return checked([ins[0]])


def _activation(name: str, attrs: tuple[Attr, ...] = (), doc: str = "", check=None, infer=_same_shape, params=None) -> OpDef:
    """Register an activation costing ACT_FLOPS[name] per element."""
    per = ACT_FLOPS[name]

    def cost(a: dict, ins: list, outs: list) -> OpCost:
        n = numel(outs[0])
        return OpCost(0, per * n, 0, {"macs": "0", "flops": f"{per}·numel = {per}·{n}", "fvcore": "0 (not counted by fvcore)"})

    kwargs = {key: value for key, value in {"check": check, "params": params}.items() if value}
    return register(OpDef(name, "activation", attrs, (1, 1), infer, cost, doc=doc, **kwargs))


def _prelu_params(a: dict, ins: list) -> dict:
    return {"weight": (a["num_parameters"],)}


def _prelu_infer(a: dict, ins: list) -> list:
    n = a["num_parameters"]
    if n != 1 and (len(ins[0]) < 1 or ins[0][0] != n):
        raise ShapeError(f"num_parameters must be 1 or the channel count {ins[0][0] if ins[0] else '?'}, got {n}", "attrs.num_parameters")
    return checked([ins[0]])


def _rrelu_check(a: dict) -> None:
    if a["lower"] > a["upper"]:
        raise AttrError(f"lower ({a['lower']}) must not exceed upper ({a['upper']})", "attrs.lower")


def _softmax_infer(a: dict, ins: list) -> list:
    dim = a["dim"]
    rank = len(ins[0]) + 1
    if not -rank <= dim < rank or dim % rank == 0:
        raise ShapeError(f"dim {dim} is out of range for a {rank}-d input (or is the batch dimension)", "attrs.dim")
    return checked([ins[0]])


_activation("ReLU", doc="max(x, 0)")
_activation("ReLU6", doc="min(max(x, 0), 6)")
_activation("LeakyReLU", (Attr("negative_slope", "float", 0.01),), doc="x if x > 0 else slope·x")
_activation("ELU", (Attr("alpha", "float", 1.0),), doc="x if x > 0 else alpha·(exp(x) - 1)")
_activation("SELU", doc="scale·ELU(x, alpha) with the self-normalizing constants")
_activation("Sigmoid", doc="1 / (1 + exp(-x))")
_activation("Tanh", doc="hyperbolic tangent")
_activation("SiLU", doc="x·sigmoid(x) (swish)")
_activation("GELU", (Attr("approximate", "choice", "none", choices=("none", "tanh")),), doc="x·Φ(x)")
_activation("Hardswish", doc="x·relu6(x + 3) / 6")
_activation("Hardsigmoid", doc="relu6(x + 3) / 6")
_activation(
    "PReLU",
    (Attr("num_parameters", "int", 1, min=1), Attr("init", "float", 0.25)),
    doc="leaky ReLU with a learned slope (one, or one per channel)",
    infer=_prelu_infer,
    params=_prelu_params,
)
_activation("Softmax", (Attr("dim", "int", 1),), doc="exp(x) / sum(exp(x)) along `dim` (1 = channels)", infer=_softmax_infer)

_activation(
    "RReLU",
    (Attr("lower", "float", 1.0 / 8, min=0.0), Attr("upper", "float", 1.0 / 3, min=0.0)),
    doc="leaky ReLU with a random slope in [lower, upper] in training, their mean in eval",
    check=_rrelu_check,
)
