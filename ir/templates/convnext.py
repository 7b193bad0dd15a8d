"""ConvNeXt-Tiny as torchvision builds it: patchify stem, four stages of ConvNeXt blocks, LayerNorm + 2x2 conv downsampling."""

from __future__ import annotations

from convstudio.ir.templates.blocks import convnext_block
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# (channels, blocks) per stage of ConvNeXt-Tiny
TINY_STAGES = ((96, 3), (192, 3), (384, 9), (768, 3))


@template("convnext_tiny", "ConvNeXt-Tiny: 7x7 depthwise blocks with channels-last LayerNorm, GELU MLP and layer scale", (3, 224, 224), 1000,
          reference="torchvision.models.convnext_tiny")
def convnext_tiny(input_shape, num_classes):
    b = Builder("convnext_tiny")
    x = b.input("x", input_shape)
    channels = TINY_STAGES[0][0]
    with b.group("stem"):
        x = b.op("Conv2d", x, "features_0_0", out_channels=channels, kernel_size=4, stride=4)
        x = b.op("LayerNorm", x, "features_0_1", eps=1e-6)
    total, block_id, index = sum(blocks for _, blocks in TINY_STAGES), 0, 1
    for stage, (width, blocks) in enumerate(TINY_STAGES):
        with b.group(f"stage{stage + 1}"):
            if stage:
                with b.group(f"features_{index}"):
                    x = b.op("LayerNorm", x, f"features_{index}_0", eps=1e-6)
                    x = b.op("Conv2d", x, f"features_{index}_1", out_channels=width, kernel_size=2, stride=2)
                channels, index = width, index + 1
            for i in range(blocks):
                # the drop probability grows linearly from 0 at the first block to 0.1 at the last
                with b.scope(f"features_{index}_{i}", group=True):
                    x = convnext_block(b, x, channels, stochastic_depth=0.1 * block_id / (total - 1))
                block_id += 1
        index += 1
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("LayerNorm", x, "classifier_0", eps=1e-6)
        x = b.op("Flatten", x, "classifier_1")
        x = b.op("Linear", x, "classifier_2", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
