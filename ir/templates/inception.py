"""GoogLeNet (Inception v1) as torchvision builds it, without the auxiliary heads."""

from __future__ import annotations

from convstudio.ir.templates.blocks import basic_conv, inception
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# module name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), or a max pool's kernel size
STAGES = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", 3),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", 2),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)


@template("googlenet", "GoogLeNet / Inception v1 (BN variant, no auxiliary heads)", (3, 224, 224), 1000,
          reference="torchvision.models.googlenet(aux_logits=False)")
def googlenet(input_shape, num_classes):
    b = Builder("googlenet")
    x = b.input("x", input_shape)
    with b.scope("conv1"):
        x = basic_conv(b, x, 64, 7, stride=2, padding=3)
    x = b.op("MaxPool2d", x, "maxpool1", kernel_size=3, stride=2, ceil_mode=True)
    with b.scope("conv2"):
        x = basic_conv(b, x, 64, 1)
    with b.scope("conv3"):
        x = basic_conv(b, x, 192, 3, padding=1)
    x = b.op("MaxPool2d", x, "maxpool2", kernel_size=3, stride=2, ceil_mode=True)
    channels = 192
    for name, spec in STAGES:
        if isinstance(spec, int):
            x = b.op("MaxPool2d", x, name, kernel_size=spec, stride=2, ceil_mode=True)
            continue
        with b.scope(name):
            x = inception(b, x, channels, *spec)
        channels = spec[0] + spec[2] + spec[4] + spec[5]
    x = b.op("GlobalAvgPool", x, "avgpool")
    x = b.op("Flatten", x, "flatten")
    x = b.op("Dropout", x, "dropout", p=0.2)
    x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
