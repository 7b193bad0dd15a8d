"""Templates: published parameter and conv+linear MAC counts to the integer, options, names, sharing, bad input."""

from __future__ import annotations

import math

import pytest

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps, loads
from convstudio.ir.errors import DesignError, ShapeError
from convstudio.ir.graph import verify
from convstudio.ir.templates import TEMPLATES, build_template
from convstudio.ir.templates.mobilenet import make_divisible
from convstudio.ir.templates.regnet import stage_params

# torchvision's published figures (params, conv+linear MACs) at 3x224x224 with 1000 classes; mobilenet_v1 and
# se_resnet50 have no torchvision model and use the definitions stated in their template descriptions.
PUBLISHED = {
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet34": (21_797_672, 3_663_761_408),
    "resnet50": (25_557_032, 4_089_184_256),
    "resnext50_32x4d": (25_028_904, 4_230_479_872),
    "vgg16": (138_357_544, 15_470_264_320),
    "vgg16_bn": (138_365_992, 15_470_264_320),
    "mobilenet_v2": (3_504_872, 300_774_272),
    "squeezenet1_1": (1_235_496, 349_151_936),
    "googlenet": (6_624_904, 1_498_376_192),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992),
    "mobilenet_v1": (4_231_976, 568_740_352),
    "se_resnet50": (28_088_024, 4_091_699_200),
    "convnext_tiny": (28_589_128, 4_455_531_264),
    "efficientnet_b0": (5_288_548, 385_814_752),
    "mobilenet_v3_large": (5_483_032, 216_589_760),
    "mobilenet_v3_small": (2_542_856, 56_510_400),
    "regnet_y_400mf": (4_344_144, 401_842_848),
    "densenet121": (7_978_856, 2_834_161_664),
    "inception_v3": (23_834_568, 5_713_216_096),  # at 3x299x299, without the auxiliary head
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_macs_exact(name):
    template = TEMPLATES[name]
    side = 299 if name == "inception_v3" else 224
    assert template.input_shape == (3, side, side) and template.num_classes == 1000
    report = analyze(build_template(name), "torchvision")
    assert (report.total.params, report.total.macs) == PUBLISHED[name]


# template -> (input shape, classes, width, expected output shape): small inputs, non-default options
SMALL = {
    "lenet": ((1, 8, 8), 10, None, (10,)),
    "resnet18": ((3, 32, 32), 10, None, (10,)),
    "resnet34": ((3, 64, 64), 10, None, (10,)),
    "resnet50": ((3, 64, 64), 10, None, (10,)),
    "resnext50_32x4d": ((3, 32, 32), 10, None, (10,)),
    "se_resnet50": ((3, 64, 64), 10, None, (10,)),
    "vgg16": ((3, 32, 32), 10, None, (10,)),
    "vgg16_bn": ((1, 64, 48), 7, None, (7,)),
    "mobilenet_v1": ((3, 32, 32), 10, 0.5, (10,)),
    "mobilenet_v2": ((3, 64, 64), 10, 0.5, (10,)),
    "googlenet": ((3, 64, 64), 10, None, (10,)),
    "shufflenet_v2_x1_0": ((3, 64, 64), 10, None, (10,)),
    "squeezenet1_1": ((3, 64, 64), 10, None, (10,)),
    "triplet_net": ((1, 28, 28), 16, None, (16,)),
    "unet_small": ((1, 32, 48), 3, 0.5, (3, 32, 48)),
    "deform_block": ((3, 16, 16), 10, None, (10,)),
    "convnext_tiny": ((3, 32, 32), 10, None, (10,)),
    "efficientnet_b0": ((3, 32, 48), 10, None, (10,)),
    "mobilenet_v3_large": ((3, 64, 64), 10, 0.75, (10,)),
    "mobilenet_v3_small": ((3, 32, 32), 5, 0.5, (5,)),
    "regnet_y_400mf": ((3, 32, 32), 10, None, (10,)),
    "densenet121": ((3, 32, 32), 10, None, (10,)),
    "inception_v3": ((3, 75, 75), 10, None, (10,)),
}


