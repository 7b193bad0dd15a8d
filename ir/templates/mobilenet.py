"""MobileNet v1 (depthwise-separable convs, BN after every conv), MobileNet v2 and v3 as torchvision builds them."""

from __future__ import annotations

from convstudio.ir.templates.blocks import conv_bn_relu6, conv_norm_act, depthwise_separable, inverted_residual, inverted_residual_v3, make_divisible
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# (output channels, stride) of MobileNet v1's 13 depthwise-separable units
V1_UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# (expansion t, channels c, repeats n, first stride s) of MobileNet v2
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

# (kernel, expanded channels, output channels, SE, activation, stride) of MobileNet v3's units after the stem
V3_LARGE = (
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1), (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1), (5, 960, 160, True, "hardswish", 1),
)
V3_SMALL = (
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1),
)


@template("mobilenet_v1", "MobileNet v1: 3x3 conv then 13 depthwise-separable units, BN after every conv",
          (3, 224, 224), 1000, has_width=True, reference="Howard et al. 2017 (4.2 M params, 569 M mult-adds at width 1.0)")
def mobilenet_v1(input_shape, num_classes, width=1.0):
    b = Builder("mobilenet_v1")
    x = b.input("x", input_shape)
    channels = max(8, int(32 * width))
    with b.group("features_0"):
        x = b.op("Conv2d", x, "features_0_0", out_channels=channels, kernel_size=3, stride=2, padding=1, bias=False)
        x = b.op("BatchNorm2d", x, "features_0_1")
        x = b.op("ReLU", x, "features_0_2")
    for index, (out, stride) in enumerate(V1_UNITS, start=1):
        out = max(8, int(out * width))
        with b.scope(f"features_{index}", group=True):
            x = depthwise_separable(b, x, channels, out_channels=out, stride=stride)
        channels = out
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("mobilenet_v2", "MobileNet v2: inverted residuals with linear bottlenecks", (3, 224, 224), 1000,
          has_width=True, reference="torchvision.models.mobilenet_v2")
def mobilenet_v2(input_shape, num_classes, width=1.0):
    b = Builder("mobilenet_v2")
    x = b.input("x", input_shape)
    channels = make_divisible(32 * width)
    with b.group("features_0"):
        x = conv_bn_relu6(b, x, "features_0", channels, 3, stride=2)
    index = 1
    for t, c, n, s in V2_SETTINGS:
        out = make_divisible(c * width)
        for i in range(n):
            with b.scope(f"features_{index}", group=True):
                x = inverted_residual(b, x, channels, out_channels=out, stride=s if i == 0 else 1, expansion=t)
            channels, index = out, index + 1
    with b.group(f"features_{index}"):
        x = conv_bn_relu6(b, x, f"features_{index}", make_divisible(1280 * max(1.0, width)), 1)
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Dropout", x, "classifier_0", p=0.2)
        x = b.op("Linear", x, "classifier_1", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


def mobilenet_v3(name: str, units, last_channel: int, input_shape, num_classes: int, width: float):
    """Hardswish stem, inverted residuals with optional hard-sigmoid SE, 1x1 conv to 6x, pool, Linear-hardswish-dropout-Linear."""
    b = Builder(name)
    x = b.input("x", input_shape)
    channels = make_divisible(16 * width)
    norm = {"eps": 0.001, "momentum": 0.01}
    with b.group("features_0"):
        x = conv_norm_act(b, x, "features_0", channels, 3, stride=2, activation="Hardswish", **norm)
    for index, (kernel, expanded, out, se, activation, stride) in enumerate(units, start=1):
        out = make_divisible(out * width)
        with b.scope(f"features_{index}", group=True):
            x = inverted_residual_v3(b, x, channels, out_channels=out, stride=stride, expanded_channels=make_divisible(expanded * width),
                                     kernel_size=kernel, se=se, activation=activation)
        channels = out
    with b.group(f"features_{len(units) + 1}"):
        x = conv_norm_act(b, x, f"features_{len(units) + 1}", 6 * channels, 1, activation="Hardswish", **norm)
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "classifier_0", out_features=make_divisible(last_channel * width))
        x = b.op("Hardswish", x, "classifier_1")
        x = b.op("Dropout", x, "classifier_2", p=0.2)
        x = b.op("Linear", x, "classifier_3", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("mobilenet_v3_large", "MobileNet v3 large: inverted residuals with hard-sigmoid SE and hardswish", (3, 224, 224), 1000,
          has_width=True, reference="torchvision.models.mobilenet_v3_large")
def mobilenet_v3_large(input_shape, num_classes, width=1.0):
    return mobilenet_v3("mobilenet_v3_large", V3_LARGE, 1280, input_shape, num_classes, width)


@template("mobilenet_v3_small", "MobileNet v3 small: inverted residuals with hard-sigmoid SE and hardswish", (3, 224, 224), 1000,
          has_width=True, reference="torchvision.models.mobilenet_v3_small")
def mobilenet_v3_small(input_shape, num_classes, width=1.0):
    return mobilenet_v3("mobilenet_v3_small", V3_SMALL, 1024, input_shape, num_classes, width)
