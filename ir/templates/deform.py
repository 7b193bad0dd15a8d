"""Deformable convolution with its offset branch (and optional modulation mask), as a block and a small network."""

from __future__ import annotations

from convstudio.ir.errors import AttrError
from convstudio.ir.templates.blocks import need_int, resolve_out
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import block, template


@block("deform_conv", "Deformable conv: a conv predicts 2·k·k offsets (and k·k mask logits), DeformConv2d, BN, ReLU",
       out_channels=None, stride=1, kernel_size=3, mask=True)
def deform_conv(b: Builder, x: str, channels: int, out_channels=None, stride=1, kernel_size=3, mask=True) -> str:
    out = resolve_out(channels, out_channels)
    k = need_int(kernel_size, "kernel_size", 1)
    need_int(stride, "stride", 1)
    if not isinstance(mask, bool):
        raise AttrError(f"mask must be true or false, got {mask!r}", "block option mask")
    geometry = {"kernel_size": k, "stride": stride, "padding": k // 2}
    inputs = [x, b.op("Conv2d", x, "offset", out_channels=2 * k * k, **geometry)]
    if mask:
        m = b.op("Conv2d", x, "mask", out_channels=k * k, **geometry)
        inputs.append(b.op("Sigmoid", m, "mask_sigmoid"))
    y = b.op("DeformConv2d", inputs, "conv", out_channels=out, bias=False, **geometry)
    y = b.op("BatchNorm2d", y, "bn")
    return b.op("ReLU", y, "relu")


@template("deform_block", "Conv stem, a modulated deformable conv with its offset and mask branches, classifier head",
          (3, 32, 32), 10, reference="Dai et al. 2017 / Zhu et al. 2019 (DCNv2)")
def deform_block(input_shape, num_classes):
    b = Builder("deform_block")
    x = b.input("x", input_shape)
    x = b.op("Conv2d", x, "stem_conv", out_channels=32, kernel_size=3, padding=1, bias=False)
    x = b.op("BatchNorm2d", x, "stem_bn")
    x = b.op("ReLU", x, "stem_relu")
    with b.scope("deform"):
        x = deform_conv(b, x, 32, out_channels=64, stride=2, mask=True)
    x = b.op("GlobalAvgPool", x, "avgpool")
    x = b.op("Flatten", x, "flatten")
    x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
