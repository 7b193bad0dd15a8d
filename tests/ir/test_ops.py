"""Per-op shapes, parameter counts and cost terms checked against hand calculations.

Each row gives the op, its attributes, per-sample input shapes and the values worked out by hand
from PyTorch's shape rules and the formulas in docs/cost.md. All counts are exact integers.
"""

from __future__ import annotations

import math

import pytest

from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError
from convstudio.ir.graph import Graph
from convstudio.ir.ops import registry
from convstudio.ir.ops.activation import ACT_FLOPS
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.shapes import infer_shapes


def apply(op: str, attrs: dict, ins: list[tuple]):
    """(output shapes, learnable parameter count, OpCost) of one op application."""
    opdef = registry.get(op)
    a = opdef.resolve(opdef.validate(dict(attrs), where=f"{op} test"))
    outs = [tuple(s) for s in opdef.infer(a, [tuple(s) for s in ins])]
    params = sum(math.prod(s) for s in opdef.params(a, ins).values())
    return outs, params, opdef.cost(a, ins, outs)


# (id, op, attrs, input shapes, output shapes, params, macs, flops, fvcore)
CASES = [
    # Conv2d: 16·32·32 outputs, each 3·3·3 MACs; flops add a bias per output element.
    ("conv_standard", "Conv2d", {"out_channels": 16, "kernel_size": 3, "padding": 1}, [(3, 32, 32)],
     [(16, 32, 32)], 16 * 27 + 16, 16 * 1024 * 27, 2 * 16 * 1024 * 27 + 16 * 1024, 16 * 1024 * 27),
    # (31 - 3) // 2 + 1 = 15; no bias.
    ("conv_stride2_nobias", "Conv2d", {"out_channels": 8, "kernel_size": 3, "stride": 2, "bias": False}, [(3, 31, 31)],
     [(8, 15, 15)], 8 * 27, 8 * 225 * 27, 2 * 8 * 225 * 27, 8 * 225 * 27),
    # H: (10 + 2 - 3) // 2 + 1 = 5, W: (12 + 4 - 5) // 1 + 1 = 12.
    ("conv_asymmetric", "Conv2d", {"out_channels": 2, "kernel_size": [3, 5], "stride": [2, 1], "padding": [1, 2], "bias": False},
     [(3, 10, 12)], [(2, 5, 12)], 2 * 3 * 15, 2 * 60 * 45, 2 * 2 * 60 * 45, 2 * 60 * 45),
    # groups 4: each output channel sees 8 / 4 = 2 input channels.
    ("conv_grouped", "Conv2d", {"out_channels": 16, "kernel_size": 3, "padding": 1, "groups": 4, "bias": False}, [(8, 16, 16)],
     [(16, 16, 16)], 16 * 2 * 9, 16 * 256 * 2 * 9, 2 * 16 * 256 * 18, 16 * 256 * 18),
    # depthwise: groups = channels, one 3x3 filter per channel.
    ("conv_depthwise", "Conv2d", {"out_channels": 8, "kernel_size": 3, "padding": 1, "groups": 8}, [(8, 16, 16)],
     [(8, 16, 16)], 8 * 9 + 8, 8 * 256 * 9, 2 * 8 * 256 * 9 + 8 * 256, 8 * 256 * 9),
    # pointwise 1x1.
    ("conv_pointwise", "Conv2d", {"out_channels": 32, "kernel_size": 1, "bias": False}, [(16, 7, 7)],
     [(32, 7, 7)], 32 * 16, 32 * 49 * 16, 2 * 32 * 49 * 16, 32 * 49 * 16),
    # dilation 2: effective kernel 5, 20 - 5 + 1 = 16.
    ("conv_dilated", "Conv2d", {"out_channels": 4, "kernel_size": 3, "dilation": 2}, [(4, 20, 20)],
     [(4, 16, 16)], 4 * 4 * 9 + 4, 4 * 256 * 4 * 9, 2 * 4 * 256 * 36 + 4 * 256, 4 * 256 * 36),
    # 'same' keeps 9x10 with an even kernel height (pads 1 top, 2 bottom).
    ("conv_same_even_kernel", "Conv2d", {"out_channels": 2, "kernel_size": [4, 3], "padding": "same", "bias": False}, [(2, 9, 10)],
     [(2, 9, 10)], 2 * 2 * 12, 2 * 90 * 2 * 12, 2 * 2 * 90 * 24, 2 * 90 * 24),
    # fused ReLU adds 1 flop per output element.
    ("conv_fused_relu", "Conv2d", {"out_channels": 16, "kernel_size": 3, "padding": 1, "activation": "relu"}, [(3, 32, 32)],
     [(16, 32, 32)], 448, 442368, 2 * 442368 + 16384 + 16384, 442368),
    # transposed: (7 - 1)·2 - 2·1 + 1·(3 - 1) + 1 + 1 = 14; MACs over input positions: 8·7·7·4·3·3.
    ("convT_output_padding", "ConvTranspose2d", {"out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
     [(8, 7, 7)], [(4, 14, 14)], 8 * 4 * 9 + 4, 8 * 49 * 4 * 9, 2 * 8 * 49 * 36 + 4 * 196, 8 * 49 * 36),
    # transposed, groups 2, dilation 2: (5 - 1) + 2·2 + 1 = 9; weight (Cin, Cout/g, kh, kw).
    ("convT_grouped_dilated", "ConvTranspose2d", {"out_channels": 6, "kernel_size": 3, "dilation": 2, "groups": 2, "bias": False},
     [(4, 5, 5)], [(6, 9, 9)], 4 * 3 * 9, 4 * 25 * 3 * 9, 2 * 4 * 25 * 27, 4 * 25 * 27),
    # deformable: conv MACs plus 7 flops per bilinear sample (Cin·kh·kw·Ho·Wo samples) and bias.
    ("deform", "DeformConv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}, [(4, 8, 8), (18, 8, 8)],
     [(6, 8, 8)], 6 * 4 * 9 + 6, 6 * 64 * 36, 2 * 6 * 64 * 36 + 7 * 4 * 9 * 64 + 6 * 64, 6 * 64 * 36),
    # with a mask, 8 flops per sample.
    ("deform_mask", "DeformConv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}, [(4, 8, 8), (18, 8, 8), (9, 8, 8)],
     [(6, 8, 8)], 6 * 4 * 9 + 6, 6 * 64 * 36, 2 * 6 * 64 * 36 + 8 * 4 * 9 * 64 + 6 * 64, 6 * 64 * 36),
    # BN: 2 flops per element in eval; fvcore 2 with affine, 1 without.
    ("bn2d", "BatchNorm2d", {}, [(8, 4, 4)], [(8, 4, 4)], 16, 0, 256, 256),
    ("bn2d_no_affine", "BatchNorm2d", {"affine": False}, [(8, 4, 4)], [(8, 4, 4)], 0, 0, 256, 128),
    ("bn1d", "BatchNorm1d", {}, [(10,)], [(10,)], 20, 0, 20, 20),
    ("bn1d_rank3", "BatchNorm1d", {"num_features": 4}, [(4, 6)], [(4, 6)], 8, 0, 48, 48),
    ("lrn", "LRN", {"size": 5}, [(8, 4, 4)], [(8, 4, 4)], 0, 0, (5 + 4) * 128, 0),
    # pooling: floor (7 - 2) // 2 + 1 = 3, ceil gives 4 (last window starts at 6 < 7).
    ("maxpool_floor", "MaxPool2d", {"kernel_size": 2, "stride": 2}, [(4, 7, 7)], [(4, 3, 3)], 0, 0, 36 * 3, 0),
    ("maxpool_ceil", "MaxPool2d", {"kernel_size": 2, "stride": 2, "ceil_mode": True}, [(4, 7, 7)], [(4, 4, 4)], 0, 0, 64 * 3, 0),
    # ceil mode with padding 1 on 5: ceil(5 / 2) + 1 = 4, but a window starting at 6 >= 5 + 1 is dropped -> 3.
    ("maxpool_ceil_dropped_window", "MaxPool2d", {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}, [(1, 5, 5)],
     [(1, 3, 3)], 0, 0, 9 * 3, 0),
    ("maxpool_dilated", "MaxPool2d", {"kernel_size": 3, "stride": 1, "dilation": 2}, [(1, 9, 9)], [(1, 5, 5)], 0, 0, 25 * 8, 0),
    ("avgpool", "AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [(4, 8, 8)], [(4, 4, 4)], 0, 0, 64 * 9, 0),
    ("avgpool_ceil", "AvgPool2d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, [(2, 8, 8)], [(2, 4, 4)], 0, 0, 32 * 9, 0),
    ("global_avg", "GlobalAvgPool", {}, [(16, 7, 7)], [(16, 1, 1)], 0, 0, 784 + 16, 784),
    ("global_avg_mean", "GlobalAvgPool", {"mean": True}, [(16, 7, 7)], [(16, 1, 1)], 0, 0, 784 + 16, 0),
    ("global_max", "GlobalMaxPool", {}, [(16, 7, 7)], [(16, 1, 1)], 0, 0, 784 - 16, 0),
    ("adaptive_avg", "AdaptiveAvgPool2d", {"output_size": 7}, [(512, 14, 14)], [(512, 7, 7)], 0, 0, 512 * 196 + 512 * 49, 512 * 196),
    ("upsample_nearest_scale", "Upsample", {"scale_factor": 2}, [(4, 5, 6)], [(4, 10, 12)], 0, 0, 480, 480),
    # bilinear scale 1.5: floor(7.5) = 7, floor(9) = 9; 7 flops (ours) and 4 (fvcore) per output element.
    ("upsample_bilinear_scale", "Upsample", {"mode": "bilinear", "scale_factor": 1.5}, [(4, 5, 6)], [(4, 7, 9)], 0, 0, 7 * 252, 4 * 252),
    ("upsample_size", "Upsample", {"mode": "bilinear", "size": [3, 4], "align_corners": True}, [(4, 5, 6)], [(4, 3, 4)],
     0, 0, 7 * 48, 4 * 48),
    ("upsample_scale_pair", "Upsample", {"scale_factor": [2, 3]}, [(1, 2, 2)], [(1, 4, 6)], 0, 0, 24, 24),
    ("linear_2d", "Linear", {"out_features": 10}, [(64,)], [(10,)], 650, 640, 2 * 640 + 10, 640),
    # over the last dimension of a 4-d input: 3·5 rows of 7 -> 4.
    ("linear_4d", "Linear", {"out_features": 4}, [(3, 5, 7)], [(3, 5, 4)], 7 * 4 + 4, 15 * 28, 2 * 420 + 60, 420),
    ("linear_fused_sigmoid", "Linear", {"out_features": 10, "bias": False, "activation": "sigmoid"}, [(64,)], [(10,)],
     640, 640, 2 * 640 + 4 * 10, 640),
    ("input", "Input", {"shape": [3, 8, 8]}, [], [(3, 8, 8)], 0, 0, 0, 0),
    ("output", "Output", {}, [(10,)], [(10,)], 0, 0, 0, 0),
    ("identity", "Identity", {}, [(3, 4, 4)], [(3, 4, 4)], 0, 0, 0, 0),
    ("dropout", "Dropout", {"p": 0.2}, [(3, 4, 4)], [(3, 4, 4)], 0, 0, 0, 0),
    ("flatten", "Flatten", {}, [(4, 3, 3)], [(36,)], 0, 0, 0, 0),
    ("flatten_start2", "Flatten", {"start_dim": 2}, [(4, 3, 3)], [(4, 9)], 0, 0, 0, 0),
    ("flatten_end2", "Flatten", {"end_dim": 2}, [(4, 3, 3)], [(12, 3)], 0, 0, 0, 0),
    ("add_broadcast", "Add", {}, [(8, 4, 4), (8, 1, 1)], [(8, 4, 4)], 0, 0, 128, 0),
    ("add_three", "Add", {}, [(8, 4, 4), (8, 4, 4), (1, 4, 4)], [(8, 4, 4)], 0, 0, 256, 0),
    ("mul_broadcast", "Mul", {}, [(8, 1, 1), (8, 4, 4)], [(8, 4, 4)], 0, 0, 128, 0),
    ("concat_channels", "Concat", {}, [(3, 4, 4), (5, 4, 4)], [(8, 4, 4)], 0, 0, 0, 0),
    ("concat_height", "Concat", {"dim": 2}, [(3, 4, 4), (3, 2, 4)], [(3, 6, 4)], 0, 0, 0, 0),
    ("concat_last", "Concat", {"dim": -1}, [(3, 4, 4), (3, 4, 1)], [(3, 4, 5)], 0, 0, 0, 0),
    ("shuffle", "ChannelShuffle", {"groups": 4}, [(8, 2, 2)], [(8, 2, 2)], 0, 0, 0, 0),
    ("split_parts", "ChannelSplit", {}, [(8, 2, 2)], [(4, 2, 2), (4, 2, 2)], 0, 0, 0, 0),
    ("split_sections", "ChannelSplit", {"sections": [2, 1, 5]}, [(8, 2, 2)], [(2, 2, 2), (1, 2, 2), (5, 2, 2)], 0, 0, 0, 0),
    ("prelu_shared", "PReLU", {}, [(3, 4, 4)], [(3, 4, 4)], 1, 0, 2 * 48, 0),
    ("prelu_per_channel", "PReLU", {"num_parameters": 3}, [(3, 4, 4)], [(3, 4, 4)], 3, 0, 2 * 48, 0),
    ("softmax_last", "Softmax", {"dim": -1}, [(10,)], [(10,)], 0, 0, 30, 0),
    # four-sided padding [top, left, bottom, right]: H (9 + 0 + 1 - 3) // 2 + 1 = 4, W (9 + 1 + 2 - 3) // 2 + 1 = 5.
    ("conv_four_sided_padding", "Conv2d", {"out_channels": 4, "kernel_size": 3, "stride": 2, "padding": [0, 1, 1, 2], "bias": False},
     [(2, 9, 9)], [(4, 4, 5)], 4 * 2 * 9, 4 * 20 * 18, 2 * 4 * 20 * 18, 4 * 20 * 18),
    # LayerNorm: C weights + C biases; 7 flops per element with affine (5 without); fvcore's layer_norm 5 (4 without).
    ("layer_norm_channels", "LayerNorm", {"eps": 1e-6}, [(8, 4, 4)], [(8, 4, 4)], 16, 0, 7 * 128, 5 * 128),
    ("layer_norm_channels_last", "LayerNorm", {"channels_last": True}, [(4, 4, 8)], [(4, 4, 8)], 16, 0, 7 * 128, 5 * 128),
    ("layer_norm_plain", "LayerNorm", {"elementwise_affine": False}, [(8, 4, 4)], [(8, 4, 4)], 0, 0, 5 * 128, 4 * 128),
    ("permute_to_channels_last", "Permute", {"dims": [0, 2, 3, 1]}, [(8, 4, 5)], [(4, 5, 8)], 0, 0, 0, 0),
    # Scale: one parameter per entry of `axis`, 1 multiply per element; fvcore does not count mul.
    ("scale_channels", "Scale", {}, [(8, 4, 4)], [(8, 4, 4)], 8, 0, 128, 0),
    ("scale_last", "Scale", {"axis": -1}, [(4, 5, 8)], [(4, 5, 8)], 8, 0, 160, 0),
    ("stochastic_depth", "StochasticDepth", {"p": 0.1, "mode": "batch"}, [(8, 4, 4)], [(8, 4, 4)], 0, 0, 0, 0),
    ("gelu_tanh", "GELU", {"approximate": "tanh"}, [(2, 3, 3)], [(2, 3, 3)], 0, 0, 8 * 18, 0),
]

# Elementwise activations: per-element flop counts of our convention (docs/cost.md), fvcore counts 0.
ACTIVATION_FLOPS = {"ReLU": 1, "ReLU6": 2, "LeakyReLU": 2, "RReLU": 2, "ELU": 4, "SELU": 5, "Sigmoid": 4, "Tanh": 5,
                    "SiLU": 5, "GELU": 8, "Hardswish": 4, "Hardsigmoid": 3, "Softmax": 3}
CASES += [(f"act_{op}", op, {}, [(2, 3, 3)], [(2, 3, 3)], 0, 0, per * 18, 0) for op, per in ACTIVATION_FLOPS.items()]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_shape_params_and_cost_match_hand_calculation(case):
    _, op, attrs, ins, outs, params, macs, flops, fvcore = case
    got_outs, got_params, cost = apply(op, attrs, ins)
    assert got_outs == outs
    assert got_params == params
    assert (cost.macs, cost.flops, cost.fvcore) == (macs, flops, fvcore)
    assert set(cost.formulas) >= {"macs", "flops", "fvcore"} and all(cost.formulas.values())


def test_every_op_has_a_row():
    covered = {c[1] for c in CASES}
    core = {name for name, opdef in registry.all_ops().items() if opdef.category != "opaque"}
    assert core - covered == set()


def test_activation_table_matches_registry():
    assert ACT_FLOPS == {**ACTIVATION_FLOPS, "PReLU": 2}


def test_formulas_show_the_numbers_used():
    _, _, cost = apply("Conv2d", {"out_channels": 4, "kernel_size": 3, "groups": 2}, [(6, 5, 5)])
    assert cost.formulas["macs"] == "Cout·Ho·Wo·(Cin/g)·kh·kw = 4·3·3·3·3·3"
    assert cost.macs == 4 * 3 * 3 * 3 * 3 * 3
    _, _, cost = apply("Linear", {"out_features": 4}, [(3, 5, 7)])
    assert cost.formulas["macs"] == "rows·in·out = 15·7·4"
    _, _, cost = apply("ConvTranspose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2}, [(8, 3, 3)])
    assert cost.formulas["macs"].startswith("Cin·H·W·(Cout/g)·kh·kw")


def test_same_padding_resolves_like_pytorch():
    a = registry.get("Conv2d").resolve({"out_channels": 1, "kernel_size": [4, 3], "padding": "same", "dilation": [1, 3]})
    assert conv_pads(a) == ((1, 2), (3, 3))
    a = registry.get("Conv2d").resolve({"out_channels": 1, "kernel_size": 3, "padding": "valid"})
    assert conv_pads(a) == ((0, 0), (0, 0))
    a = registry.get("Conv2d").resolve({"out_channels": 1, "kernel_size": 3, "padding": [0, 1, 2, 3]})
    assert conv_pads(a) == ((0, 2), (1, 3))


def test_multi_output_and_buffers():
    split = registry.get("ChannelSplit")
    assert split.num_outputs(split.resolve({"sections": [1, 2, 3]})) == 3
    assert split.num_outputs(split.resolve({"parts": 4})) == 4
    bn = registry.get("BatchNorm2d")
    assert bn.buffers(bn.resolve({}), [(8, 2, 2)]) == {"running_mean": (8,), "running_var": (8,)}
    assert bn.buffers(bn.resolve({"track_running_stats": False}), [(8, 2, 2)]) == {}
    assert {name for name, o in registry.all_ops().items() if o.alias} >= {"Output", "Identity", "Dropout", "Flatten", "ChannelSplit"}


BAD = [
    # (op, attrs, input shapes, error type, text in the message, field in `where`)
    ("Conv2d", {"out_channels": 4, "kernel_size": 0}, [(3, 8, 8)], AttrError, "kernel_size must be >= 1", "attrs.kernel_size"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": -1}, [(3, 8, 8)], AttrError, "padding must be >= 0", "attrs.padding"),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "groups": 2}, [(4, 8, 8)], AttrError, "must divide out_channels", "attrs.groups"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "groups": 2}, [(3, 8, 8)], ShapeError, "must divide the input's 3 channels",
     "attrs.groups"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "in_channels": 5}, [(3, 8, 8)], ShapeError, "in_channels is 5", "attrs.in_channels"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 9}, [(3, 8, 8)], ShapeError, "larger than the padded", "attrs.kernel_size"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": "same", "stride": 2}, [(3, 8, 8)], AttrError, "needs stride 1",
     "attrs.padding"),
    ("Conv2d", {"out_channels": 4, "kernel_size": "3"}, [(3, 8, 8)], AttrError, "must be an integer", "attrs.kernel_size"),
    ("Conv2d", {"out_channels": 4}, [(3, 8, 8)], AttrError, "needs attribute 'kernel_size'", "attrs.kernel_size"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "colour": 1}, [(3, 8, 8)], AttrError, "no attribute 'colour'", "attrs.colour"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 1}, [(3, 8)], ShapeError, "must be 4-d", "inputs"),
    ("ConvTranspose2d", {"out_channels": 4, "kernel_size": 3, "stride": 2, "output_padding": 2}, [(3, 8, 8)], AttrError,
     "output_padding (2) must be smaller", "attrs.output_padding"),
    ("DeformConv2d", {"out_channels": 4, "kernel_size": 3}, [(3, 8, 8), (9, 6, 6)], ShapeError, "offset must be", "input 1"),
    ("MaxPool2d", {"kernel_size": 2, "padding": 2}, [(3, 8, 8)], AttrError, "at most half the kernel", "attrs.padding"),
    ("Upsample", {"scale_factor": 2, "size": 4}, [(3, 8, 8)], AttrError, "exactly one of size and scale_factor", "attrs.size"),
    ("Upsample", {"scale_factor": 2, "align_corners": True}, [(3, 8, 8)], AttrError, "only to mode 'bilinear'", "attrs.align_corners"),
    ("Linear", {"out_features": 4, "in_features": 10}, [(12,)], ShapeError, "in_features is 10", "attrs.in_features"),
    ("Add", {}, [(8, 4, 4), (4, 4, 4)], ShapeError, "do not broadcast", "inputs"),
    ("Mul", {}, [(8, 4, 4), (8, 4)], ShapeError, "different ranks", "input 1"),
    ("Concat", {}, [(3, 4, 4), (3, 5, 4)], ShapeError, "does not match", "input 1"),
    ("Concat", {"dim": 0}, [(3, 4, 4), (3, 4, 4)], ShapeError, "out of range", "attrs.dim"),
    ("ChannelShuffle", {"groups": 3}, [(8, 2, 2)], ShapeError, "must divide the input's 8 channels", "attrs.groups"),
    ("ChannelSplit", {"sections": [3, 3]}, [(8, 2, 2)], ShapeError, "add up to 6", "attrs.sections"),
    ("ChannelSplit", {"parts": 3}, [(8, 2, 2)], ShapeError, "do not divide", "attrs.parts"),
    ("BatchNorm2d", {"num_features": 4}, [(8, 2, 2)], ShapeError, "num_features is 4", "attrs.num_features"),
    ("BatchNorm1d", {}, [(8, 2, 2)], ShapeError, "input must be 2-d or 3-d", "inputs"),
    ("PReLU", {"num_parameters": 2}, [(3, 4, 4)], ShapeError, "num_parameters must be 1 or the channel count", "attrs.num_parameters"),
    ("Softmax", {"dim": 0}, [(10,)], ShapeError, "batch dimension", "attrs.dim"),
    ("RReLU", {"lower": 0.5, "upper": 0.1}, [(10,)], AttrError, "must not exceed", "attrs.lower"),
    ("Dropout", {"p": 1.5}, [(10,)], AttrError, "p must be <= 1.0", "attrs.p"),
    ("Input", {"shape": [3, 2**21, 2**21]}, [], ShapeError, "absurdly large", "attrs.shape"),
    ("Linear", {"out_features": 2**41}, [(1,)], AttrError, "out_features is absurdly large", "attrs.out_features"),
    ("Linear", {"out_features": 2**30}, [(2048, 1)], ShapeError, "absurdly large", "output"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "groups": 10**400}, [(3, 8, 8)], AttrError, "groups is absurdly large (1.00e+400)",
     "attrs.groups"),
    ("Upsample", {"scale_factor": 1e300}, [(3, 8, 8)], AttrError, "scale_factor is absurdly large", "attrs.scale_factor"),
    ("Upsample", {"scale_factor": 2**30}, [(3, 2**10, 8)], ShapeError, "absurdly large", "output"),
    ("Flatten", {"start_dim": 4}, [(3, 4, 4)], ShapeError, "do not fit", "attrs.start_dim"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": [1, 1, 1]}, [(3, 8, 8)], AttrError, "or [top, left, bottom, right]",
     "attrs.padding"),
    ("Conv2d", {"out_channels": 4, "kernel_size": 3, "padding": [0, 0, -1, 0]}, [(3, 8, 8)], AttrError, "padding must be >= 0",
     "attrs.padding"),
    ("Permute", {"dims": [1, 0, 2, 3]}, [(3, 4, 4)], AttrError, "keeps the batch (0) first", "attrs.dims"),
    ("Permute", {"dims": [0, 1, 1, 2]}, [(3, 4, 4)], AttrError, "must be a permutation", "attrs.dims"),
    ("Permute", {"dims": [0, 2, 1]}, [(3, 4, 4)], ShapeError, "do not fit a 4-d input", "attrs.dims"),
    ("Scale", {"axis": 0}, [(3, 4, 4)], ShapeError, "is the batch", "attrs.axis"),
    ("Scale", {"axis": 4}, [(3, 4, 4)], ShapeError, "out of range", "attrs.axis"),
    ("StochasticDepth", {"mode": "column"}, [(3, 4, 4)], AttrError, "mode must be one of row, batch", "attrs.mode"),
    ("LayerNorm", {"eps": -1.0}, [(3, 4, 4)], AttrError, "eps must be >= 0.0", "attrs.eps"),
]


