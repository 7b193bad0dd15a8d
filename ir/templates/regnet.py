"""RegNet Y as torchvision builds it: stage widths and depths from the quantized linear rule, Y blocks (grouped 3x3 with SE)."""

from __future__ import annotations

import math

import numpy as np

from convstudio.ir.graph import Graph
from convstudio.ir.templates.blocks import conv_norm_act, make_divisible, regnet_y
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template


def stage_params(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, quant: int = 8) -> list[tuple[int, int, int]]:
    """torchvision's BlockParams.from_init_params (bottleneck multiplier 1): (width, depth, group width) per stage."""
    widths_cont = np.arange(depth) * w_a + w_0
    capacity = np.round(np.log(widths_cont / w_0) / math.log(w_m))
    block_widths = (np.round(w_0 * np.power(w_m, capacity) / quant) * quant).astype(int).tolist()
    stages: list[list[int]] = []
    for width in block_widths:
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    # widths compatible with the groups (torchvision's _adjust_widths_groups_compatibilty)
    return [(make_divisible(w, min(group_width, w)), d, min(group_width, w)) for w, d in stages]


def regnet(name: str, depth: int, w_0: int, w_a: float, w_m: float, group_width: int, input_shape, num_classes: int,
           se_ratio: float = 0.25, stem_width: int = 32) -> Graph:
    """Stem (3x3 stride-2 conv, BN, ReLU), four stages of Y blocks (the first of each strided), global pool and fc; each of them a group."""
    b = Builder(name)
    x = b.input("x", input_shape)
    with b.group("stem"):
        x = conv_norm_act(b, x, "stem", stem_width, 3, stride=2)
    channels = stem_width
    for stage, (width, blocks, groups) in enumerate(stage_params(depth, w_0, w_a, w_m, group_width), start=1):
        with b.group(f"stage{stage}"):
            for i in range(blocks):
                with b.scope(f"trunk_output_block{stage}_block{stage}_{i}", group=True):
                    x = regnet_y(b, x, channels, out_channels=width, stride=2 if i == 0 else 1, group_width=groups, se_ratio=se_ratio)
                channels = width
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Linear", x, "fc", out_features=num_classes)
    b.output(x, "logits")
    return b.graph


@template("regnet_y_400mf", "RegNetY-400MF (stages 48-104-208-440 wide, 1-3-6-6 deep, group width 8, SE)", (3, 224, 224), 1000,
          reference="torchvision.models.regnet_y_400mf")
def regnet_y_400mf(input_shape, num_classes):
    return regnet("regnet_y_400mf", 16, 48, 27.89, 2.09, 8, input_shape, num_classes)
