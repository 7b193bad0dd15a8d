"""VGG-16 with and without batch norm, as torchvision builds it (configuration D)."""

from __future__ import annotations

from convstudio.ir.graph import Graph
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg(name: str, batch_norm: bool, input_shape, num_classes: int) -> Graph:
    """`features_i` as torchvision's Sequential indices, adaptive pool to 7x7, three-layer classifier."""
    b = Builder(name)
    x = b.input("x", input_shape)
    index = 0
    for v in CONFIG_D:
        if v == "M":
            x = b.op("MaxPool2d", x, f"features_{index}", kernel_size=2, stride=2)
            index += 1
            continue
        x = b.op("Conv2d", x, f"features_{index}", out_channels=v, kernel_size=3, padding=1)
        index += 1
        if batch_norm:
            x = b.op("BatchNorm2d", x, f"features_{index}")
            index += 1
        x = b.op("ReLU", x, f"features_{index}")
        index += 1
    x = b.op("AdaptiveAvgPool2d", x, "avgpool", output_size=7)
    x = b.op("Flatten", x, "flatten")
    x = b.op("Linear", x, "classifier_0", out_features=4096)
    x = b.op("ReLU", x, "classifier_1")
    x = b.op("Dropout", x, "classifier_2", p=0.5)
    x = b.op("Linear", x, "classifier_3", out_features=4096)
    x = b.op("ReLU", x, "classifier_4")
    x = b.op("Dropout", x, "classifier_5", p=0.5)
    x = b.op("Linear", x, "classifier_6", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("vgg16", "VGG-16 (13 3x3 convs, 3 fully connected layers)", (3, 224, 224), 1000, reference="torchvision.models.vgg16")
def vgg16(input_shape, num_classes):
    return vgg("vgg16", False, input_shape, num_classes)


@template("vgg16_bn", "VGG-16 with batch norm after every conv", (3, 224, 224), 1000, reference="torchvision.models.vgg16_bn")
def vgg16_bn(input_shape, num_classes):
    return vgg("vgg16_bn", True, input_shape, num_classes)
