"""Triplet network: one embedding CNN applied to anchor, positive and negative with shared weights."""

from __future__ import annotations

from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

BRANCHES = ("anchor", "positive", "negative")


def embedding(b: Builder, x: str, size: int) -> str:
    """Small CNN embedding; every node joins the sharing group `embedding_<layer>`."""

    def op(kind: str, inputs: str, name: str, **attrs) -> str:
        return b.op(kind, inputs, name, share=f"embedding_{name}", **attrs)

    x = op("Conv2d", x, "conv1", out_channels=32, kernel_size=3, padding=1)
    x = op("ReLU", x, "relu1")
    x = op("MaxPool2d", x, "pool1", kernel_size=2)
    x = op("Conv2d", x, "conv2", out_channels=64, kernel_size=3, padding=1)
    x = op("ReLU", x, "relu2")
    x = op("MaxPool2d", x, "pool2", kernel_size=2)
    x = op("Flatten", x, "flatten")
    x = op("Linear", x, "fc1", out_features=128)
    x = op("ReLU", x, "relu3")
    return op("Linear", x, "fc2", out_features=size)


@template("triplet_net", "Triplet network: shared-weight CNN embedding of anchor, positive, negative (classes = embedding size)",
          (1, 8, 8), 32, reference="Hoffer and Ailon 2015 (triplet network)")
def triplet_net(input_shape, num_classes):
    b = Builder("triplet_net")
    inputs = [b.input(name, input_shape) for name in BRANCHES]
    for name, x in zip(BRANCHES, inputs):
        with b.scope(name):
            y = embedding(b, x, num_classes)
        b.output(y, f"{name}_embedding")
    return b.graph
