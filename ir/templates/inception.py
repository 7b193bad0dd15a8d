"""GoogLeNet (Inception v1) and Inception v3 as torchvision builds them, without the auxiliary heads."""

from __future__ import annotations

from convstudio.ir.templates.blocks import basic_conv, inception
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# module name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), or a max pool's kernel size
STAGES = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", 3),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", 2),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)


@template("googlenet", "GoogLeNet / Inception v1 (BN variant, no auxiliary heads)", (3, 224, 224), 1000,
          reference="torchvision.models.googlenet(aux_logits=False)")
def googlenet(input_shape, num_classes):
    b = Builder("googlenet")
    x = b.input("x", input_shape)
    with b.group("stem"):
        with b.scope("conv1"):
            x = basic_conv(b, x, 64, 7, stride=2, padding=3)
        x = b.op("MaxPool2d", x, "maxpool1", kernel_size=3, stride=2, ceil_mode=True)
        with b.scope("conv2"):
            x = basic_conv(b, x, 64, 1)
        with b.scope("conv3"):
            x = basic_conv(b, x, 192, 3, padding=1)
        x = b.op("MaxPool2d", x, "maxpool2", kernel_size=3, stride=2, ceil_mode=True)
    channels = 192
    for name, spec in STAGES:
        if isinstance(spec, int):
            x = b.op("MaxPool2d", x, name, kernel_size=spec, stride=2, ceil_mode=True)
            continue
        with b.scope(name, group=True):
            x = inception(b, x, channels, *spec)
        channels = spec[0] + spec[2] + spec[4] + spec[5]
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Dropout", x, "dropout", p=0.2)
        x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


def conv(b: Builder, x: str, name: str, out: int, kernel_size, stride: int = 1, padding=0) -> str:
    """A BasicConv2d named `name` (name_conv, name_bn, name_relu)."""
    with b.scope(name):
        return basic_conv(b, x, out, kernel_size, stride=stride, padding=padding)


def factorized(b: Builder, x: str, prefix: str, out: int, first: str) -> str:
    """A 1x7 or 7x1 conv (as `first` says) with the padding that keeps the size."""
    return conv(b, x, prefix, out, (1, 7), padding=(0, 3)) if first == "1x7" else conv(b, x, prefix, out, (7, 1), padding=(3, 0))


def pool_branch(b: Builder, x: str, out: int) -> str:
    """3x3 average pool at stride 1 (padding counted, as F.avg_pool2d) and a 1x1 BasicConv2d."""
    y = b.op("AvgPool2d", x, "avg_pool2d", kernel_size=3, stride=1, padding=1)
    return conv(b, y, "branch_pool", out, 1)


def inception_a(b: Builder, x: str, pool_features: int) -> str:
    b1 = conv(b, x, "branch1x1", 64, 1)
    b5 = conv(b, conv(b, x, "branch5x5_1", 48, 1), "branch5x5_2", 64, 5, padding=2)
    b3 = conv(b, x, "branch3x3dbl_1", 64, 1)
    b3 = conv(b, conv(b, b3, "branch3x3dbl_2", 96, 3, padding=1), "branch3x3dbl_3", 96, 3, padding=1)
    return b.op("Concat", [b1, b5, b3, pool_branch(b, x, pool_features)], "cat", dim=1)


def inception_b(b: Builder, x: str) -> str:
    b3 = conv(b, x, "branch3x3", 384, 3, stride=2)
    d = conv(b, x, "branch3x3dbl_1", 64, 1)
    d = conv(b, conv(b, d, "branch3x3dbl_2", 96, 3, padding=1), "branch3x3dbl_3", 96, 3, stride=2)
    pool = b.op("MaxPool2d", x, "max_pool2d", kernel_size=3, stride=2)
    return b.op("Concat", [b3, d, pool], "cat", dim=1)


