"""ResNet family as torchvision builds it (v1.5: the stride sits on the bottleneck's 3x3), ResNeXt and SE-ResNet."""

from __future__ import annotations

from collections.abc import Callable

from convstudio.ir.graph import Graph
from convstudio.ir.templates.blocks import basic_residual, bottleneck_residual
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

IMAGENET = (3, 224, 224)


def resnet(name: str, block: Callable[..., str], expansion: int, layers, input_shape, num_classes: int, **block_options) -> Graph:
    """Stem (7x7 conv, BN, ReLU, max pool), four stages of residual blocks, global pool and fc; each of them a group."""
    b = Builder(name)
    x = b.input("x", input_shape)
    with b.group("stem"):
        x = b.op("Conv2d", x, "conv1", out_channels=64, kernel_size=7, stride=2, padding=3, bias=False)
        x = b.op("BatchNorm2d", x, "bn1")
        x = b.op("ReLU", x, "relu")
        x = b.op("MaxPool2d", x, "maxpool", kernel_size=3, stride=2, padding=1)
    channels = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        with b.group(f"layer{stage}"):
            for i in range(blocks):
                stride = 2 if stage > 1 and i == 0 else 1
                with b.scope(f"layer{stage}_{i}", group=True):
                    x = block(b, x, channels, out_channels=planes * expansion, stride=stride, **block_options)
                channels = planes * expansion
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("resnet18", "ResNet-18 (basic blocks 2-2-2-2)", IMAGENET, 1000, reference="torchvision.models.resnet18")
def resnet18(input_shape, num_classes):
    return resnet("resnet18", basic_residual, 1, (2, 2, 2, 2), input_shape, num_classes)


@template("resnet34", "ResNet-34 (basic blocks 3-4-6-3)", IMAGENET, 1000, reference="torchvision.models.resnet34")
def resnet34(input_shape, num_classes):
    return resnet("resnet34", basic_residual, 1, (3, 4, 6, 3), input_shape, num_classes)


@template("resnet50", "ResNet-50 v1.5 (bottlenecks 3-4-6-3, stride on the 3x3)", IMAGENET, 1000, reference="torchvision.models.resnet50")
def resnet50(input_shape, num_classes):
    return resnet("resnet50", bottleneck_residual, 4, (3, 4, 6, 3), input_shape, num_classes)


@template(
    "resnext50_32x4d", "ResNeXt-50 32x4d (grouped 3x3 bottlenecks, 32 groups of width 4)", IMAGENET, 1000,
    reference="torchvision.models.resnext50_32x4d",
)
def resnext50_32x4d(input_shape, num_classes):
    return resnet("resnext50_32x4d", bottleneck_residual, 4, (3, 4, 6, 3), input_shape, num_classes, groups=32, base_width=4)


@template(
    "se_resnet50", "SE-ResNet-50 on the v1.5 layout: squeeze-and-excitation (reduction 16) before each residual add",
    IMAGENET, 1000, reference="Hu et al. 2018, on torchvision's resnet50 layout with biased 1x1 excitation convs",
)
def se_resnet50(input_shape, num_classes):
    return resnet("se_resnet50", bottleneck_residual, 4, (3, 4, 6, 3), input_shape, num_classes, se_reduction=16)
