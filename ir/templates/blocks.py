"""Insertable blocks: residual (basic, bottleneck), inception, depthwise-separable, inverted residual (v2, v3), SE, shuffle
unit, dense block, RegNet Y, EfficientNet MBConv and ConvNeXt block.

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


def need_number(value, option: str, minimum: float, inclusive: bool = True) -> float:
    """Check a real-valued block option against its lower bound."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or (not inclusive and value == minimum)
    if bad:
        raise AttrError(f"{option} must be a number {'>=' if inclusive else '>'} {minimum}, got {value!r}", f"block option {option}")
    return value


def need_choice(value, option: str, choices: dict):
    """Map a string option through `choices`, naming the accepted values when it is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise AttrError(f"{option} must be one of {', '.join(choices)}, got {value!r}", f"block option {option}")
    return choices[value]


def need_odd(value, option: str) -> int:
    """A kernel size whose 'same' padding (k - 1) // 2 keeps the spatial size."""
    if need_int(value, option, 1) % 2 == 0:
        raise AttrError(f"{option} must be odd, got {value}", f"block option {option}")
    return value


def need_probability(value, option: str) -> float:
    """A drop probability in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise AttrError(f"{option} must be a probability in [0, 1], got {value!r}", f"block option {option}")
    return value


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


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
    return squeeze_excite(b, x, channels, max(1, channels // need_int(reduction, "reduction", 1)))


def squeeze_excite(b: Builder, x: str, channels: int, squeeze: int, activation: str = "ReLU", gate: str = "Sigmoid") -> str:
    """torchvision's SqueezeExcitation: avgpool, fc1 (1x1 to `squeeze`), activation, fc2, scale_activation, x * gate."""
    s = b.op("GlobalAvgPool", x, "avgpool")
    s = b.op("Conv2d", s, "fc1", out_channels=squeeze, kernel_size=1)
    s = b.op(activation, s, "activation")
    s = b.op("Conv2d", s, "fc2", out_channels=channels, kernel_size=1)
    s = b.op(gate, s, "scale_activation")
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
    return conv_norm_act(b, x, name, out, kernel_size, stride, groups, "ReLU6")


def conv_norm_act(
    b: Builder, x: str, name: str, out: int, kernel_size: int, stride: int = 1, groups: int = 1, activation: str | None = "ReLU", **norm
) -> str:
    """torchvision's Conv2dNormActivation: <name>_0 conv ('same' padding, no bias), <name>_1 BN (`norm` attrs), <name>_2 activation."""
    y = b.op(
        "Conv2d", x, f"{name}_0", out_channels=out, kernel_size=kernel_size, stride=stride,
        padding=(kernel_size - 1) // 2, groups=groups, bias=False,
    )
    y = b.op("BatchNorm2d", y, f"{name}_1", **norm)
    return b.op(activation, y, f"{name}_2") if activation else y


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


@block(
    "dense_block",
    "DenseNet dense block: each layer (BN, ReLU, 1x1, BN, ReLU, 3x3) reads the concat of all before it and adds growth_rate channels",
    num_layers=6,
    growth_rate=32,
    bn_size=4,
)
def dense_block(b: Builder, x: str, channels: int, num_layers=6, growth_rate=32, bn_size=4) -> str:
    need_int(num_layers, "num_layers", 1)
    need_int(growth_rate, "growth_rate", 1)
    need_int(bn_size, "bn_size", 1)
    features = [x]
    for i in range(1, num_layers + 1):
        with b.scope(f"denselayer{i}"):
            y = b.op("Concat", features, "cat", dim=1) if len(features) > 1 else x
            y = b.op("BatchNorm2d", y, "norm1")
            y = b.op("ReLU", y, "relu1")
            y = b.op("Conv2d", y, "conv1", out_channels=bn_size * growth_rate, kernel_size=1, bias=False)
            y = b.op("BatchNorm2d", y, "norm2")
            y = b.op("ReLU", y, "relu2")
            features.append(b.op("Conv2d", y, "conv2", out_channels=growth_rate, kernel_size=3, padding=1, bias=False))
    return b.op("Concat", features, "cat", dim=1)


V3_ACTIVATIONS = {"relu": "ReLU", "hardswish": "Hardswish"}


