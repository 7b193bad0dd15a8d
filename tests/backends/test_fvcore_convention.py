"""The IR's `fvcore` convention equals fvcore's FlopCountAnalysis on the lowered torch module (exactly)."""

import json
import logging

import numpy as np
import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from convstudio.backends.torch import lower
from convstudio.backends.weights import param_shapes
from convstudio.designer.cli.main import main
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, save
from convstudio.ir.templates import Builder, build_template


def zero_weights(graph):
    """Any weights will do for counting; zeros are the cheapest to make (vgg has 138M)."""
    for name, shapes in param_shapes(graph).items():
        graph.nodes[name].params = {k: np.zeros(s, np.float32) for k, s in shapes.items()}


def fvcore_total(graph, batch=2):
    zero_weights(graph)
    module = lower(graph).eval()
    inputs = tuple(torch.zeros(batch, *graph.nodes[n].meta["shapes"][0]) for n in graph.inputs)
    analysis = FlopCountAnalysis(module, inputs[0] if len(inputs) == 1 else inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total()


def densenet_style():
    """Dense blocks (BN-ReLU-1x1-BN-ReLU-3x3, Concat growth) with transitions, as in torchvision's DenseNet."""
    b = Builder("densenet_style")
    x = b.input("x", (3, 64, 64))
    x = b.op("Conv2d", x, "conv0", out_channels=16, kernel_size=7, stride=2, padding=3, bias=False)
    x = b.op("BatchNorm2d", x, "norm0")
    x = b.op("ReLU", x, "relu0")
    x = b.op("MaxPool2d", x, "pool0", kernel_size=3, stride=2, padding=1)
    for block in range(2):
        features = [x]
        for layer in range(3):
            with b.scope(f"block{block}_layer{layer}"):
                y = b.op("Concat", features, "cat") if len(features) > 1 else features[0]
                y = b.op("BatchNorm2d", y, "norm1")
                y = b.op("ReLU", y, "relu1")
                y = b.op("Conv2d", y, "conv1", out_channels=32, kernel_size=1, bias=False)
                y = b.op("BatchNorm2d", y, "norm2")
                y = b.op("ReLU", y, "relu2")
                y = b.op("Conv2d", y, "conv2", out_channels=8, kernel_size=3, padding=1, bias=False)
            features.append(y)
        x = b.op("Concat", features, f"block{block}_out")
        with b.scope(f"transition{block}"):
            x = b.op("BatchNorm2d", x, "norm")
            x = b.op("ReLU", x, "relu")
            x = b.op("Conv2d", x, "conv", out_channels=16, kernel_size=1, bias=False)
            x = b.op("AvgPool2d", x, "pool", kernel_size=2)
    x = b.op("BatchNorm2d", x, "norm5")
    x = b.op("ReLU", x, "relu5")
    x = b.op("GlobalAvgPool", x, "pool5")
    x = b.op("Flatten", x, "flatten")
    b.output(b.op("Linear", x, "classifier", out_features=10))
    return b.graph


def efficientnet_style():
    """MBConv blocks: 1x1 expand + SiLU, depthwise + SiLU, squeeze-excitation (Mul), 1x1 project, residual Add;
    plus a small decoder (ConvTranspose2d, nearest and bilinear Upsample, AdaptiveAvgPool2d) for those ops."""
    b = Builder("efficientnet_style")
    x = b.input("x", (3, 64, 64))
    x = b.op("Conv2d", x, "stem", out_channels=16, kernel_size=3, stride=2, padding=1, bias=False)
    x = b.op("BatchNorm2d", x, "stem_bn")
    x = b.op("SiLU", x, "stem_act")
    for i, (stride, out) in enumerate([(1, 16), (2, 24), (1, 24)]):
        with b.scope(f"mb{i}"):
            inp = x
            cin = 16 if i < 2 else 24
            y = b.op("Conv2d", x, "expand", out_channels=cin * 4, kernel_size=1, bias=False)
            y = b.op("BatchNorm2d", y, "expand_bn")
            y = b.op("SiLU", y, "expand_act")
            y = b.op("Conv2d", y, "dw", out_channels=cin * 4, kernel_size=5, stride=stride, padding=2, groups=cin * 4, bias=False)
            y = b.op("BatchNorm2d", y, "dw_bn")
            y = b.op("SiLU", y, "dw_act")
            s = b.op("GlobalAvgPool", y, "se_pool")
            s = b.op("Conv2d", s, "se_reduce", out_channels=4, kernel_size=1)
            s = b.op("SiLU", s, "se_act")
            s = b.op("Conv2d", s, "se_expand", out_channels=cin * 4, kernel_size=1)
            s = b.op("Sigmoid", s, "se_gate")
            y = b.op("Mul", [y, s], "se_scale")
            y = b.op("Conv2d", y, "project", out_channels=out, kernel_size=1, bias=False)
            y = b.op("BatchNorm2d", y, "project_bn", affine=False)
            x = b.op("Add", [y, inp], "add") if stride == 1 and cin == out else y
    u = b.op("ConvTranspose2d", x, "up", out_channels=8, kernel_size=2, stride=2)
    u = b.op("Upsample", u, "up_nearest", scale_factor=2)
    u = b.op("Upsample", u, "up_bilinear", size=[40, 40], mode="bilinear")
    u = b.op("AdaptiveAvgPool2d", u, "adapt", output_size=[5, 5])
    b.output(u, "decoder")
    x = b.op("GlobalAvgPool", x, "head_pool")
    x = b.op("Flatten", x, "flatten")
    x = b.op("Dropout", x, "dropout", p=0.2)
    b.output(b.op("Linear", x, "classifier", out_features=10), "logits")
    return b.graph


def convnext_style():
    """ConvNeXt pieces: patchify stem + channels-first LayerNorm, blocks with a channels-last LayerNorm between
    permutes, GELU, layer scale (Scale, along the last dim and along channels) and stochastic depth."""
    b = Builder("convnext_style")
    x = b.input("x", (3, 64, 64))
    x = b.op("Conv2d", x, "stem", out_channels=16, kernel_size=4, stride=4)
    x = b.op("LayerNorm", x, "stem_norm", eps=1e-6)
    for i in range(2):
        with b.scope(f"block{i}"):
            y = b.op("Conv2d", x, "dw", out_channels=16, kernel_size=7, padding=3, groups=16)
            y = b.op("Permute", y, "to_last", dims=[0, 2, 3, 1])
            y = b.op("LayerNorm", y, "norm", eps=1e-6, channels_last=True)
            y = b.op("Linear", y, "fc1", out_features=64)
            y = b.op("GELU", y, "gelu", approximate="tanh" if i else "none")
            y = b.op("Linear", y, "fc2", out_features=16)
            y = b.op("Scale", y, "gamma_last", axis=-1) if i else y
            y = b.op("Permute", y, "to_first", dims=[0, 3, 1, 2])
            y = b.op("Scale", y, "gamma") if not i else y
            y = b.op("StochasticDepth", y, "drop", p=0.1)
            x = b.op("Add", [x, y], "add")
    x = b.op("LayerNorm", x, "down_norm", elementwise_affine=False)
    x = b.op("Conv2d", x, "down", out_channels=32, kernel_size=2, stride=2, padding=[0, 0, 1, 1])
    x = b.op("GlobalAvgPool", x, "pool")
    x = b.op("LayerNorm", x, "head_norm", eps=1e-6)
    x = b.op("Flatten", x, "flatten")
    b.output(b.op("Linear", x, "classifier", out_features=10), "logits")
    return b.graph


CASES = {
    "resnet18": lambda: build_template("resnet18", (3, 64, 64), 10),
    "resnet50": lambda: build_template("resnet50", (3, 64, 64), 10),
    "mobilenet_v2": lambda: build_template("mobilenet_v2", (3, 64, 64), 10),
    "vgg16_bn": lambda: build_template("vgg16_bn", (3, 32, 32), 10),
    "googlenet": lambda: build_template("googlenet", (3, 64, 64), 10),
    "squeezenet1_1": lambda: build_template("squeezenet1_1", (3, 64, 64), 10),
    "densenet_style": densenet_style,
    "efficientnet_style": efficientnet_style,
    "convnext_style": convnext_style,
}


@pytest.mark.parametrize("name", list(CASES))
def test_fvcore_convention_equals_fvcore(name):
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    graph = CASES[name]()
    ours = analyze(graph, "fvcore", batch=2).total.flops
    assert ours > 0
    assert ours == fvcore_total(graph, batch=2)


def test_cost_verb_with_the_fvcore_convention_equals_fvcore(tmp_path, capsys):
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    graph = build_template("resnet18", (3, 64, 64), 10)
    save(Design(graph), tmp_path / "r.json")
    assert main(["cost", str(tmp_path / "r.json"), "--convention", "fvcore", "--batch", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["flops"] == fvcore_total(graph, batch=2)
