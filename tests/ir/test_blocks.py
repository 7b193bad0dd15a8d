"""Blocks inserted into a small design: consistent shapes at stride 1 and 2, exact costs, reuse in templates, bad input."""

from __future__ import annotations

import pytest

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps
from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError
from convstudio.ir.graph import Graph, verify
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import BLOCKS, TEMPLATES, build_template, insert_block
from convstudio.ir.templates.probe import value_channels, value_shape
from convstudio.ir.templates.registry import block


def small_graph(channels: int = 16, size: int = 16) -> Graph:
    """input -> conv stem -> relu -> 1x1 conv -> global pool -> flatten -> linear -> output."""
    g = Graph("small")
    g.add("Input", name="x", attrs={"shape": [3, size, size]})
    g.add("Conv2d", ["x"], name="stem", attrs={"out_channels": channels, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["stem"], name="relu")
    g.add("Conv2d", ["relu"], name="head", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("GlobalAvgPool", ["head"], name="pool")
    g.add("Flatten", ["pool"], name="flatten")
    g.add("Linear", ["flatten"], name="fc", attrs={"out_features": 10})
    g.add("Output", ["fc"], name="logits")
    return g


def splice(graph: Graph, block: str, after: str, **options) -> tuple[str, list[str]]:
    """Insert a block after `after` and move the old consumers of `after` onto the block's output."""
    out, added = insert_block(graph, block, after, **options)
    graph.replace_all_uses(after, out, exclude=added)
    return out, added


CASES = [(name, stride) for name in sorted(BLOCKS) for stride in (1, 2) if stride == 1 or "stride" in BLOCKS[name].options]


def test_every_block_is_covered():
    assert {name for name, _ in CASES} == set(BLOCKS)
    assert {"basic_residual", "bottleneck_residual", "inception", "depthwise_separable", "inverted_residual", "se",
            "shuffle_unit", "dense_block", "inverted_residual_v3", "regnet_y", "mbconv", "convnext_block"} <= set(BLOCKS)


@pytest.mark.parametrize("name,stride", CASES)
def test_block_keeps_shapes_consistent(name, stride):
    graph = small_graph()
    options = {"stride": stride} if "stride" in BLOCKS[name].options else {}
    out, added = splice(graph, name, "relu", **options)
    assert added and all(n.startswith(name + "_") for n in added)
    assert graph.nodes["head"].inputs == [out]
    verify(graph)
    infer_shapes(graph, strict=True)
    c, h, w = value_shape(graph, out)
    assert (h, w) == (16 // stride, 16 // stride)
    defaults = BLOCKS[name].options
    if name == "inception":
        assert c == sum(defaults[k] for k in ("ch1x1", "ch3x3", "ch5x5", "pool_proj"))
    else:
        assert c == 16 + (defaults["num_layers"] * defaults["growth_rate"] if name == "dense_block" else 0)
    assert graph.nodes["logits"].meta["shapes"] == [(10,)]


@pytest.mark.parametrize("name", sorted(n for n in BLOCKS if "out_channels" in BLOCKS[n].options))
def test_block_changes_channels_with_stride_2(name):
    graph = small_graph()
    out, _ = splice(graph, name, "relu", out_channels=32, stride=2)
    infer_shapes(graph, strict=True)
    assert value_shape(graph, out) == (32, 8, 8)


def test_inserted_nodes_carry_their_shapes():
    graph = small_graph()
    out, added = insert_block(graph, "inverted_residual", "relu", out_channels=24, stride=2)
    assert graph.nodes["inverted_residual_conv_0_0"].meta["shapes"] == [(96, 16, 16)]
    assert graph.nodes[out].meta == {"shapes": [(24, 8, 8)], "error": None}


def param_count(graph: Graph, names: list[str]) -> int:
    per_node = analyze(graph, "torchvision").by_name()
    return sum(per_node[n].params for n in names)


def test_block_costs_match_hand_counts():
    graph = small_graph()
    _, added = insert_block(graph, "basic_residual", "relu")
    assert param_count(graph, added) == 2 * 16 * 16 * 9 + 2 * 2 * 16  # two 3x3 convs without bias, two BNs
    graph = small_graph()
    _, added = insert_block(graph, "se", "relu", reduction=4)
    assert param_count(graph, added) == (16 * 4 + 4) + (4 * 16 + 16)  # biased 1x1 reduce and expand
    graph = small_graph()
    _, added = insert_block(graph, "depthwise_separable", "relu", out_channels=32, stride=2)
    assert param_count(graph, added) == 16 * 9 + 2 * 16 + 16 * 32 + 2 * 32
    macs = analyze(graph, "torchvision").by_name()
    assert macs["depthwise_separable_dw_conv"].macs == 16 * 8 * 8 * 9
    assert macs["depthwise_separable_pw_conv"].macs == 32 * 8 * 8 * 16


def test_modern_block_costs_match_hand_counts():
    graph = small_graph()
    _, added = insert_block(graph, "dense_block", "relu", num_layers=2, growth_rate=8, bn_size=2)
    # per layer: BN over its input, 1x1 to 16 channels, BN, 3x3 to 8 channels (no conv bias)
    assert param_count(graph, added) == (2 * 16 + 16 * 16 + 2 * 16 + 16 * 8 * 9) + (2 * 24 + 24 * 16 + 2 * 16 + 16 * 8 * 9)
    graph = small_graph()
    _, added = insert_block(graph, "convnext_block", "relu")
    # depthwise 7x7 with bias, LayerNorm, Linear 16->64, Linear 64->16, layer scale
    assert param_count(graph, added) == (16 * 49 + 16) + 2 * 16 + (16 * 64 + 64) + (64 * 16 + 16) + 16
    macs = analyze(graph, "torchvision").by_name()
    assert macs["convnext_block_block_3"].macs == 16 * 16 * 16 * 64  # every position of the channels-last map
    graph = small_graph()
    _, added = insert_block(graph, "regnet_y", "relu", out_channels=32, stride=2, group_width=16)
    # projection 1x1+BN, 1x1+BN, grouped 3x3 (2 groups)+BN, SE 32->4->32, 1x1+BN
    assert param_count(graph, added) == (16 * 32 + 64) + (16 * 32 + 64) + (16 * 32 * 9 + 64) + (32 * 4 + 4 + 4 * 32 + 32) + (32 * 32 + 64)
    graph = small_graph()
    out, added = insert_block(graph, "mbconv", "relu", expansion=4, stochastic_depth=0.1)
    assert graph.nodes[out].inputs == ["mbconv_stochastic_depth", "relu"]
    assert graph.nodes["mbconv_block_2_fc1"].attrs["out_channels"] == 4 and graph.nodes["mbconv_block_0_0"].attrs["out_channels"] == 64
    graph = small_graph()
    out, added = insert_block(graph, "inverted_residual_v3", "relu", out_channels=24, stride=2, se=False)
    assert graph.nodes[out].op == "BatchNorm2d" and not any(graph.nodes[n].op == "Hardsigmoid" for n in added)
    assert graph.nodes["inverted_residual_v3_block_0_0"].attrs["out_channels"] == 64


def test_inverted_residual_adds_only_when_shapes_match():
    graph = small_graph()
    out, added = insert_block(graph, "inverted_residual", "relu", expansion=6)
    assert graph.nodes[out].op == "Add" and graph.nodes["inverted_residual_conv_0_0"].attrs["out_channels"] == 96
    graph = small_graph()
    out, added = insert_block(graph, "inverted_residual", "relu", stride=2, expansion=1)
    assert graph.nodes[out].op == "BatchNorm2d" and "inverted_residual_conv_3" not in graph.nodes
    assert graph.nodes["inverted_residual_conv_0_0"].attrs["groups"] == 16  # no expansion: depthwise first


def test_deform_conv_block_with_and_without_mask():
    graph = small_graph()
    out, _ = splice(graph, "deform_conv", "relu", out_channels=24, stride=2, mask=False)
    assert graph.nodes["deform_conv_conv"].inputs == ["relu", "deform_conv_offset"]
    infer_shapes(graph, strict=True)
    assert value_shape(graph, out) == (24, 8, 8)
    graph = small_graph()
    splice(graph, "deform_conv", "relu", kernel_size=5)
    assert len(graph.nodes["deform_conv_conv"].inputs) == 3
    assert value_shape(graph, "deform_conv_offset") == (50, 16, 16)


def test_templates_reuse_the_blocks():
    """A template's residual unit is node-for-node the block inserted with the same options."""
    for template, unit, block_name, options in (
        ("resnet18", "layer2_0", "basic_residual", {"out_channels": 128, "stride": 2}),
        ("se_resnet50", "layer2_0", "bottleneck_residual", {"out_channels": 512, "stride": 2, "se_reduction": 16}),
        ("mobilenet_v2", "features_4", "inverted_residual", {"out_channels": 32, "stride": 2, "expansion": 6}),
        ("shufflenet_v2_x1_0", "stage3_1", "shuffle_unit", {"out_channels": 232}),
        ("googlenet", "inception4a", "inception",
         {"ch1x1": 192, "ch3x3red": 96, "ch3x3": 208, "ch5x5red": 16, "ch5x5": 48, "pool_proj": 64}),
        ("densenet121", "features_denseblock2", "dense_block", {"num_layers": 12}),
        ("mobilenet_v3_large", "features_5", "inverted_residual_v3",
         {"out_channels": 40, "expanded_channels": 120, "kernel_size": 5, "activation": "relu"}),
        ("mobilenet_v3_small", "features_1", "inverted_residual_v3",
         {"out_channels": 16, "stride": 2, "expanded_channels": 16, "activation": "relu"}),
        ("regnet_y_400mf", "trunk_output_block3_block3_0", "regnet_y", {"out_channels": 208, "stride": 2}),
        ("efficientnet_b0", "features_5_1", "mbconv", {"kernel_size": 5, "stochastic_depth": 0.2 * 9 / 16}),
        ("convnext_tiny", "features_5_4", "convnext_block", {"stochastic_depth": 0.1 * 10 / 17}),
    ):
        net = build_template(template, TEMPLATES[template].small_input(64))
        entry = next(n for n in net if n.name.startswith(unit + "_"))
        shape = value_shape(net, entry.inputs[0])
        g = Graph("probe")
        g.add("Input", name="x", attrs={"shape": list(shape)})
        _, added = insert_block(g, block_name, "x", prefix=unit, **options)
        from_template = [(n.name, n.op, n.resolved) for n in net if n.name.startswith(unit + "_")]
        from_block = [(g.nodes[n].name, g.nodes[n].op, g.nodes[n].resolved) for n in added]
        assert from_template == from_block, template


def test_repeated_insertion_gets_fresh_prefixes():
    graph = small_graph()
    first, added1 = insert_block(graph, "se", "relu")
    second, added2 = insert_block(graph, "se", first)
    assert first == "se_scale" and second == "se_1_scale"
    assert not set(added1) & set(added2)
    _, added3 = insert_block(graph, "se", second, prefix="attention")
    assert all(n.startswith("attention_") for n in added3)
    verify(graph)


def test_value_channels_reads_inferred_shapes():
    graph = small_graph(channels=12)
    assert value_channels(graph, "relu") == 12
    with pytest.raises(ShapeError, match="NCHW"):
        value_channels(graph, "flatten")


def unchanged(graph: Graph, before: str) -> bool:
    verify(graph)
    return dumps(Design(graph)) == before


@pytest.mark.parametrize(
    "block,after,options,error,match",
    [
        ("nonexistent", "relu", {}, DesignError, "unknown block"),
        ("se", "relu", {"stride": 2}, DesignError, "no option stride"),
        ("se", "missing", {}, GraphError, "no node named 'missing'"),
        ("se", "logits", {}, GraphError, "Output node"),
        ("se", "flatten", {}, ShapeError, "NCHW"),
        ("se", "relu", {"reduction": 0}, AttrError, "reduction"),
        ("basic_residual", "relu", {"out_channels": 0}, AttrError, "out_channels"),
        ("basic_residual", "relu", {"stride": 0}, AttrError, "stride"),
        ("depthwise_separable", "relu", {"stride": [2, 2]}, AttrError, "stride"),
        ("deform_conv", "relu", {"mask": "yes"}, AttrError, "mask"),
        ("bottleneck_residual", "relu", {"out_channels": 30}, AttrError, "multiple of expansion"),
        ("bottleneck_residual", "relu", {"groups": 0}, AttrError, "groups"),
        ("shuffle_unit", "relu", {"out_channels": 32}, AttrError, "keeps its 16 channels"),
        ("shuffle_unit", "relu", {"out_channels": 31, "stride": 2}, AttrError, "even"),
        ("inverted_residual", "relu", {"expansion": "six"}, AttrError, "expansion"),
        ("inception", "relu", {"ch3x3": 0}, AttrError, "out_channels"),
        ("dense_block", "relu", {"growth_rate": 0}, AttrError, "growth_rate"),
        ("dense_block", "relu", {"num_layers": 2.5}, AttrError, "num_layers"),
        ("inverted_residual_v3", "relu", {"activation": "gelu"}, AttrError, "activation must be one of relu, hardswish"),
        ("inverted_residual_v3", "relu", {"kernel_size": 4}, AttrError, "kernel_size must be odd"),
        ("inverted_residual_v3", "relu", {"se": "yes"}, AttrError, "se must be true or false"),
        ("regnet_y", "relu", {"group_width": 5}, AttrError, "multiple of group_width"),
        ("regnet_y", "relu", {"se_ratio": -0.1}, AttrError, "se_ratio"),
        ("regnet_y", "relu", {"bottleneck_multiplier": 0}, AttrError, "bottleneck_multiplier must be a number > 0"),
        ("mbconv", "relu", {"expansion": 0.5}, AttrError, "expansion"),
        ("mbconv", "relu", {"stochastic_depth": 1.5}, AttrError, "probability"),
        ("convnext_block", "relu", {"layer_scale": 0}, AttrError, "layer_scale"),
        ("convnext_block", "relu", {"stochastic_depth": True}, AttrError, "stochastic_depth"),
    ],
)
def test_bad_insertions_raise_and_leave_the_graph_unchanged(block, after, options, error, match):
    graph = small_graph()
    before = dumps(Design(graph))
    with pytest.raises(error, match=match):
        insert_block(graph, block, after, **options)
    assert unchanged(graph, before)


@pytest.fixture
def mismatched_block():
    """A registered block whose residual add cannot broadcast (a strided branch added to its input)."""

    def build(b, x, channels):
        y = b.op("Conv2d", x, "conv", out_channels=channels, kernel_size=3, stride=2, padding=1)
        return b.op("Add", [x, y], "add")

    block("mismatched_add", "strided branch added to its input")(build)
    yield "mismatched_add"
    del BLOCKS["mismatched_add"]


def test_shape_error_inside_a_block_rolls_back(mismatched_block):
    graph = small_graph()
    before = dumps(Design(graph))
    with pytest.raises(ShapeError, match="mismatched_add_add"):
        insert_block(graph, mismatched_block, "relu")
    assert unchanged(graph, before)


def test_insertion_after_a_broken_value_is_refused():
    graph = small_graph()
    graph.set_attr("stem", "kernel_size", 99)  # larger than the padded input
    with pytest.raises(ShapeError, match="unknown"):
        insert_block(graph, "se", "relu")
