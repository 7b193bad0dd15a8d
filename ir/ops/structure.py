"""Structure: Input, Output, Linear, Flatten, Dropout, Add, Mul, Concat, ChannelShuffle, ChannelSplit, Identity."""

from __future__ import annotations

from convstudio.ir.errors import AttrError, ShapeError
from convstudio.ir.ops.activation import fused_activation_attrs
from convstudio.ir.ops.conv import mac_layer_cost
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, checked, fmt, numel, register


def _passthrough(a: dict, ins: list) -> list:
    return [ins[0]]


def _input_check(a: dict) -> None:
    if not a["shape"]:
        raise AttrError("shape must not be empty", "attrs.shape")


def _input_infer(a: dict, ins: list) -> list:
    return checked([tuple(a["shape"])], "attrs.shape")


register(
    OpDef(
        "Input",
        "io",
        (Attr("shape", "ints", min=1, doc="per-sample shape, e.g. [3, 224, 224]; the batch is symbolic"),),
        (0, 0),
        _input_infer,
        check=_input_check,
        doc="a graph input",
    )
)
register(OpDef("Output", "io", (), (1, 1), _passthrough, alias=True, doc="a graph output"))
register(OpDef("Identity", "structure", (), (1, 1), _passthrough, alias=True, doc="passes its input through"))
register(
    OpDef(
        "Dropout",
        "structure",
        (Attr("p", "float", 0.5, min=0.0, max=1.0),),
        (1, 1),
        _passthrough,
        alias=True,
        doc="zeroes elements with probability p in training; identity in eval",
    )
)


# ---- Linear -------------------------------------------------------------------------------------


def _linear_infer(a: dict, ins: list) -> list:
    x = ins[0]
    f = x[-1]
    if a["in_features"] is not None and a["in_features"] != f:
        raise ShapeError(f"in_features is {a['in_features']} but the input's last dimension is {f} (input {['N', *x]})", "attrs.in_features")
    return checked([(*x[:-1], a["out_features"])])


def _linear_params(a: dict, ins: list) -> dict:
    out = {"weight": (a["out_features"], ins[0][-1])}
    if a["bias"]:
        out["bias"] = (a["out_features"],)
    return out


def _linear_cost(a: dict, ins: list, outs: list) -> OpCost:
    rows = numel(ins[0][:-1])
    fin, fout = ins[0][-1], a["out_features"]
    rows_text = f"{rows}·" if rows != 1 else ""
    mac_text = f"{'rows·' if rows != 1 else ''}in·out = {rows_text}{fmt(fin, fout)}"
    return mac_layer_cost(a, rows * fin * fout, mac_text, numel(outs[0]))


register(
    OpDef(
        "Linear",
        "linear",
        (
            Attr("out_features", "int", min=1),
            Attr("bias", "bool", True),
            Attr("in_features", "int", None, min=1, optional=True, doc="checked against the input when set"),
        )
        + fused_activation_attrs(),
        (1, 1),
        _linear_infer,
        _linear_cost,
        params=_linear_params,
        doc="fully connected layer over the last dimension",
    )
)


# ---- Flatten ------------------------------------------------------------------------------------


def _flatten_infer(a: dict, ins: list) -> list:
    x = ins[0]
    rank = len(x) + 1
    start, end = a["start_dim"], a["end_dim"]
    end = end + rank if end < 0 else end
    if not 1 <= start < rank or not start <= end < rank:
        raise ShapeError(f"dims {a['start_dim']}..{a['end_dim']} do not fit a {rank}-d input", "attrs.start_dim")
    full = (0, *x)
    return [(*full[1:start], numel(full[start : end + 1]), *full[end + 1 :])]


register(
    OpDef(
        "Flatten",
        "structure",
        (Attr("start_dim", "int", 1, min=1), Attr("end_dim", "int", -1)),
        (1, 1),
        _flatten_infer,
        alias=True,
        doc="merges dimensions start_dim..end_dim (the batch stays)",
    )
)


# ---- elementwise --------------------------------------------------------------------------------


def broadcast(shapes: list) -> tuple:
    """Per-sample broadcast: equal ranks, each dimension equal or 1."""
    rank = len(shapes[0])
    for i, s in enumerate(shapes):
        if len(s) != rank:
            raise ShapeError(f"inputs have different ranks: {['N', *shapes[0]]} and {['N', *s]}", f"input {i}")
    out = []
    for d in range(rank):
        dims = {s[d] for s in shapes} - {1}
        if len(dims) > 1:
            listed = " and ".join(str(["N", *s]) for s in shapes)
            raise ShapeError(f"shapes {listed} do not broadcast (dimension {d + 1})", "inputs")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _elementwise(name: str, doc: str) -> None:
    def cost(a: dict, ins: list, outs: list) -> OpCost:
        n = numel(outs[0])
        k = len(ins) - 1
        return OpCost(0, k * n, 0, {"macs": "0", "flops": f"(inputs - 1)·numel = {fmt(k, n)}", "fvcore": "0 (not counted by fvcore)"})

    register(OpDef(name, "elementwise", (), (2, None), lambda a, ins: checked([broadcast(ins)]), cost, doc=doc))


_elementwise("Add", "elementwise sum with broadcasting (residual connections)")
_elementwise("Mul", "elementwise product with broadcasting (attention scaling)")


# ---- channel plumbing ---------------------------------------------------------------------------


