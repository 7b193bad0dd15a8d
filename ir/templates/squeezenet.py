"""SqueezeNet 1.1 as torchvision builds it: Fire modules and a convolutional classifier."""

from __future__ import annotations

from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template


def fire(b: Builder, x: str, squeeze: int, expand1x1: int, expand3x3: int) -> str:
    """Fire module: 1x1 squeeze, then parallel 1x1 and 3x3 expands concatenated."""
    s = b.op("Conv2d", x, "squeeze", out_channels=squeeze, kernel_size=1)
    s = b.op("ReLU", s, "squeeze_activation")
    e1 = b.op("Conv2d", s, "expand1x1", out_channels=expand1x1, kernel_size=1)
    e1 = b.op("ReLU", e1, "expand1x1_activation")
    e3 = b.op("Conv2d", s, "expand3x3", out_channels=expand3x3, kernel_size=3, padding=1)
    e3 = b.op("ReLU", e3, "expand3x3_activation")
    return b.op("Concat", [e1, e3], "cat", dim=1)


FIRES = {3: (16, 64, 64), 4: (16, 64, 64), 6: (32, 128, 128), 7: (32, 128, 128),
         9: (48, 192, 192), 10: (48, 192, 192), 11: (64, 256, 256), 12: (64, 256, 256)}


@template("squeezenet1_1", "SqueezeNet 1.1 (Fire modules, 1x1 conv classifier)", (3, 224, 224), 1000,
          reference="torchvision.models.squeezenet1_1")
def squeezenet1_1(input_shape, num_classes):
    b = Builder("squeezenet1_1")
    x = b.input("x", input_shape)
    x = b.op("Conv2d", x, "features_0", out_channels=64, kernel_size=3, stride=2)
    x = b.op("ReLU", x, "features_1")
    for index in range(2, 13):
        if index in FIRES:
            with b.scope(f"features_{index}", group=True):
                x = fire(b, x, *FIRES[index])
        else:
            x = b.op("MaxPool2d", x, f"features_{index}", kernel_size=3, stride=2, ceil_mode=True)
    x = b.op("Dropout", x, "classifier_0", p=0.5)
    x = b.op("Conv2d", x, "classifier_1", out_channels=num_classes, kernel_size=1)
    x = b.op("ReLU", x, "classifier_2")
    x = b.op("GlobalAvgPool", x, "classifier_3")
    x = b.op("Flatten", x, "flatten")
    b.output(x, "logits")
    return b.graph
