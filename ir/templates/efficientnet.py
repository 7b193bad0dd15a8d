"""EfficientNet-B0 as torchvision builds it: SiLU stem, seven stages of MBConv blocks with SE, stochastic depth rising to 0.2."""

from __future__ import annotations

from convstudio.ir.templates.blocks import conv_norm_act, mbconv
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.registry import template

# (expansion, kernel, first stride, output channels, blocks) per stage of EfficientNet-B0
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


@template("efficientnet_b0", "EfficientNet-B0: MBConv blocks with SE and SiLU, stochastic depth on the residuals", (3, 224, 224), 1000,
          reference="torchvision.models.efficientnet_b0")
def efficientnet_b0(input_shape, num_classes):
    b = Builder("efficientnet_b0")
    x = b.input("x", input_shape)
    channels = 32
    with b.group("features_0"):
        x = conv_norm_act(b, x, "features_0", channels, 3, stride=2, activation="SiLU")
    total, block_id = sum(stage[-1] for stage in B0_STAGES), 0
    for index, (expansion, kernel, stride, out, blocks) in enumerate(B0_STAGES, start=1):
        with b.group(f"features_{index}"):
            for i in range(blocks):
                # the drop probability grows linearly with the block's position in the network
                p = 0.2 * block_id / total
                with b.scope(f"features_{index}_{i}", group=True):
                    x = mbconv(b, x, channels, out_channels=out, stride=stride if i == 0 else 1, expansion=expansion, kernel_size=kernel,
                               stochastic_depth=p)
                channels, block_id = out, block_id + 1
    with b.group(f"features_{len(B0_STAGES) + 1}"):
        x = conv_norm_act(b, x, f"features_{len(B0_STAGES) + 1}", 4 * channels, 1, activation="SiLU")
    with b.group("head"):
        x = b.op("GlobalAvgPool", x, "avgpool")
        x = b.op("Flatten", x, "flatten")
        x = b.op("Dropout", x, "classifier_0", p=0.2)
        x = b.op("Linear", x, "classifier_1", out_features=num_classes)
    b.output(x, "logits")
    return b.graph