@pytest.mark.parametrize("op,attrs,ins,error,text,field", BAD, ids=[f"{b[0]}-{b[4][:24]}" for b in BAD])
def test_bad_attributes_and_shapes_name_the_field(op, attrs, ins, error, text, field):
    with pytest.raises(DesignError) as info:
        apply(op, attrs, ins)
    assert type(info.value) is error
    assert text in info.value.what
    assert field in info.value.where


def test_absurd_parameters_are_rejected_by_shape_inference():
    """A layer whose weights alone exceed 2^40 elements is refused before anything allocates them."""
    g = Graph("huge")
    g.add("Input", name="x", attrs={"shape": [2048]})
    g.add("Linear", ["x"], name="fc", attrs={"out_features": 2**30})
    g.add("Output", ["fc"], name="y")
    with pytest.raises(ShapeError) as info:
        infer_shapes(g)
    assert info.value.line() == "parameter weight [1073741824, 2048] is absurdly large (2,199,023,255,552 elements), node 'fc' params.weight"


def test_arity_errors_read_naturally():
    for op, count, text in (("ReLU", 2, "ReLU takes 1 input, has 2"), ("DeformConv2d", 1, "DeformConv2d takes 2 to 3 inputs, has 1"),
                            ("Add", 1, "Add takes 2 or more inputs, has 1"), ("Input", 1, "Input takes 0 inputs, has 1")):
        with pytest.raises(GraphError) as info:
            registry.get(op).check_arity(count, "node 'n'")
        assert info.value.line() == f"{text}, node 'n'"
    registry.get("Concat").check_arity(5, "node 'n'")


