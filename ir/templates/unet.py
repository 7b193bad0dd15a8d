"""A small U-Net: two encoder stages, a transposed-conv decoder stage and an upsample decoder stage, skip concats."""

from __future__ import annotations

from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template


def double_conv(b: Builder, x: str, out: int) -> str:
    """Two 3x3 conv + BN + ReLU, keeping the spatial size."""
    for i in (1, 2):
        x = b.op("Conv2d", x, f"conv{i}", out_channels=out, kernel_size=3, padding=1, bias=False)
        x = b.op("BatchNorm2d", x, f"bn{i}")
        x = b.op("ReLU", x, f"relu{i}")
    return x


@template("unet_small", "Small U-Net for segmentation (classes = output channels; H and W divisible by 4)",
          (3, 64, 64), 2, has_width=True, reference="Ronneberger et al. 2015, reduced to two levels")
def unet_small(input_shape, num_classes, width=1.0):
    base = max(4, int(16 * width))
    b = Builder("unet_small")
    x = b.input("x", input_shape)
    with b.scope("enc1", group=True):
        skip1 = double_conv(b, x, base)
    x = b.op("MaxPool2d", skip1, "pool1", kernel_size=2)
    with b.scope("enc2", group=True):
        skip2 = double_conv(b, x, 2 * base)
    x = b.op("MaxPool2d", skip2, "pool2", kernel_size=2)
    with b.scope("bottleneck", group=True):
        x = double_conv(b, x, 4 * base)
    x = b.op("ConvTranspose2d", x, "up2", out_channels=2 * base, kernel_size=2, stride=2)
    x = b.op("Concat", [x, skip2], "cat2", dim=1)
    with b.scope("dec2", group=True):
        x = double_conv(b, x, 2 * base)
    x = b.op("Upsample", x, "up1", mode="bilinear", scale_factor=2)
    x = b.op("Conv2d", x, "up1_proj", out_channels=base, kernel_size=1)
    x = b.op("Concat", [x, skip1], "cat1", dim=1)
    with b.scope("dec1", group=True):
        x = double_conv(b, x, base)
    x = b.op("Conv2d", x, "head", out_channels=num_classes, kernel_size=1)
    b.output(x, "logits")
    return b.graph
