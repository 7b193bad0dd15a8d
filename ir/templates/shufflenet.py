"""ShuffleNet v2 1.0x as torchvision builds it: channel split, two branches, concat, channel shuffle."""

from __future__ import annotations

from convstudio.ir.templates.blocks import shuffle_unit
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS_X1_0 = (24, 116, 232, 464, 1024)


@template("shufflenet_v2_x1_0", "ShuffleNet v2 1.0x (stages of shuffle units 4-8-4)", (3, 224, 224), 1000,
          reference="torchvision.models.shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(input_shape, num_classes):
    stem, *stages, last = STAGE_CHANNELS_X1_0
    b = Builder("shufflenet_v2_x1_0")
    x = b.input("x", input_shape)
    x = b.op("Conv2d", x, "conv1_0", out_channels=stem, kernel_size=3, stride=2, padding=1, bias=False)
    x = b.op("BatchNorm2d", x, "conv1_1")
    x = b.op("ReLU", x, "conv1_2")
    x = b.op("MaxPool2d", x, "maxpool", kernel_size=3, stride=2, padding=1)
    channels = stem
    for stage, (repeats, out) in enumerate(zip(STAGE_REPEATS, stages), start=2):
        with b.group(f"stage{stage}"):
            for i in range(repeats):
                with b.scope(f"stage{stage}_{i}", group=True):
                    x = shuffle_unit(b, x, channels, out_channels=out, stride=2 if i == 0 else 1)
                channels = out
    x = b.op("Conv2d", x, "conv5_0", out_channels=last, kernel_size=1, bias=False)
    x = b.op("BatchNorm2d", x, "conv5_1")
    x = b.op("ReLU", x, "conv5_2")
    x = b.op("GlobalAvgPool", x, "mean")
    x = b.op("Flatten", x, "flatten")
    x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