def test_remembered_attribute_checks_tell_apart_what_python_calls_equal():
    """`validate_node` remembers attribute sets that passed, keyed so that 1, 1.0 and True, 0.0 and -0.0, and lists
    of different element types never share an entry; refusals are never remembered, and every node gets its own dicts."""
    conv, leaky = registry.get("Conv2d"), registry.get("LeakyReLU")
    first, resolved = conv.validate_node({"out_channels": 4, "kernel_size": [3, 3], "bias": False}, "a")
    again, resolved_again = conv.validate_node({"out_channels": 4, "kernel_size": [3, 3], "bias": False}, "b")
    assert first == again and first is not again and first["kernel_size"] is not again["kernel_size"]
    assert resolved == resolved_again and resolved is not resolved_again
    again["kernel_size"].append(5)
    assert conv.validate_node({"out_channels": 4, "kernel_size": [3, 3], "bias": False}, "c")[0]["kernel_size"] == [3, 3]
    assert conv.validate_node({"out_channels": 1, "kernel_size": 1, "bias": True}, "d")[0] == {"out_channels": 1, "kernel_size": 1, "bias": True}
    for bad in ({"out_channels": 1.0, "kernel_size": 1, "bias": True}, {"out_channels": True, "kernel_size": 1, "bias": True},
                {"out_channels": 1, "kernel_size": 1, "bias": 1}, {"out_channels": 4, "kernel_size": [3.0, 3], "bias": False}):
        with pytest.raises(AttrError):
            conv.validate_node(bad, "e")
    assert math.copysign(1, leaky.validate_node({"negative_slope": 0.0}, "f")[0]["negative_slope"]) == 1
    assert math.copysign(1, leaky.validate_node({"negative_slope": -0.0}, "g")[0]["negative_slope"]) == -1
    with pytest.raises(AttrError, match="node 'h' attrs.negative_slope"):
        leaky.validate_node({"negative_slope": math.nan}, "h")
    with pytest.raises(AttrError, match="node 'i' attrs.negative_slope"):
        leaky.validate_node({"negative_slope": math.nan}, "i")
