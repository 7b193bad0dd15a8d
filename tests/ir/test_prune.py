"""prune: dependency groups, importance, the weights of the kept channels, and the reasons groups are skipped."""

import numpy as np
import pytest

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import verify
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.compress.prune import kept_count
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import Builder, build_template

PRUNE = STRATEGIES["prune"]


def with_weights(graph, seed=0):
    """Every parameter filled with distinct random values (BN scales positive)."""
    from convstudio.ir.passes.compress.common import shapes_of

    rng = np.random.default_rng(seed)
    infer_shapes(graph)
    for node in graph:
        ins = [shapes_of(graph, r) for r in node.inputs]
        shapes = {**node.opdef.params(node.resolved, ins), **node.opdef.buffers(node.resolved, ins)}
        node.params = {k: (rng.uniform(0.5, 1.5, s) if k in ("running_var", "weight") and node.op.startswith("Batch")
                           else rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    return graph


def chain():
    """conv(8) - bn - relu - conv(6) - global pool - flatten - linear(3)."""
    b = Builder("chain")
    x = b.input("x", (2, 8, 8))
    h = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", x, "c1", out_channels=8, kernel_size=3, padding=1), "b1"), "r1")
    h = b.op("Conv2d", h, "c2", out_channels=6, kernel_size=1)
    b.output(b.op("Linear", b.op("Flatten", b.op("GlobalAvgPool", h, "pool"), "flatten"), "fc", out_features=3), "logits")
    return with_weights(b.graph)


def groups_by_name(result):
    return {grp["group"]: grp for grp in result.data["groups"]}


def test_the_most_important_filters_are_kept_with_their_weights():
    g = chain()
    w = g.nodes["c1"].params["weight"]
    w[:] = w / np.abs(w).sum(axis=(1, 2, 3), keepdims=True) * np.arange(1, 9)[[3, 0, 7, 5, 1, 6, 2, 4], None, None, None]
    r = PRUNE.apply(g, ["c1"], ratio=0.5)
    kept = [2, 3, 5, 7]  # L1 norms 8, 6, 7, 5 are the top half
    assert r.report == ["c1: 8 -> 4 channels (c1, b1, c2)"]
    assert np.array_equal(r.graph.nodes["c1"].params["weight"], g.nodes["c1"].params["weight"][kept])
    assert np.array_equal(r.graph.nodes["c1"].params["bias"], g.nodes["c1"].params["bias"][kept])
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert np.array_equal(r.graph.nodes["b1"].params[key], g.nodes["b1"].params[key][kept])
    assert np.array_equal(r.graph.nodes["c2"].params["weight"], g.nodes["c2"].params["weight"][:, kept])
    assert r.graph.nodes["c2"].params["weight"].shape == (6, 4, 1, 1) and r.data["changed"] == ["c1", "b1", "c2"]
    assert g.nodes["c1"].params["weight"].shape == (8, 2, 3, 3), "the input graph must not change"
    verify(r.graph)


def test_bn_importance_ranks_by_the_scale():
    g = chain()
    g.nodes["b1"].params["weight"] = np.array([0.1, -3, 0.2, 2, 0.3, -1, 0.4, 0.5], np.float32)
    r = PRUNE.apply(g, ["b1"], ratio=0.75, importance="bn")
    assert np.array_equal(r.graph.nodes["c1"].params["weight"], g.nodes["c1"].params["weight"][[1, 3]])
    declined = PRUNE.apply(g, ["c2"], ratio=0.5, importance="bn").data["declined"]
    assert declined == [{"node": "c2", "reason": "no BatchNorm scales the channels of c2 (importance=bn)"}]


def test_a_linear_after_flatten_loses_the_columns_of_each_removed_channel():
    b = Builder("flat")
    x = b.input("x", (3, 4, 4))
    h = b.op("MaxPool2d", b.op("Conv2d", x, "conv", out_channels=4, kernel_size=1), "pool", kernel_size=2)
    b.output(b.op("Linear", b.op("Flatten", h, "flatten"), "fc", out_features=2), "logits")
    g = with_weights(b.graph)
    g.nodes["conv"].params["weight"][[1, 2]] *= 100
    r = PRUNE.apply(g, None, ratio=0.5)
    assert r.graph.nodes["fc"].params["weight"].shape == (2, 8)
    assert np.array_equal(r.graph.nodes["fc"].params["weight"], g.nodes["fc"].params["weight"][:, 4:12])


def test_depthwise_convs_follow_their_input_and_keep_their_multiplier():
    b = Builder("dw")
    x = b.input("x", (3, 8, 8))
    h = b.op("Conv2d", x, "expand", out_channels=4, kernel_size=1)
    h = b.op("Conv2d", h, "dw", out_channels=8, kernel_size=3, padding=1, groups=4)
    b.output(b.op("Conv2d", h, "project", out_channels=5, kernel_size=1), "out")
    g = with_weights(b.graph)
    r = PRUNE.apply(g, ["expand"], ratio=0.5)
    dw = r.graph.nodes["dw"]
    assert dw.attrs["groups"] == 2 and dw.attrs["out_channels"] == 4 and dw.params["weight"].shape == (4, 1, 3, 3)
    assert r.graph.nodes["project"].params["weight"].shape == (5, 4, 1, 1)
    assert groups_by_name(r)["expand"]["members"] == ["expand", "dw", "project"]
    verify(r.graph)


def test_residual_adds_prune_all_their_branches_together():
    g = build_template("resnet18", (3, 32, 32), 10)
    r = PRUNE.apply(g, ["layer1_0_conv2"], ratio=0.5)
    grp = groups_by_name(r)["conv1"]
    assert (grp["before"], grp["after"]) == (64, 32)
    assert {"conv1", "layer1_0_conv2", "layer1_1_conv2", "layer2_0_conv1", "layer2_0_downsample_0"} <= set(grp["members"])
    infer_shapes(r.graph)
    assert r.graph.nodes["layer1_1_add"].meta["shapes"] == [(32, 8, 8)]
    assert r.graph.nodes["layer2_0_conv1"].meta["shapes"] == g.nodes["layer2_0_conv1"].meta["shapes"]


def test_se_blocks_prune_the_excite_conv_with_the_block_output():
    g = build_template("se_resnet50", (3, 32, 32), 10)
    r = PRUNE.apply(g, ["layer1_0_conv3"], ratio=0.5)
    members = groups_by_name(r)["layer1_0_conv3"]["members"]
    assert {"layer1_0_se_fc1", "layer1_0_se_fc2", "layer1_0_downsample_0", "layer1_1_conv3"} <= set(members)
    assert r.graph.nodes["layer1_0_se_fc2"].attrs["out_channels"] == 128
    assert r.graph.nodes["layer1_0_se_fc1"].attrs["out_channels"] == 16
    verify(r.graph)


def test_a_concat_prunes_each_producers_slice():
    g = with_weights(build_template("googlenet", (3, 32, 32), 10))
    r = PRUNE.apply(g, ["inception3a_branch3_1_conv"], ratio=0.5)
    kept = np.sort(np.argsort(-np.abs(g.nodes["inception3a_branch3_1_conv"].params["weight"]).sum(axis=(1, 2, 3)), kind="stable")[:16])
    columns = np.r_[0:64 + 128, 64 + 128 + kept, 64 + 128 + 32 : 256]
    for consumer in ("inception3b_branch1_conv", "inception3b_branch2_0_conv", "inception3b_branch3_0_conv"):
        assert np.array_equal(r.graph.nodes[consumer].params["weight"], g.nodes[consumer].params["weight"][:, columns]), consumer
    assert r.graph.nodes["inception3a_cat"].meta["shapes"] == [(240, 4, 4)]


def grouped_design(concat=False):
    b = Builder("grouped")
    x = b.input("x", (3, 6, 6))
    if concat:
        h = b.op("Concat", [b.op("Conv2d", x, "a", out_channels=3, kernel_size=1), b.op("Conv2d", x, "b", out_channels=5, kernel_size=1)], "cat")
    else:
        h = b.op("Conv2d", x, "c1", out_channels=8, kernel_size=1)
    h = b.op("Conv2d", h, "c2", out_channels=8, kernel_size=3, padding=1, groups=2)
    b.output(b.op("Conv2d", h, "c3", out_channels=4, kernel_size=1), "out")
    return with_weights(b.graph)


def test_grouped_convs_lose_the_same_count_from_every_block():
    g = grouped_design()
    g.nodes["c1"].params["weight"][[0, 1, 4, 6]] *= 100  # the important channels: two in each block of four
    r = PRUNE.apply(g, ["c1"], ratio=0.5)
    c2 = r.graph.nodes["c2"]
    assert c2.attrs["groups"] == 2 and c2.params["weight"].shape == (8, 2, 3, 3)
    assert np.array_equal(c2.params["weight"][:4], g.nodes["c2"].params["weight"][:4][:, [0, 1]])
    assert np.array_equal(c2.params["weight"][4:], g.nodes["c2"].params["weight"][4:][:, [0, 2]])
    r = PRUNE.apply(g, ["c2"], ratio=0.75)
    assert r.graph.nodes["c2"].params["weight"].shape == (2, 4, 3, 3) and r.report == ["c2: 8 -> 2 channels (c2, c3)"]
    verify(r.graph)


def test_a_grouped_conv_reading_a_concat_is_not_split():
    g = grouped_design(concat=True)
    reason = "grouped conv c2 (groups=2) reads channels it cannot split evenly"
    assert PRUNE.applies(g, "a") == reason and PRUNE.applies(g, "b") == reason
    assert PRUNE.apply(g, ["c2"], ratio=0.5).graph.nodes["c2"].params["weight"].shape == (4, 4, 3, 3)


@pytest.mark.parametrize("template,node,reason", [
    ("shufflenet_v2_x1_0", "stage2_0_branch2_5", "ChannelShuffle stage2_0_shuffle couples channels across groups"),
    ("resnet18", "fc", "channels feed the graph output 'logits'"),
    ("resnet18", "layer1_0_relu1", "layer1_0_relu1 is a ReLU, not a layer with prunable channels"),
    ("convnext_tiny", "features_1_0_block_0", "LayerNorm features_0_1 is not followed by pruning"),
])
def test_coupled_groups_that_cannot_be_pruned_say_why(template, node, reason):
    g = build_template(template, (3, 64, 64), 10)
    assert PRUNE.applies(g, node) == reason
    r = PRUNE.apply(g, [node])
    assert not r.changed and r.data["declined"] == [{"node": node, "reason": reason}]


def test_everywhere_prunes_what_it_can_and_reports_the_rest():
    g = build_template("shufflenet_v2_x1_0", (3, 32, 32), 10)
    r = PRUNE.apply(g, None, ratio=0.5)
    verify(r.graph)
    skipped = {grp["skipped"] for grp in r.data["groups"] if grp["skipped"]}
    assert "channels come from the graph input 'x'" in skipped and "channels feed the graph output 'logits'" in skipped
    assert any("ChannelShuffle" in s for s in skipped)
    pruned = [grp for grp in r.data["groups"] if not grp["skipped"]]
    assert pruned and all(grp["after"] == grp["before"] // 2 for grp in pruned)
    assert "skipped x: channels come from the graph input 'x'" in r.report


def test_without_weights_the_first_channels_are_kept():
    g = build_template("resnet18", (3, 32, 32), 10)
    r = PRUNE.apply(g, None, ratio=0.25)
    assert r.graph.nodes["conv1"].attrs["out_channels"] == 48 and not r.graph.nodes["conv1"].params
    verify(r.graph)


@pytest.mark.parametrize("n,ratio,kept", [(64, 0.5, 32), (10, 0.25, 7), (3, 0.9, 1), (7, 0.0, 7), (100, 0.3, 70)])
def test_kept_channels_round_down_as_torch_pruning_does(n, ratio, kept):
    assert kept_count(n, ratio) == kept


@pytest.mark.parametrize("params,message", [
    ({"ratio": 1.0}, "ratio must be at least 0 and below 1, got 1.0"),
    ({"ratio": -0.1}, "ratio must be at least 0 and below 1, got -0.1"),
    ({"importance": "l2"}, "importance must be one of l1, bn, got 'l2'"),
])
def test_bad_parameters_are_design_errors(params, message):
    with pytest.raises(DesignError) as info:
        PRUNE.apply(chain(), None, **params)
    assert info.value.what == message and info.value.where == f"--param {next(iter(params))}"