def test_every_template_has_a_small_case():
    assert set(SMALL) == set(TEMPLATES)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_builds_with_defaults(name):
    template = TEMPLATES[name]
    graph = build_template(name)
    verify(graph)
    assert all(tuple(graph.nodes[i].attrs["shape"]) == template.input_shape for i in graph.inputs)
    assert all(graph.nodes[o].meta["shapes"][0][0] == template.num_classes for o in graph.outputs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_with_small_input_and_options(name):
    shape, classes, width, out_shape = SMALL[name]
    graph = build_template(name, shape, classes, width)
    verify(graph)
    for out in graph.outputs:
        assert graph.nodes[out].meta["shapes"] == [out_shape]
    for inp in graph.inputs:
        assert tuple(graph.nodes[inp].attrs["shape"]) == shape
    report = analyze(graph, "torchvision")
    assert report.errors == [] and report.total.params > 0 and report.total.macs > 0


def test_resnets_build_at_32_and_64():
    for name in ("resnet18", "resnet34", "resnet50", "resnext50_32x4d", "se_resnet50"):
        for size in (32, 64):
            graph = build_template(name, (3, size, size), 10)
            assert graph.nodes["layer4_0_add"].meta["shapes"][0][1:] == (math.ceil(size / 32),) * 2
            assert graph.nodes["logits"].meta["shapes"] == [(10,)]


def test_design_file_round_trip():
    for name in ("shufflenet_v2_x1_0", "triplet_net", "deform_block"):
        text = dumps(Design(build_template(name)))
        assert dumps(loads(text)) == text


# node names read like torchvision's module paths with '_' for '.'
TORCHVISION_NAMES = {
    "resnet18": ["conv1", "bn1", "maxpool", "layer1_0_conv1", "layer1_0_bn2", "layer2_0_downsample_0",
                 "layer2_0_downsample_1", "layer4_1_conv2", "avgpool", "fc"],
    "resnet50": ["layer1_0_downsample_0", "layer1_2_conv3", "layer3_5_bn3", "layer4_2_conv3"],
    "resnext50_32x4d": ["layer1_0_conv2", "layer4_2_conv3"],
    "vgg16": ["features_0", "features_28", "features_30", "avgpool", "classifier_0", "classifier_6"],
    "vgg16_bn": ["features_1", "features_41", "features_43", "classifier_6"],
    "mobilenet_v2": ["features_0_0", "features_0_1", "features_1_conv_0_0", "features_1_conv_1", "features_1_conv_2",
                     "features_2_conv_0_0", "features_2_conv_1_0", "features_2_conv_2", "features_2_conv_3",
                     "features_17_conv_3", "features_18_0", "classifier_1"],
    "googlenet": ["conv1_conv", "conv1_bn", "maxpool1", "conv3_conv", "inception3a_branch1_conv",
                  "inception3a_branch2_1_conv", "inception3a_branch3_1_bn", "inception3a_branch4_0",
                  "inception3a_branch4_1_conv", "inception5b_branch4_1_bn", "maxpool4", "dropout", "fc"],
    "shufflenet_v2_x1_0": ["conv1_0", "conv1_1", "maxpool", "stage2_0_branch1_0", "stage2_0_branch1_4",
                           "stage2_0_branch2_7", "stage2_3_branch2_0", "stage3_7_branch2_5", "stage4_3_branch2_6",
                           "conv5_0", "conv5_1", "fc"],
    "squeezenet1_1": ["features_0", "features_2", "features_3_squeeze", "features_3_expand1x1",
                      "features_12_expand3x3", "classifier_1"],
    "se_resnet50": ["layer1_0_se_fc1", "layer1_0_se_fc2", "layer4_2_se_fc2", "layer4_2_conv3"],
    "densenet121": ["features_conv0", "features_norm0", "features_pool0", "features_denseblock1_denselayer1_norm1",
                    "features_denseblock1_denselayer6_conv2", "features_transition1_conv", "features_transition3_pool",
                    "features_denseblock4_denselayer16_conv2", "features_norm5", "classifier"],
    "inception_v3": ["Conv2d_1a_3x3_conv", "Conv2d_4a_3x3_bn", "Mixed_5b_branch5x5_2_conv", "Mixed_5d_branch_pool_conv",
                     "Mixed_6a_branch3x3dbl_3_conv", "Mixed_6e_branch7x7dbl_5_conv", "Mixed_7a_branch7x7x3_4_conv",
                     "Mixed_7c_branch3x3_2b_conv", "Mixed_7c_branch3x3dbl_3a_bn", "fc"],
    "mobilenet_v3_large": ["features_0_0", "features_1_block_0_0", "features_1_block_1_1", "features_4_block_2_fc1",
                           "features_4_block_2_scale_activation", "features_4_block_3_0", "features_16_0", "classifier_0",
                           "classifier_3"],
    "mobilenet_v3_small": ["features_1_block_1_fc2", "features_1_block_2_0", "features_11_block_3_1", "features_12_0"],
    "regnet_y_400mf": ["stem_0", "stem_1", "trunk_output_block1_block1_0_proj_0", "trunk_output_block1_block1_0_f_a_0",
                       "trunk_output_block2_block2_2_f_b_1", "trunk_output_block3_block3_5_f_se_fc1",
                       "trunk_output_block4_block4_5_f_c_1", "fc"],
    "efficientnet_b0": ["features_0_0", "features_1_0_block_0_0", "features_1_0_block_1_fc1", "features_1_0_block_2_0",
                        "features_2_0_block_3_1", "features_2_1_stochastic_depth", "features_7_0_block_3_0", "features_8_0",
                        "classifier_1"],
    "convnext_tiny": ["features_0_0", "features_0_1", "features_1_0_block_0", "features_1_0_block_2", "features_1_2_block_5",
                      "features_1_0_layer_scale", "features_2_0", "features_2_1", "features_5_8_stochastic_depth",
                      "features_7_2_block_3", "classifier_0", "classifier_2"],
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_node_names_follow_torchvision_module_paths(name):
    graph = build_template(name, TEMPLATES[name].small_input(64), 10)
    missing = [n for n in TORCHVISION_NAMES[name] if n not in graph.nodes]
    assert missing == []


def test_parameter_nodes_per_template_match_torchvision_module_counts():
    # conv + linear + BN module counts of the torchvision models (without aux heads)
    expected = {"resnet18": (21, 20), "resnet50": (54, 53), "googlenet": (58, 57), "mobilenet_v2": (53, 52),
                "shufflenet_v2_x1_0": (57, 56), "squeezenet1_1": (26, 0), "vgg16_bn": (16, 13), "densenet121": (121, 121),
                "inception_v3": (95, 94), "mobilenet_v3_large": (64, 46), "mobilenet_v3_small": (54, 34), "regnet_y_400mf": (86, 53),
                "efficientnet_b0": (82, 49), "convnext_tiny": (59, 0)}
    for name, (conv_linear, bn) in expected.items():
        ops = [n.op for n in build_template(name, TEMPLATES[name].small_input(64), 10)]
        assert (ops.count("Conv2d") + ops.count("Linear"), ops.count("BatchNorm2d")) == (conv_linear, bn), name


def test_resnet_block_structure():
    graph = build_template("resnet50", (3, 64, 64), 10)
    assert graph.nodes["layer2_0_conv2"].attrs["stride"] == 2  # v1.5: the stride sits on the 3x3
    assert graph.nodes["layer2_0_conv1"].attrs.get("stride", 1) == 1
    assert "layer1_1_downsample_0" not in graph.nodes
    resnext = build_template("resnext50_32x4d", (3, 64, 64), 10)
    assert resnext.nodes["layer1_0_conv2"].attrs["groups"] == 32
    assert resnext.nodes["layer1_0_conv2"].attrs["out_channels"] == 128


def test_se_resnet50_gates_before_the_residual_add():
    graph = build_template("se_resnet50", (3, 64, 64), 10)
    add = graph.nodes["layer1_0_add"]
    assert add.inputs[0] == "layer1_0_se_scale"
    scale = graph.nodes["layer1_0_se_scale"]
    assert scale.op == "Mul" and scale.inputs == ["layer1_0_bn3", "layer1_0_se_scale_activation"]
    assert graph.nodes["layer1_0_se_fc1"].attrs["out_channels"] == 256 // 16


def test_googlenet_follows_torchvision_basic_conv():
    graph = build_template("googlenet")
    assert graph.nodes["conv1_bn"].attrs["eps"] == 0.001
    assert graph.nodes["conv1_conv"].attrs["bias"] is False
    assert graph.nodes["inception3a_branch3_1_conv"].attrs["kernel_size"] == 3
    assert graph.nodes["maxpool1"].attrs["ceil_mode"] is True
    assert graph.nodes["dropout"].attrs["p"] == 0.2
    assert graph.nodes["inception5b_cat"].meta["shapes"] == [(1024, 7, 7)]


def test_shufflenet_splits_shuffles_and_concats():
    graph = build_template("shufflenet_v2_x1_0")
    split = graph.nodes["stage2_1_chunk"]
    assert split.op == "ChannelSplit" and split.attrs["parts"] == 2
    assert graph.nodes["stage2_1_cat"].inputs == ["stage2_1_chunk", "stage2_1_branch2_7"]
    assert graph.nodes["stage2_1_branch2_0"].inputs == ["stage2_1_chunk:1"]
    assert graph.nodes["stage2_1_shuffle"].attrs["groups"] == 2


def test_width_multiplier_scales_mobilenets():
    half = build_template("mobilenet_v2", width=0.5)
    assert half.nodes["features_0_0"].attrs["out_channels"] == make_divisible(16)
    assert half.nodes["features_18_0"].attrs["out_channels"] == 1280  # the last conv never shrinks
    wide = build_template("mobilenet_v2", width=1.4)
    assert wide.nodes["features_18_0"].attrs["out_channels"] == make_divisible(1280 * 1.4)
    # timm's mobilenetv2_050 and mobilenetv2_140 (same channel rounding): 1.97 M and 6.11 M parameters
    assert round(analyze(half, "torchvision").total.params / 1e6, 2) == 1.97
    assert round(analyze(wide, "torchvision").total.params / 1e6, 2) == 6.11
    full = analyze(build_template("mobilenet_v1"), "torchvision").total
    v1_half = analyze(build_template("mobilenet_v1", width=0.5), "torchvision").total
    assert v1_half.params < full.params / 2 and v1_half.macs < full.macs / 3
    assert make_divisible(32 * 0.35) == 16 and make_divisible(24 * 0.75) == 24 and make_divisible(3) == 8


def test_triplet_net_shares_one_embedding():
    graph = build_template("triplet_net")
    assert graph.inputs == ["anchor", "positive", "negative"]
    assert len(graph.outputs) == 3
    groups = graph.share_groups()
    assert groups and all(len(members) == 3 for members in groups.values())
    branch = [n for n in graph if n.name.startswith("anchor_") and n.op != "Output"]
    assert len(groups) == len(branch)
    report = analyze(graph, "torchvision")
    per_node = report.by_name()
    one_branch_params = sum(per_node[n.name].params for n in branch)
    assert one_branch_params == 55_840  # conv 320 + conv 18,496 + fc 32,896 + fc 4,128 (8x8 input)
    assert report.total.params == one_branch_params
    assert report.total.macs == 3 * sum(per_node[n.name].macs for n in branch)
    for out in graph.outputs:
        assert graph.nodes[out].meta["shapes"] == [(32,)]


def test_unet_decoder_uses_transposed_conv_upsample_and_skips():
    graph = build_template("unet_small")
    ops = {n.op for n in graph}
    assert {"ConvTranspose2d", "Upsample", "Concat"} <= ops
    assert graph.nodes["cat2"].inputs == ["up2", "enc2_relu2"]
    assert graph.nodes["cat1"].inputs == ["up1_proj", "enc1_relu2"]
    assert graph.nodes["logits"].meta["shapes"] == [(2, 64, 64)]


def test_deform_block_offsets_and_mask_feed_the_deformable_conv():
    graph = build_template("deform_block")
    conv = graph.nodes["deform_conv"]
    assert conv.op == "DeformConv2d"
    assert conv.inputs == ["stem_relu", "deform_offset", "deform_mask_sigmoid"]
    assert graph.nodes["deform_offset"].meta["shapes"] == [(18, 16, 16)]
    assert graph.nodes["deform_mask_sigmoid"].meta["shapes"] == [(9, 16, 16)]


def test_bad_template_requests_raise_design_errors():
    with pytest.raises(DesignError, match="unknown template"):
        build_template("resnet1000")
    with pytest.raises(DesignError, match="no width multiplier"):
        build_template("resnet18", width=0.5)
    for width in (0, -1.0, "wide", True):
        with pytest.raises(DesignError, match="width multiplier"):
            build_template("mobilenet_v2", width=width)
    for classes in (0, "ten", 2.5):
        with pytest.raises(DesignError, match="classes"):
            build_template("resnet18", num_classes=classes)
    with pytest.raises(ShapeError, match="features_"):
        build_template("vgg16", (3, 16, 16))  # five 2x2 pools do not fit
    with pytest.raises(ShapeError, match="cat2"):
        build_template("unet_small", (3, 30, 30))  # 30 is not divisible by 4


def test_densenet_layers_read_every_earlier_feature_map():
    graph = build_template("densenet121", (3, 64, 64), 10)
    cat = graph.nodes["features_denseblock1_denselayer3_cat"]
    assert cat.inputs == ["features_pool0", "features_denseblock1_denselayer1_conv2", "features_denseblock1_denselayer2_conv2"]
    assert graph.nodes["features_denseblock1_denselayer1_norm1"].inputs == ["features_pool0"]
    assert graph.nodes["features_denseblock1_cat"].meta["shapes"] == [(64 + 6 * 32, 16, 16)]
    assert graph.nodes["features_transition1_conv"].attrs["out_channels"] == 128
    assert graph.nodes["features_transition1_pool"].meta["shapes"] == [(128, 8, 8)]
    assert graph.nodes["features_norm5"].meta["shapes"] == [(1024, 2, 2)]


def test_inception_v3_needs_75_pixels_and_keeps_torchvision_shapes():
    template = TEMPLATES["inception_v3"]
    assert template.min_side == 75 and template.small_input(64) == (3, 75, 75) and template.small_input(128) == (3, 128, 128)
    assert TEMPLATES["resnet18"].small_input(64) == (3, 64, 64) and TEMPLATES["lenet"].small_input(64) == TEMPLATES["lenet"].input_shape
    graph = build_template("inception_v3")
    shapes = {name: graph.nodes[name].meta["shapes"][0] for name in ("maxpool2", "Mixed_5d_cat", "Mixed_6e_cat", "Mixed_7c_cat")}
    assert shapes == {"maxpool2": (192, 35, 35), "Mixed_5d_cat": (288, 35, 35), "Mixed_6e_cat": (768, 17, 17), "Mixed_7c_cat": (2048, 8, 8)}
    assert graph.nodes["Mixed_6b_branch7x7_2_conv"].attrs["kernel_size"] == [1, 7]
    assert graph.nodes["Mixed_5b_avg_pool2d"].resolved["count_include_pad"] is True
    assert graph.nodes["Conv2d_1a_3x3_bn"].attrs["eps"] == 0.001
    with pytest.raises(DesignError, match="'inception_v3' needs a spatial size of at least 75, got input 3x299x74"):
        build_template("inception_v3", (3, 299, 74))
    assert build_template("inception_v3", (3, 75, 75)).nodes["Mixed_7c_cat"].meta["shapes"] == [(2048, 1, 1)]


def test_mobilenet_v3_units_gate_with_hard_sigmoid_and_add_only_on_matching_shapes():
    graph = build_template("mobilenet_v3_large")
    assert graph.nodes["features_4_block_2_fc1"].attrs["out_channels"] == make_divisible(72 // 4)
    assert graph.nodes["features_4_block_2_scale_activation"].op == "Hardsigmoid"
    assert graph.nodes["features_4_block_2_activation"].op == "ReLU"
    assert graph.nodes["features_7_block_0_2"].op == "Hardswish" and graph.nodes["features_3_block_0_2"].op == "ReLU"
    assert graph.nodes["features_1_block_0_0"].attrs["groups"] == 16  # no expansion: the depthwise conv comes first
    assert graph.nodes["features_1_add"].inputs == ["features_1_block_1_1", "features_0_2"]
    assert "features_2_add" not in graph.nodes and "features_3_add" in graph.nodes
    assert {(n.attrs["eps"], n.attrs["momentum"]) for n in graph if n.op == "BatchNorm2d"} == {(0.001, 0.01)}
    # torchvision's mobilenet_v3_large(width_mult=0.75) and mobilenet_v3_small(width_mult=0.75)
    assert analyze(build_template("mobilenet_v3_large", width=0.75), "torchvision").total.params == 3_377_576
    assert analyze(build_template("mobilenet_v3_small", width=0.75), "torchvision").total.params == 1_653_920


def test_regnet_stages_follow_the_quantized_linear_rule():
    assert stage_params(16, 48, 27.89, 2.09, 8) == [(48, 1, 8), (104, 3, 8), (208, 6, 8), (440, 6, 8)]
    graph = build_template("regnet_y_400mf", (3, 64, 64), 10)
    unit = "trunk_output_block2_block2_1"
    assert graph.nodes[f"{unit}_f_b_0"].attrs["groups"] == 104 // 8
    assert graph.nodes[f"{unit}_f_se_fc1"].attrs["out_channels"] == round(0.25 * 104)
    assert graph.nodes["trunk_output_block2_block2_0_f_se_fc1"].attrs["out_channels"] == round(0.25 * 48)
    assert graph.nodes[f"{unit}_add"].inputs == ["trunk_output_block2_block2_0_activation", f"{unit}_f_c_1"]
    assert graph.nodes["trunk_output_block2_block2_0_proj_0"].attrs["stride"] == 2


def test_efficientnet_stochastic_depth_grows_over_the_residual_blocks():
    graph = build_template("efficientnet_b0", (3, 64, 64), 10)
    drops = {n.name: n.attrs["p"] for n in graph if n.op == "StochasticDepth"}
    assert len(drops) == 9  # only blocks whose input and output shapes match have a residual
    assert drops["features_2_1_stochastic_depth"] == pytest.approx(0.2 * 2 / 16)
    assert drops["features_6_3_stochastic_depth"] == pytest.approx(0.2 * 14 / 16)
    assert graph.nodes["features_2_1_add"].inputs == ["features_2_1_stochastic_depth", "features_2_0_block_3_1"]
    assert graph.nodes["features_1_0_block_1_fc1"].attrs["out_channels"] == 32 // 4
    assert graph.nodes["features_2_0_block_2_fc1"].attrs["out_channels"] == 16 // 4
    assert graph.nodes["features_2_0_block_2_activation"].op == "SiLU"


def test_convnext_blocks_run_channels_last_between_the_permutes():
    graph = build_template("convnext_tiny", (3, 64, 64), 10)
    unit = "features_3_1"
    assert graph.nodes[f"{unit}_block_1"].attrs["dims"] == [0, 2, 3, 1]
    assert graph.nodes[f"{unit}_block_2"].attrs == {"eps": 1e-6, "channels_last": True}
    assert graph.nodes[f"{unit}_block_3"].meta["shapes"] == [(8, 8, 4 * 192)]
    assert graph.nodes[f"{unit}_block_6"].meta["shapes"] == [(192, 8, 8)]
    assert graph.nodes["features_0_1"].resolved["channels_last"] is False
    report = analyze(graph, "torchvision").by_name()
    assert report[f"{unit}_layer_scale"].params == 192
    drops = [n.attrs["p"] for n in graph if n.op == "StochasticDepth"]
    assert len(drops) == 18 and drops[0] == 0 and drops[-1] == pytest.approx(0.1)