def inception_c(b: Builder, x: str, channels_7x7: int) -> str:
    c7 = channels_7x7
    b1 = conv(b, x, "branch1x1", 192, 1)
    b7 = conv(b, x, "branch7x7_1", c7, 1)
    b7 = factorized(b, factorized(b, b7, "branch7x7_2", c7, "1x7"), "branch7x7_3", 192, "7x1")
    d = conv(b, x, "branch7x7dbl_1", c7, 1)
    for i, (out, first) in enumerate(((c7, "7x1"), (c7, "1x7"), (c7, "7x1"), (192, "1x7")), start=2):
        d = factorized(b, d, f"branch7x7dbl_{i}", out, first)
    return b.op("Concat", [b1, b7, d, pool_branch(b, x, 192)], "cat", dim=1)


def inception_d(b: Builder, x: str) -> str:
    b3 = conv(b, conv(b, x, "branch3x3_1", 192, 1), "branch3x3_2", 320, 3, stride=2)
    b7 = conv(b, x, "branch7x7x3_1", 192, 1)
    b7 = factorized(b, factorized(b, b7, "branch7x7x3_2", 192, "1x7"), "branch7x7x3_3", 192, "7x1")
    b7 = conv(b, b7, "branch7x7x3_4", 192, 3, stride=2)
    pool = b.op("MaxPool2d", x, "max_pool2d", kernel_size=3, stride=2)
    return b.op("Concat", [b3, b7, pool], "cat", dim=1)


def split_1x3_3x1(b: Builder, x: str, prefix: str, name: str) -> str:
    """InceptionE's fork: a 1x3 and a 3x1 conv of 384 channels side by side, concatenated."""
    a = conv(b, x, f"{prefix}a", 384, (1, 3), padding=(0, 1))
    c = conv(b, x, f"{prefix}b", 384, (3, 1), padding=(1, 0))
    return b.op("Concat", [a, c], name, dim=1)


def inception_e(b: Builder, x: str) -> str:
    b1 = conv(b, x, "branch1x1", 320, 1)
    b3 = split_1x3_3x1(b, conv(b, x, "branch3x3_1", 384, 1), "branch3x3_2", "branch3x3_cat")
    d = conv(b, conv(b, x, "branch3x3dbl_1", 448, 1), "branch3x3dbl_2", 384, 3, padding=1)
    d = split_1x3_3x1(b, d, "branch3x3dbl_3", "branch3x3dbl_cat")
    return b.op("Concat", [b1, b3, d, pool_branch(b, x, 192)], "cat", dim=1)


# module name -> (InceptionA..E builder, its extra argument)
V3_MIXED = (
    ("Mixed_5b", inception_a, 32), ("Mixed_5c", inception_a, 64), ("Mixed_5d", inception_a, 64), ("Mixed_6a", inception_b, None),
    ("Mixed_6b", inception_c, 128), ("Mixed_6c", inception_c, 160), ("Mixed_6d", inception_c, 160), ("Mixed_6e", inception_c, 192),
    ("Mixed_7a", inception_d, None), ("Mixed_7b", inception_e, None), ("Mixed_7c", inception_e, None),
)


@template("inception_v3", "Inception v3 (factorized 7x7 and 3x3 branches, no auxiliary head)", (3, 299, 299), 1000,
          reference="torchvision.models.inception_v3(aux_logits=False, transform_input=False)", min_side=75)
def inception_v3(input_shape, num_classes):
    b = Builder("inception_v3")
    x = b.input("x", input_shape)
    with b.group("stem"):
        x = conv(b, x, "Conv2d_1a_3x3", 32, 3, stride=2)
        x = conv(b, x, "Conv2d_2a_3x3", 32, 3)
        x = conv(b, x, "Conv2d_2b_3x3", 64, 3, padding=1)
        x = b.op("MaxPool2d", x, "maxpool1", kernel_size=3, stride=2)
        x = conv(b, x, "Conv2d_3b_1x1", 80, 1)
        x = conv(b, x, "Conv2d_4a_3x3", 192, 3)
        x = b.op("MaxPool2d", x, "maxpool2", kernel_size=3, stride=2)
    for name, unit, arg in V3_MIXED:
        with b.scope(name, group=True):
            x = unit(b, x) if arg is None else unit(b, x, arg)
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Dropout", x, "dropout", p=0.5)
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
