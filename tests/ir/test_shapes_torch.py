"""Property tests: inferred shapes equal the shapes torch.nn really produces, over random attributes.

For every drawn configuration either both sides accept it and the shapes agree exactly, or both
reject it (our DesignError, torch's exception).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.errors import DesignError
from convstudio.ir.ops import registry

BATCH = 2
SETTINGS = settings(max_examples=50, deadline=None)


def ours(op: str, attrs: dict, in_shape: tuple) -> tuple | None:
    """Our per-sample output shape with the batch in front, or None when the IR rejects the config."""
    opdef = registry.get(op)
    try:
        a = opdef.resolve(opdef.validate(attrs))
        (out,) = opdef.infer(a, [in_shape])
    except DesignError:
        return None
    return (BATCH, *out)


def theirs(module_factory, in_shape: tuple) -> tuple | None:
    """torch's output shape on a real tensor, or None when torch refuses or returns an empty tensor."""
    try:
        module = module_factory()
        with torch.no_grad():
            shape = tuple(module(torch.zeros(BATCH, *in_shape)).shape)
    except (RuntimeError, ValueError):
        return None
    return shape if all(shape) else None


def agree(op: str, attrs: dict, in_shape: tuple, module_factory) -> None:
    got, expected = ours(op, attrs, in_shape), theirs(module_factory, in_shape)
    assert got == expected, f"{op} {attrs} on {in_shape}: ours {got}, torch {expected}"


sizes = st.integers(1, 20)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@SETTINGS
@given(
    groups=st.integers(1, 3),
    cin_per_group=st.integers(1, 3),
    cout_per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just("same"), st.just("valid")),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    h=sizes,
    w=sizes,
)
def test_conv2d(groups, cin_per_group, cout_per_group, kernel, stride, padding, dilation, h, w):
    cin, cout = groups * cin_per_group, groups * cout_per_group
    if padding == "same":
        stride = (1, 1)
    attrs = {"out_channels": cout, "kernel_size": list(kernel), "stride": list(stride), "dilation": list(dilation), "groups": groups,
             "padding": padding if isinstance(padding, str) else list(padding)}
    agree("Conv2d", attrs, (cin, h, w), lambda: torch.nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups))


@SETTINGS
@given(
    groups=st.integers(1, 3),
    cin_per_group=st.integers(1, 3),
    cout_per_group=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    output_padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
)
def test_conv_transpose2d(groups, cin_per_group, cout_per_group, kernel, stride, padding, dilation, output_padding, h, w):
    cin, cout = groups * cin_per_group, groups * cout_per_group
    attrs = {"out_channels": cout, "kernel_size": list(kernel), "stride": list(stride), "padding": list(padding),
             "output_padding": list(output_padding), "dilation": list(dilation), "groups": groups}
    agree("ConvTranspose2d", attrs, (cin, h, w),
          lambda: torch.nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding, groups, True, dilation))


@SETTINGS
@given(
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    ceil_mode=st.booleans(),
    h=sizes,
    w=sizes,
)
def test_maxpool2d(kernel, stride, padding, dilation, ceil_mode, h, w):
    attrs = {"kernel_size": list(kernel), "padding": list(padding), "dilation": list(dilation), "ceil_mode": ceil_mode}
    if stride is not None:
        attrs["stride"] = list(stride)
    agree("MaxPool2d", attrs, (3, h, w), lambda: torch.nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode))


@SETTINGS
@given(
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    h=sizes,
    w=sizes,
)
def test_avgpool2d(kernel, stride, padding, ceil_mode, count_include_pad, h, w):
    attrs = {"kernel_size": list(kernel), "padding": list(padding), "ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    if stride is not None:
        attrs["stride"] = list(stride)
    agree("AvgPool2d", attrs, (3, h, w), lambda: torch.nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad))


@SETTINGS
@given(
    mode=st.sampled_from(["nearest", "bilinear"]),
    align_corners=st.booleans(),
    scale=st.one_of(st.none(), st.tuples(*[st.sampled_from([0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0])] * 2)),
    size=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    h=st.integers(2, 16),
    w=st.integers(2, 16),
)
def test_upsample(mode, align_corners, scale, size, h, w):
    align = align_corners if mode == "bilinear" else None
    attrs = {"mode": mode, "align_corners": bool(align)}
    if scale is None:
        attrs["size"] = list(size)
        factory = lambda: torch.nn.Upsample(size=size, mode=mode, align_corners=align)  # noqa: E731
    else:
        attrs["scale_factor"] = list(scale)
        factory = lambda: torch.nn.Upsample(scale_factor=scale, mode=mode, align_corners=align)  # noqa: E731
    agree("Upsample", attrs, (2, h, w), factory)


