"""LeNet-5 style network for small grayscale images (8x8 digits, 28x28 MNIST-size)."""

from __future__ import annotations

from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template


@template("lenet", "LeNet-5 style CNN for 1x8x8 digits or 1x28x28 images", (1, 28, 28), 10)
def lenet(input_shape, num_classes):
    b = Builder("lenet")
    x = b.input("x", input_shape)
    small = input_shape[-1] < 16
    x = b.op("Conv2d", x, "conv1", out_channels=6, kernel_size=3 if small else 5, padding=1 if small else 2)
    x = b.op("ReLU", x, "relu1")
    x = b.op("MaxPool2d", x, "pool1", kernel_size=2)
    x = b.op("Conv2d", x, "conv2", out_channels=16, kernel_size=3 if small else 5, padding=1 if small else 0)
    x = b.op("ReLU", x, "relu2")
    x = b.op("MaxPool2d", x, "pool2", kernel_size=2)
    x = b.op("Flatten", x, "flatten")
    x = b.op("Linear", x, "fc1", out_features=120)
    x = b.op("ReLU", x, "relu3")
    x = b.op("Linear", x, "fc2", out_features=84)
    x = b.op("ReLU", x, "relu4")
    x = b.op("Linear", x, "fc3", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
