"""MobileNet v1 (depthwise-separable convs, BN after every conv) and MobileNet v2 as torchvision builds it."""

from __future__ import annotations

from convstudio.ir.templates.blocks import conv_bn_relu6, depthwise_separable, inverted_residual
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# (output channels, stride) of MobileNet v1's 13 depthwise-separable units
V1_UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# (expansion t, channels c, repeats n, first stride s) of MobileNet v2
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@template("mobilenet_v1", "MobileNet v1: 3x3 conv then 13 depthwise-separable units, BN after every conv",
          (3, 224, 224), 1000, has_width=True, reference="Howard et al. 2017 (4.2 M params, 569 M mult-adds at width 1.0)")
def mobilenet_v1(input_shape, num_classes, width=1.0):
    b = Builder("mobilenet_v1")
    x = b.input("x", input_shape)
    channels = max(8, int(32 * width))
    x = b.op("Conv2d", x, "features_0_0", out_channels=channels, kernel_size=3, stride=2, padding=1, bias=False)
    x = b.op("BatchNorm2d", x, "features_0_1")
    x = b.op("ReLU", x, "features_0_2")
    for index, (out, stride) in enumerate(V1_UNITS, start=1):
        out = max(8, int(out * width))
        with b.scope(f"features_{index}"):
            x = depthwise_separable(b, x, channels, out_channels=out, stride=stride)
        channels = out
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
    x = conv_bn_relu6(b, x, "features_0", channels, 3, stride=2)
    index = 1
    for t, c, n, s in V2_SETTINGS:
        out = make_divisible(c * width)
        for i in range(n):
            with b.scope(f"features_{index}"):
                x = inverted_residual(b, x, channels, out_channels=out, stride=s if i == 0 else 1, expansion=t)
            channels, index = out, index + 1
    x = conv_bn_relu6(b, x, f"features_{index}", make_divisible(1280 * max(1.0, width)), 1)
    x = b.op("GlobalAvgPool", x, "avgpool")
    x = b.op("Flatten", x, "flatten")
    x = b.op("Dropout", x, "classifier_0", p=0.2)
    x = b.op("Linear", x, "classifier_1", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