@SETTINGS
@given(out=st.tuples(st.integers(1, 8), st.integers(1, 8)), h=st.integers(1, 16), w=st.integers(1, 16))
def test_adaptive_avgpool2d(out, h, w):
    agree("AdaptiveAvgPool2d", {"output_size": list(out)}, (3, h, w), lambda: torch.nn.AdaptiveAvgPool2d(out))


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    start=st.integers(1, 4),
    end=st.integers(-4, 4),
)
def test_flatten(shape, start, end):
    shape = tuple(shape)
    rank = len(shape) + 1
    if not -rank <= end < rank:
        end = -1
    agree("Flatten", {"start_dim": min(start, rank - 1), "end_dim": end}, shape,
          lambda: torch.nn.Flatten(min(start, rank - 1), end))


@pytest.mark.parametrize("shape,attrs", [((3, 7, 7), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
                                         ((1, 5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True})])
def test_ceil_mode_examples(shape, attrs):
    agree("MaxPool2d", attrs, shape, lambda: torch.nn.MaxPool2d(**attrs))


def agree_many(op: str, attrs: dict, in_shapes: list[tuple], torch_fn) -> None:
    """Like `agree` for ops with several inputs or outputs: `torch_fn(tensors)` returns a tensor or a tuple of them."""
    opdef = registry.get(op)
    try:
        a = opdef.resolve(opdef.validate(attrs))
        ours_ = [(BATCH, *s) for s in opdef.infer(a, in_shapes)]
    except DesignError:
        ours_ = None
    try:
        out = torch_fn([torch.zeros(BATCH, *s) for s in in_shapes])
        theirs_ = [tuple(t.shape) for t in (out if isinstance(out, tuple) else (out,))]
    except (RuntimeError, ValueError, IndexError):
        theirs_ = None
    assert ours_ == theirs_, f"{op} {attrs} on {in_shapes}: ours {ours_}, torch {theirs_}"


@st.composite
def broadcastable(draw) -> list[tuple]:
    """2-3 same-rank shapes whose dimensions are the base size, 1, or (sometimes) a clashing size."""
    base = draw(st.lists(st.integers(2, 5), min_size=1, max_size=3))
    count = draw(st.integers(2, 3))
    return [tuple(draw(st.sampled_from([d, 1, d + 1])) for d in base) for _ in range(count)]


@SETTINGS
@given(shapes=broadcastable(), op=st.sampled_from(["Add", "Mul"]))
def test_add_mul_broadcast(shapes, op):
    def combine(tensors):
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t if op == "Add" else out * t
        return out

    agree_many(op, {}, shapes, combine)


@SETTINGS
@given(
    base=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    dim=st.integers(-4, 3),
    clash=st.booleans(),
)
def test_concat(base, sizes, dim, clash):
    rank = len(base) + 1
    axis = dim % rank if -rank <= dim < rank else None
    shapes = []
    for k, size in enumerate(sizes):
        shape = list(base)
        if axis:
            shape[axis - 1] = size
        if clash and k == len(sizes) - 1:
            shape[-1] += 1
        shapes.append(tuple(shape))
    def concat(tensors):
        if -rank <= dim < rank and dim % rank == 0:
            raise ValueError("the IR never joins along the batch dimension")
        return torch.cat(tensors, dim)

    agree_many("Concat", {"dim": dim}, shapes, concat)


@SETTINGS
@given(channels=st.integers(1, 12), parts=st.integers(1, 4), sections=st.one_of(st.none(), st.lists(st.integers(1, 5), min_size=1, max_size=4)))
def test_channel_split(channels, parts, sections):
    if sections is None:
        attrs, sizes = {"parts": parts}, ([channels // parts] * parts if channels % parts == 0 else None)
    else:
        attrs, sizes = {"sections": sections}, (sections if sum(sections) == channels else None)
    def split(tensors):
        if sizes is None:
            raise ValueError("torch.split accepts uneven parts; the IR asks for an exact division")
        return tuple(torch.split(tensors[0], sizes, dim=1))

    agree_many("ChannelSplit", attrs, [(channels, 3, 3)], split)


@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), out_features=st.integers(1, 8), declared=st.one_of(st.none(), st.integers(1, 6)))
def test_linear(shape, out_features, declared):
    attrs = {"out_features": out_features} | ({"in_features": declared} if declared else {})
    in_features = declared or shape[-1]
    agree_many("Linear", attrs, [tuple(shape)], lambda ts: torch.nn.Linear(in_features, out_features)(ts[0]))