def _concat_infer(a: dict, ins: list) -> list:
    rank = len(ins[0]) + 1
    dim = a["dim"] + rank if a["dim"] < 0 else a["dim"]
    if not 1 <= dim < rank:
        raise ShapeError(f"dim {a['dim']} is out of range for {rank}-d inputs (or is the batch)", "attrs.dim")
    ref = ins[0]
    for i, s in enumerate(ins[1:], 1):
        if len(s) != len(ref) or any(x != y for j, (x, y) in enumerate(zip(ref, s)) if j != dim - 1):
            raise ShapeError(f"input {i} has shape {['N', *s]}, which does not match {['N', *ref]} outside dim {dim}", f"input {i}")
    out = list(ref)
    out[dim - 1] = sum(s[dim - 1] for s in ins)
    return checked([tuple(out)])


register(
    OpDef(
        "Concat",
        "structure",
        (Attr("dim", "int", 1),),
        (1, None),
        _concat_infer,
        doc="joins inputs along dim (1 = channels)",
    )
)


def _shuffle_infer(a: dict, ins: list) -> list:
    if len(ins[0]) < 1 or ins[0][0] % a["groups"]:
        raise ShapeError(f"groups ({a['groups']}) must divide the input's {ins[0][0]} channels", "attrs.groups")
    return [ins[0]]


register(
    OpDef(
        "ChannelShuffle",
        "structure",
        (Attr("groups", "int", min=1),),
        (1, 1),
        _shuffle_infer,
        doc="interleaves channels of `groups` groups (ShuffleNet)",
    )
)


def _split_outputs(a: dict) -> int:
    return len(a["sections"]) if a["sections"] else a["parts"]


def _split_check(a: dict) -> None:
    if a["sections"] is not None and len(a["sections"]) < 1:
        raise AttrError("sections must list at least one size", "attrs.sections")


def _split_infer(a: dict, ins: list) -> list:
    c, *rest = ins[0]
    if a["sections"]:
        if sum(a["sections"]) != c:
            raise ShapeError(f"sections {list(a['sections'])} add up to {sum(a['sections'])}, not the input's {c} channels", "attrs.sections")
        return [(s, *rest) for s in a["sections"]]
    if c % a["parts"]:
        raise ShapeError(f"{a['parts']} parts do not divide the input's {c} channels", "attrs.parts")
    return [(c // a["parts"], *rest)] * a["parts"]


register(
    OpDef(
        "ChannelSplit",
        "structure",
        (Attr("parts", "int", 2, min=1), Attr("sections", "ints", None, min=1, optional=True, doc="channel counts; overrides parts")),
        (1, 1),
        _split_infer,
        num_outputs=_split_outputs,
        check=_split_check,
        alias=True,
        doc="splits channels into equal parts or given sections; output k is 'name:k'",
    )
)


# ---- layout and ConvNeXt pieces -----------------------------------------------------------------


def _permute_check(a: dict) -> None:
    dims = a["dims"]
    if sorted(dims) != list(range(len(dims))) or dims[0] != 0:
        raise AttrError(f"dims must be a permutation of 0..{len(dims) - 1} that keeps the batch (0) first, got {list(dims)}", "attrs.dims")


def _permute_infer(a: dict, ins: list) -> list:
    dims, full = a["dims"], (0, *ins[0])
    if len(dims) != len(full):
        raise ShapeError(f"dims {list(dims)} do not fit a {len(full)}-d input", "attrs.dims")
    return [tuple(full[d] for d in dims[1:])]


register(
    OpDef(
        "Permute",
        "structure",
        (Attr("dims", "ints", min=0, doc="new order of all dimensions, batch (0) first; [0, 2, 3, 1] is NCHW -> NHWC"),),
        (1, 1),
        _permute_infer,
        check=_permute_check,
        alias=True,
        doc="reorders dimensions (a view, as torch's permute)",
    )
)


def scale_axis(a: dict, shape: tuple) -> int:
    """The per-sample dimension a Scale's parameters run along."""
    rank = len(shape) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if not 1 <= axis < rank:
        raise ShapeError(f"axis {a['axis']} is out of range for a {rank}-d input (or is the batch)", "attrs.axis")
    return axis - 1


def _scale_infer(a: dict, ins: list) -> list:
    scale_axis(a, ins[0])
    return checked([ins[0]])


def _scale_params(a: dict, ins: list) -> dict:
    return {"weight": (ins[0][scale_axis(a, ins[0])],)}


def _scale_cost(a: dict, ins: list, outs: list) -> OpCost:
    n = numel(outs[0])
    return OpCost(0, n, 0, {"macs": "0", "flops": f"1·numel (multiply) = {n}", "fvcore": "0 (fvcore does not count mul)"})


register(
    OpDef(
        "Scale",
        "elementwise",
        (
            Attr("axis", "int", 1, doc="dimension the parameters run along: 1 = channels of NCHW, -1 = last (channels-last)"),
            Attr("init", "float", 1e-6, doc="initial value of every parameter (ConvNeXt's layer scale: 1e-6)"),
        ),
        (1, 1),
        _scale_infer,
        _scale_cost,
        params=_scale_params,
        doc="multiplies by a learned value per channel along `axis` (layer scale)",
    )
)
register(
    OpDef(
        "StochasticDepth",
        "structure",
        (
            Attr("p", "float", 0.5, min=0.0, max=1.0, doc="probability of dropping"),
            Attr("mode", "choice", "row", choices=("row", "batch"), doc="drop single samples (row) or the whole batch"),
        ),
        (1, 1),
        _passthrough,
        alias=True,
        doc="drops a residual branch with probability p in training, scaling by 1/(1-p); identity in eval",
    )
)