@block(
    "inverted_residual_v3",
    "MobileNet v3 unit: 1x1 expand, kxk depthwise, optional SE with hard-sigmoid gate, 1x1 projection; ReLU or hardswish",
    out_channels=None,
    stride=1,
    expanded_channels=None,
    kernel_size=3,
    se=True,
    activation="hardswish",
)
def inverted_residual_v3(
    b: Builder, x: str, channels: int, out_channels=None, stride=1, expanded_channels=None, kernel_size=3, se=True, activation="hardswish"
) -> str:
    """Names as torchvision's InvertedResidual: block_<i>_0/1/2 per conv, block_<i>_fc1 ... for the SE; BN eps 0.001, momentum 0.01."""
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    expanded = 4 * channels if expanded_channels is None else need_int(expanded_channels, "expanded_channels", 1)
    need_odd(kernel_size, "kernel_size")
    if not isinstance(se, bool):
        raise AttrError(f"se must be true or false, got {se!r}", "block option se")
    act = need_choice(activation, "activation", V3_ACTIVATIONS)
    norm = {"eps": 0.001, "momentum": 0.01}
    y, index = x, 0
    if expanded != channels:
        y, index = conv_norm_act(b, y, "block_0", expanded, 1, activation=act, **norm), 1
    y = conv_norm_act(b, y, f"block_{index}", expanded, kernel_size, stride, groups=expanded, activation=act, **norm)
    index += 1
    if se:
        with b.scope(f"block_{index}"):
            y = squeeze_excite(b, y, expanded, make_divisible(expanded // 4), gate="Hardsigmoid")
        index += 1
    y = conv_norm_act(b, y, f"block_{index}", out, 1, activation=None, **norm)
    if stride == 1 and channels == out:
        y = b.op("Add", [y, x], "add")
    return y


@block(
    "regnet_y",
    "RegNet Y block: 1x1, grouped 3x3 (fixed group width), SE, 1x1, plus identity or projection shortcut, ReLU",
    out_channels=None,
    stride=1,
    group_width=8,
    bottleneck_multiplier=1.0,
    se_ratio=0.25,
)
def regnet_y(b: Builder, x: str, channels: int, out_channels=None, stride=1, group_width=8, bottleneck_multiplier=1.0, se_ratio=0.25) -> str:
    """torchvision's ResBottleneckBlock with SE: names proj_0/1, f_a_0/1/2, f_b_*, f_se_*, f_c_0/1, activation."""
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    need_int(group_width, "group_width", 1)
    need_number(bottleneck_multiplier, "bottleneck_multiplier", 0, inclusive=False)
    need_number(se_ratio, "se_ratio", 0)
    width = int(round(out * bottleneck_multiplier))
    if width % group_width:
        raise AttrError(f"the bottleneck width {width} must be a multiple of group_width ({group_width})", "block option group_width")
    short = x if channels == out and stride == 1 else conv_norm_act(b, x, "proj", out, 1, stride, activation=None)
    y = conv_norm_act(b, x, "f_a", width, 1)
    y = conv_norm_act(b, y, "f_b", width, 3, stride, groups=width // group_width)
    if se_ratio:
        with b.scope("f_se"):
            y = squeeze_excite(b, y, width, max(1, int(round(se_ratio * channels))))
    y = conv_norm_act(b, y, "f_c", out, 1, activation=None)
    y = b.op("Add", [short, y], "add")
    return b.op("ReLU", y, "activation")


@block(
    "mbconv",
    "EfficientNet MBConv: 1x1 expand, kxk depthwise, SE (SiLU, sigmoid gate), 1x1 projection, stochastic depth on the residual; SiLU",
    out_channels=None,
    stride=1,
    expansion=6,
    kernel_size=3,
    stochastic_depth=0.0,
)
def mbconv(b: Builder, x: str, channels: int, out_channels=None, stride=1, expansion=6, kernel_size=3, stochastic_depth=0.0) -> str:
    """torchvision's MBConv: block_<i>_0/1/2 per conv, block_<i>_fc1 ... for the SE (squeeze to a quarter of the input channels)."""
    out = resolve_out(channels, out_channels)
    need_int(stride, "stride", 1)
    need_number(expansion, "expansion", 1)
    need_odd(kernel_size, "kernel_size")
    need_probability(stochastic_depth, "stochastic_depth")
    expanded = make_divisible(channels * expansion)
    y, index = x, 0
    if expanded != channels:
        y, index = conv_norm_act(b, y, "block_0", expanded, 1, activation="SiLU"), 1
    y = conv_norm_act(b, y, f"block_{index}", expanded, kernel_size, stride, groups=expanded, activation="SiLU")
    with b.scope(f"block_{index + 1}"):
        y = squeeze_excite(b, y, expanded, max(1, channels // 4), activation="SiLU")
    y = conv_norm_act(b, y, f"block_{index + 2}", out, 1, activation=None)
    if stride == 1 and channels == out:
        y = b.op("StochasticDepth", y, "stochastic_depth", p=stochastic_depth)
        y = b.op("Add", [y, x], "add")
    return y


@block(
    "convnext_block",
    "ConvNeXt block: 7x7 depthwise, channels-last LayerNorm, Linear to 4x, GELU, Linear back, layer scale, stochastic depth, residual",
    layer_scale=1e-6,
    stochastic_depth=0.0,
)
def convnext_block(b: Builder, x: str, channels: int, layer_scale=1e-6, stochastic_depth=0.0) -> str:
    """torchvision's CNBlock: block_0 .. block_6 as its Sequential, then layer_scale, stochastic_depth and the residual add."""
    need_number(layer_scale, "layer_scale", 0, inclusive=False)
    need_probability(stochastic_depth, "stochastic_depth")
    y = b.op("Conv2d", x, "block_0", out_channels=channels, kernel_size=7, padding=3, groups=channels)
    y = b.op("Permute", y, "block_1", dims=[0, 2, 3, 1])
    y = b.op("LayerNorm", y, "block_2", eps=1e-6, channels_last=True)
    y = b.op("Linear", y, "block_3", out_features=4 * channels)
    y = b.op("GELU", y, "block_4")
    y = b.op("Linear", y, "block_5", out_features=channels)
    y = b.op("Permute", y, "block_6", dims=[0, 3, 1, 2])
    y = b.op("Scale", y, "layer_scale", init=layer_scale)
    y = b.op("StochasticDepth", y, "stochastic_depth", p=stochastic_depth)
    return b.op("Add", [y, x], "add")
