"""Insertable blocks: residual (basic, bottleneck), inception, depthwise-separable, inverted residual, SE, shuffle unit.

Each block adds nodes after value `x`, which has `channels` channels, and returns its output reference.
Inside a block, node names follow torchvision's module paths (conv1, bn1, downsample_0, branch2_0_conv, ...),
so a template assembled from these blocks reads like the torchvision model it mirrors.
"""

from __future__ import annotations

from convstudio.ir.errors import AttrError
from convstudio.ir.graph import make_ref
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import block


def need_int(value, option: str, minimum: int) -> int:
    """Check a numeric block option before it is used in arithmetic."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AttrError(f"{option} must be an integer >= {minimum}, got {value!r}", f"block option {option}")
    return value


def resolve_out(channels: int, out_channels) -> int:
    """`out_channels`, or the input's channel count when it is None."""
    return channels if out_channels is None else need_int(out_channels, "out_channels", 1)


def shortcut(b: Builder, x: str, channels: int, out: int, stride: int) -> str:
    """Identity, or a strided 1x1 conv + BN projection when the shape changes (torchvision's `downsample`)."""
    if stride == 1 and channels == out:
        return x
    s = b.op("Conv2d", x, "downsample_0", out_channels=out, kernel_size=1, stride=stride, bias=False)
    return b.op("BatchNorm2d", s, "downsample_1")


@block("basic_residual", "ResNet basic block: two 3x3 conv+BN with an identity or projection shortcut", out_channels=None, stride=1)
def basic_residual(b: Builder, x: str, channels: int, out_channels=None, stride=1) -> str:
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    y = b.op("Conv2d", x, "conv1", out_channels=out, kernel_size=3, stride=stride, padding=1, bias=False)
    y = b.op("BatchNorm2d", y, "bn1")
    y = b.op("ReLU", y, "relu1")
    y = b.op("Conv2d", y, "conv2", out_channels=out, kernel_size=3, padding=1, bias=False)
    y = b.op("BatchNorm2d", y, "bn2")
    y = b.op("Add", [y, shortcut(b, x, channels, out, stride)], "add")
    return b.op("ReLU", y, "relu2")


