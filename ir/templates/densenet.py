"""DenseNet as torchvision builds it: dense blocks joined by transitions (BN, ReLU, 1x1 conv halving the channels, 2x2 avg pool)."""

from __future__ import annotations

from convstudio.ir.graph import Graph
from convstudio.ir.templates.blocks import dense_block
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template


def densenet(name: str, growth_rate: int, block_config, num_init_features: int, input_shape, num_classes: int, bn_size: int = 4) -> Graph:
    """Stem (7x7 conv, BN, ReLU, max pool), dense blocks and transitions, final BN, ReLU, global pool and classifier."""
    b = Builder(name)
    x = b.input("x", input_shape)
    with b.scope("features"):
        with b.group("stem"):
            x = b.op("Conv2d", x, "conv0", out_channels=num_init_features, kernel_size=7, stride=2, padding=3, bias=False)
            x = b.op("BatchNorm2d", x, "norm0")
            x = b.op("ReLU", x, "relu0")
            x = b.op("MaxPool2d", x, "pool0", kernel_size=3, stride=2, padding=1)
        channels = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            with b.scope(f"denseblock{i}", group=True):
                x = dense_block(b, x, channels, num_layers=num_layers, growth_rate=growth_rate, bn_size=bn_size)
            channels += num_layers * growth_rate
            if i < len(block_config):
                with b.scope(f"transition{i}", group=True):
                    x = b.op("BatchNorm2d", x, "norm")
                    x = b.op("ReLU", x, "relu")
                    x = b.op("Conv2d", x, "conv", out_channels=channels // 2, kernel_size=1, bias=False)
                    x = b.op("AvgPool2d", x, "pool", kernel_size=2, stride=2)
                channels //= 2
    with b.group("head"):
        with b.scope("features"):
            x = b.op("BatchNorm2d", x, "norm5")
        x = b.op("ReLU", x, "relu")
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "classifier", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("densenet121", "DenseNet-121 (dense blocks 6-12-24-16, growth rate 32)", (3, 224, 224), 1000,
          reference="torchvision.models.densenet121")
def densenet121(input_shape, num_classes):
    return densenet("densenet121", 32, (6, 12, 24, 16), 64, input_shape, num_classes)