@block(
    "bottleneck_residual",
    "ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (strided, optionally grouped), 1x1 expand, optional SE, shortcut",
    out_channels=None,
    stride=1,
    expansion=4,
    groups=1,
    base_width=64,
    se_reduction=0,
)
def bottleneck_residual(
    b: Builder, x: str, channels: int, out_channels=None, stride=1, expansion=4, groups=1, base_width=64, se_reduction=0
) -> str:
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    need_int(expansion, "expansion", 1)
    need_int(groups, "groups", 1)
    need_int(base_width, "base_width", 1)
    need_int(se_reduction, "se_reduction", 0)
    if out % expansion:
        raise AttrError(f"out_channels ({out}) must be a multiple of expansion ({expansion})", "block option out_channels")
    width = int(out // expansion * (base_width / 64.0)) * groups
    y = b.op("Conv2d", x, "conv1", out_channels=width, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, "bn1")
    y = b.op("ReLU", y, "relu1")
    y = b.op("Conv2d", y, "conv2", out_channels=width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
    y = b.op("BatchNorm2d", y, "bn2")
    y = b.op("ReLU", y, "relu2")
    y = b.op("Conv2d", y, "conv3", out_channels=out, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, "bn3")
    if se_reduction:
        with b.scope("se"):
            y = squeeze_excitation(b, y, out, reduction=se_reduction)
    y = b.op("Add", [y, shortcut(b, x, channels, out, stride)], "add")
    return b.op("ReLU", y, "relu3")


@block("se", "Squeeze-and-excitation: global pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid gate scaling the channels", reduction=16)
def squeeze_excitation(b: Builder, x: str, channels: int, reduction=16) -> str:
    squeeze = max(1, channels // need_int(reduction, "reduction", 1))
    s = b.op("GlobalAvgPool", x, "avgpool")
    s = b.op("Conv2d", s, "fc1", out_channels=squeeze, kernel_size=1)
    s = b.op("ReLU", s, "activation")
    s = b.op("Conv2d", s, "fc2", out_channels=channels, kernel_size=1)
    s = b.op("Sigmoid", s, "scale_activation")
    return b.op("Mul", [x, s], "scale")


def basic_conv(b: Builder, x: str, out: int, kernel_size: int, stride: int = 1, padding: int = 0) -> str:
    """GoogLeNet's BasicConv2d: conv without bias, BN (eps 0.001), ReLU."""
    y = b.op("Conv2d", x, "conv", out_channels=out, kernel_size=kernel_size, stride=stride, padding=padding, bias=False)
    y = b.op("BatchNorm2d", y, "bn", eps=0.001)
    return b.op("ReLU", y, "relu")


@block(
    "inception",
    "Inception v1 module: 1x1, 1x1->3x3, 1x1->3x3 and maxpool->1x1 branches concatenated",
    ch1x1=64,
    ch3x3red=96,
    ch3x3=128,
    ch5x5red=16,
    ch5x5=32,
    pool_proj=32,
    stride=1,
)
def inception(b: Builder, x: str, channels: int, ch1x1=64, ch3x3red=96, ch3x3=128, ch5x5red=16, ch5x5=32, pool_proj=32, stride=1) -> str:
    need_int(stride, "stride", 1)
    with b.scope("branch1"):
        b1 = basic_conv(b, x, ch1x1, 1, stride=stride)
    branches = [b1]
    for name, reduce, out in (("branch2", ch3x3red, ch3x3), ("branch3", ch5x5red, ch5x5)):
        with b.scope(f"{name}_0"):
            y = basic_conv(b, x, reduce, 1)
        with b.scope(f"{name}_1"):
            branches.append(basic_conv(b, y, out, 3, stride=stride, padding=1))
    # ceil_mode as torchvision at stride 1; floor at stride 2 so the pool branch matches the conv branches
    y = b.op("MaxPool2d", x, "branch4_0", kernel_size=3, stride=stride, padding=1, ceil_mode=stride == 1)
    with b.scope("branch4_1"):
        branches.append(basic_conv(b, y, pool_proj, 1))
    return b.op("Concat", branches, "cat", dim=1)


@block("depthwise_separable", "MobileNet v1 unit: 3x3 depthwise conv+BN+ReLU, 1x1 pointwise conv+BN+ReLU", out_channels=None, stride=1)
def depthwise_separable(b: Builder, x: str, channels: int, out_channels=None, stride=1) -> str:
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    y = b.op("Conv2d", x, "dw_conv", out_channels=channels, kernel_size=3, stride=stride, padding=1, groups=channels, bias=False)
    y = b.op("BatchNorm2d", y, "dw_bn")
    y = b.op("ReLU", y, "dw_relu")
    y = b.op("Conv2d", y, "pw_conv", out_channels=out, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, "pw_bn")
    return b.op("ReLU", y, "pw_relu")


def conv_bn_relu6(b: Builder, x: str, name: str, out: int, kernel_size: int, stride: int = 1, groups: int = 1) -> str:
    """torchvision's Conv2dNormActivation with ReLU6: names <name>_0 (conv), <name>_1 (BN), <name>_2 (ReLU6)."""
    y = b.op(
        "Conv2d", x, f"{name}_0", out_channels=out, kernel_size=kernel_size, stride=stride,
        padding=(kernel_size - 1) // 2, groups=groups, bias=False,
    )
    y = b.op("BatchNorm2d", y, f"{name}_1")
    return b.op("ReLU6", y, f"{name}_2")


@block(
    "inverted_residual",
    "MobileNet v2 unit: 1x1 expand+ReLU6, 3x3 depthwise+ReLU6, 1x1 linear projection, residual when shapes match",
    out_channels=None,
    stride=1,
    expansion=6,
)
def inverted_residual(b: Builder, x: str, channels: int, out_channels=None, stride=1, expansion=6) -> str:
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    if isinstance(expansion, bool) or not isinstance(expansion, (int, float)) or expansion < 1:
        raise AttrError(f"expansion must be a number >= 1, got {expansion!r}", "block option expansion")
    hidden = int(round(channels * expansion))
    y, index = x, 0
    if expansion != 1:
        y = conv_bn_relu6(b, y, "conv_0", hidden, 1)
        index = 1
    y = conv_bn_relu6(b, y, f"conv_{index}", hidden, 3, stride=stride, groups=hidden)
    y = b.op("Conv2d", y, f"conv_{index + 1}", out_channels=out, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, f"conv_{index + 2}")
    if stride == 1 and channels == out:
        y = b.op("Add", [x, y], "add")
    return y


@block(
    "shuffle_unit",
    "ShuffleNet v2 unit: channel split (stride 1) or two strided branches (stride 2), concat, channel shuffle",
    out_channels=None,
    stride=1,
)
def shuffle_unit(b: Builder, x: str, channels: int, out_channels=None, stride=1) -> str:
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    if out % 2:
        raise AttrError(f"out_channels ({out}) must be even", "block option out_channels")
    half = out // 2
    if stride == 1:
        if channels != out:
            raise AttrError(f"a stride-1 shuffle unit keeps its {channels} channels, out_channels is {out}", "block option out_channels")
        split = b.op("ChannelSplit", x, "chunk", parts=2)
        left, right = make_ref(split, 0), make_ref(split, 1)
    else:
        y = b.op("Conv2d", x, "branch1_0", out_channels=channels, kernel_size=3, stride=stride, padding=1, groups=channels, bias=False)
        y = b.op("BatchNorm2d", y, "branch1_1")
        y = b.op("Conv2d", y, "branch1_2", out_channels=half, kernel_size=1, bias=False)
        y = b.op("BatchNorm2d", y, "branch1_3")
        left, right = b.op("ReLU", y, "branch1_4"), x
    y = b.op("Conv2d", right, "branch2_0", out_channels=half, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, "branch2_1")
    y = b.op("ReLU", y, "branch2_2")
    y = b.op("Conv2d", y, "branch2_3", out_channels=half, kernel_size=3, stride=stride, padding=1, groups=half, bias=False)
    y = b.op("BatchNorm2d", y, "branch2_4")
    y = b.op("Conv2d", y, "branch2_5", out_channels=half, kernel_size=1, bias=False)
    y = b.op("BatchNorm2d", y, "branch2_6")
    y = b.op("ReLU", y, "branch2_7")
    y = b.op("Concat", [left, y], "cat", dim=1)
    return b.op("ChannelShuffle", y, "shuffle", groups=2)
