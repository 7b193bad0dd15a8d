"""Compression strategies: each applies on a template where it fits, declines with a reason where it
does not, keeps the graph valid, and shows the textbook savings."""

import numpy as np
import pytest

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import verify
from convstudio.ir.passes.compress import STRATEGIES, parse_param_text
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import Builder, build_template


def single_conv(cin, cout, k, shape_hw=16, **attrs):
    b = Builder("one")
    x = b.input("x", (cin, shape_hw, shape_hw))
    b.output(b.op("Conv2d", x, "conv", out_channels=cout, kernel_size=k, **attrs), "out")
    return b.graph


def out_shapes(graph):
    infer_shapes(graph)
    return {n: graph.nodes[n].meta["shapes"] for n in graph.outputs}


def test_table_lists_every_strategy():
    assert list(STRATEGIES) == ["stack3x3", "separable", "group_shuffle", "stride2", "pool", "width", "bottleneck", "prune", "lowrank"]
    for s in STRATEGIES.values():
        assert s.summary and isinstance(s.params, dict)
    assert [s.name for s in STRATEGIES.values() if s.keeps_weights] == ["separable", "width", "prune", "lowrank"]


def test_two_3x3_instead_of_a_5x5_use_18_25_of_the_weights():
    c = 32
    g = single_conv(c, c, 5, padding=2, bias=False)
    r = STRATEGIES["stack3x3"].apply(g, ["conv"])
    assert analyze(r.graph).total.params * 25 == analyze(g).total.params * 18
    assert [n.op for n in r.graph] == ["Input", "Conv2d", "Conv2d", "Output"]
    assert out_shapes(r.graph) == out_shapes(g)


def test_stack_of_three_for_a_7x7_valid_conv_keeps_the_shape():
    g = single_conv(4, 8, 7, padding=1)
    r = STRATEGIES["stack3x3"].apply(g, ["conv"], width=6)
    assert r.data["changed"] == ["conv_3x3_1", "conv_3x3_2", "conv"]
    assert out_shapes(r.graph) == out_shapes(g)
    assert r.graph.nodes["conv_3x3_1"].attrs["out_channels"] == 6


def test_depthwise_separable_3x3_256_costs_1_256_plus_1_9():
    g = single_conv(256, 256, 3, padding=1, bias=False)
    r = STRATEGIES["separable"].apply(g, ["conv"], bn=False, activation="none")
    ratio = analyze(r.graph).total.macs / analyze(g).total.macs
    assert ratio == pytest.approx(1 / 256 + 1 / 9, rel=1e-12)
    assert out_shapes(r.graph) == out_shapes(g)


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_grouped_1x1_costs_1_over_g(groups):
    g = single_conv(64, 128, 1, bias=False)
    r = STRATEGIES["group_shuffle"].apply(g, ["conv"], groups=groups)
    assert analyze(r.graph).total.macs * groups == analyze(g).total.macs
    assert [n.op for n in r.graph] == ["Input", "Conv2d", "ChannelShuffle", "Output"]


# (strategy, template, input, nodes, params, declined node, expected reason start)
CASES = [
    ("stack3x3", "lenet", (1, 28, 28), ["conv2"], {"width": 6}, ("resnet18", "layer1_0_conv1"), "kernel 3x3 is not odd and at least 5"),
    ("separable", "resnet18", (3, 32, 32), ["layer1_0_conv1"], {}, ("mobilenet_v2", "features_1_conv_1"),
     "features_1_conv_1 is already a pointwise (1x1) conv"),
    ("group_shuffle", "mobilenet_v2", (3, 32, 32), ["features_2_conv_0_0", "features_2_conv_2"], {"groups": 4},
     ("mobilenet_v2", "features_0_0"), "features_0_0 is not a 1x1 conv"),
    ("stride2", "mobilenet_v2", (3, 32, 32), ["features_1_conv_0_0"], {}, ("resnet18", "layer1_0_conv1"),
     "layer1_0_add joins other values"),
    ("pool", "resnet18", (3, 64, 64), ["layer4_0_relu2"], {"kind": "avg"}, ("resnet18", "layer1_0_conv1"), "shapes no longer line up"),
    ("width", "resnet18", (3, 32, 32), None, {"alpha": 0.5}, ("resnet18", "fc"), "fc is the final classifier"),
    ("bottleneck", "resnet18", (3, 32, 32), ["layer4_0_conv2"], {"reduction": 4}, ("resnet18", "conv1"),
     "a 16-channel bottleneck would not be cheaper (3 in, 64 out)"),
    ("prune", "mobilenet_v2", (3, 32, 32), ["features_2_conv_0_0"], {"ratio": 0.5}, ("resnet18", "fc"),
     "channels feed the graph output 'logits'"),
    ("lowrank", "resnet18", (3, 32, 32), ["layer1_0_conv1", "fc"], {"rank": 8}, ("mobilenet_v2", "features_1_conv_0_0"),
     "features_1_conv_0_0 is a grouped conv (groups=32)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_strategy_applies_and_the_result_verifies(case):
    name, template, shape, nodes, params, _, _ = case
    g = build_template(template, shape, 10)
    before = dumps(Design(g))
    r = STRATEGIES[name].apply(g, nodes, **params)
    assert dumps(Design(g)) == before, "the input graph must not change"
    assert r.changed and r.data["changed"]
    verify(r.graph)
    assert out_shapes(r.graph) == out_shapes(g)
    assert analyze(r.graph).total.macs < analyze(g).total.macs
    train_one_step(r.graph, shape)


def train_one_step(graph, shape):
    """The rewritten design lowers to PyTorch and one SGD step on random data changes its weights."""
    import torch

    from convstudio.backends.torch import lower

    module = lower(graph).train()
    before = [p.detach().clone() for p in module.parameters()]
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    loss = torch.nn.functional.cross_entropy(module(torch.randn(4, *shape, generator=gen)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_strategy_declines_with_a_reason(case):
    name, *_, (template, node), reason = case
    g = build_template(template, (3, 32, 32), 10)
    assert STRATEGIES[name].applies(g, node).startswith(reason)
    r = STRATEGIES[name].apply(g, [node])
    assert not r.changed
    assert r.data["declined"][0]["node"] == node and r.data["declined"][0]["reason"].startswith(reason)
    assert r.report[0].startswith(f"declined {node}: {reason}")


def test_group_shuffle_declines_groups_that_do_not_divide():
    g = single_conv(6, 12, 1)
    assert STRATEGIES["group_shuffle"].applies(g, "conv", groups=4) == "groups 4 does not divide conv's channels (6 in, 12 out)"


def test_stride2_removes_a_pool_it_makes_redundant():
    g = build_template("lenet", (1, 28, 28), 10)
    r = STRATEGIES["stride2"].apply(g, ["conv1"])
    assert "pool1" not in r.graph.nodes and r.graph.nodes["conv1"].resolved["stride"] == (2, 2)
    assert r.graph.nodes["conv2"].meta["shapes"] == g.nodes["conv2"].meta["shapes"]


def test_width_keeps_residual_and_concat_shapes_consistent():
    for template in ("resnet50", "googlenet", "shufflenet_v2_x1_0", "mobilenet_v2", "resnext50_32x4d"):
        g = build_template(template, (3, 64, 64), 10)
        r = STRATEGIES["width"].apply(g, None, alpha=0.5)
        verify(r.graph)
        assert out_shapes(r.graph) == out_shapes(g)
        assert analyze(r.graph).total.params < 0.4 * analyze(g).total.params, template


def test_width_rounds_grouped_convs_to_their_groups():
    g = build_template("resnext50_32x4d", (3, 32, 32), 10)
    r = STRATEGIES["width"].apply(g, None, alpha=0.3)
    conv = r.graph.nodes["layer1_0_conv2"].resolved
    assert conv["groups"] == 32 and conv["out_channels"] % 32 == 0


def test_bad_names_and_params_are_design_errors():
    g = build_template("lenet")
    with pytest.raises(DesignError, match="no node named 'nope'"):
        STRATEGIES["separable"].apply(g, ["nope"])
    with pytest.raises(DesignError, match="has no parameter 'x'"):
        STRATEGIES["separable"].apply(g, None, x=1)
    with pytest.raises(DesignError, match="must be a int"):
        parse_param_text(STRATEGIES["group_shuffle"].params, "groups", "two")
    assert parse_param_text(STRATEGIES["separable"].params, "bn", "false") is False


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_all_on_resnet18_keeps_the_graph_valid(name):
    g = build_template("resnet18", (3, 32, 32), 10)
    r = STRATEGIES[name].apply(g, None)
    verify(r.graph)
    assert out_shapes(r.graph) == out_shapes(g)


def test_pool_declines_where_a_graph_output_would_change_shape():
    g = build_template("unet_small", (3, 32, 32), 2)
    first_conv = next(n.name for n in g if n.op == "Conv2d")
    reason = STRATEGIES["pool"].applies(g, first_conv)
    assert reason == "output logits would change from ['N', 2, 32, 32] to ['N', 2, 16, 16]"


def test_width_scales_every_conv_but_not_the_classifier():
    g = build_template("resnet18", (3, 32, 32), 10)
    r = STRATEGIES["width"].apply(g, None, alpha=0.5)
    for node in g:
        if node.op == "Conv2d":
            assert r.graph.nodes[node.name].attrs["out_channels"] * 2 == node.attrs["out_channels"], node.name
    assert r.graph.nodes["fc"].attrs["out_features"] == 10


def test_weights_whose_shapes_change_are_sliced_or_dropped():
    g = build_template("resnet18", (3, 32, 32), 10)
    g.nodes["fc"].params = {"weight": np.arange(5120, dtype=np.float32).reshape(10, 512), "bias": np.zeros(10, np.float32)}
    r = STRATEGIES["width"].apply(g, ["layer1_0_conv1"], alpha=0.5)
    assert r.graph.nodes["fc"].params["weight"].shape == (10, 512), "fc's input width did not change"
    r = STRATEGIES["width"].apply(g, None, alpha=0.5)
    assert np.array_equal(r.graph.nodes["fc"].params["weight"], g.nodes["fc"].params["weight"][:, :256]), "no conv weights: the first channels"
    assert r.report[-1] == "kept the most important channels' weights (L1) for fc"
    g = build_template("shufflenet_v2_x1_0", (3, 32, 32), 10)
    g.nodes["stage2_0_branch1_2"].params = {"weight": np.zeros((58, 24, 1, 1), np.float32)}
    r = STRATEGIES["width"].apply(g, None, alpha=0.5)
    assert r.graph.nodes["stage2_0_branch1_2"].params == {}, "its output channels feed a ChannelShuffle: no slicing"
    assert r.report[-1] == "fresh weights needed for stage2_0_branch1_2"


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("group_shuffle", {"groups": 0}, "groups must be at least 2, got 0"),
        ("stack3x3", {"width": -2}, "width must be 0 (the conv's out_channels) or positive, got -2"),
        ("stack3x3", {"activation": "gelu"}, "activation must be one of none, relu"),
        ("separable", {"activation": "gelu"}, "activation must be one of none, relu"),
        ("pool", {"kind": "median"}, "kind must be max or avg, got 'median'"),
        ("pool", {"kernel": 1}, "kernel must be at least 2, got 1"),
        ("bottleneck", {"reduction": 1}, "reduction must be at least 2, got 1"),
        ("width", {"alpha": 0.0}, "alpha must be a positive number, got 0.0"),
        ("width", {"alpha": float("inf")}, "alpha must be a positive number, got inf"),
        ("width", {"alpha": float("nan")}, "alpha must be a positive number, got nan"),
    ],
)
def test_bad_parameter_values_are_rejected_before_any_node(name, params, message):
    """Even where the strategy applies nowhere, a bad value is named (not hidden behind 'applies nowhere')."""
    g = single_conv(4, 4, 1)
    with pytest.raises(DesignError) as info:
        STRATEGIES[name].apply(g, None, **params)
    assert info.value.what.startswith(message) and info.value.where == f"--param {next(iter(params))}"


def test_a_node_listed_twice_is_rewritten_once():
    g = single_conv(8, 8, 3, padding=1)
    r = STRATEGIES["separable"].apply(g, ["conv", "conv"])
    assert r.data["declined"] == [] and r.data["changed"] == ["conv_dw", "conv_dw_bn", "conv_dw_relu", "conv"]


def test_a_pipeline_of_named_steps_feeds_each_the_previous_graph():
    from convstudio.ir.passes import run_pipeline
    from convstudio.ir.passes.fuse import fuse

    g = build_template("resnet18", (3, 32, 32), 10)
    steps = [("fuse", fuse), ("width", lambda graph: STRATEGIES["width"].apply(graph, None, alpha=0.5))]
    final, results = run_pipeline(g, steps)
    assert [name for name, _ in results] == ["fuse", "width"]
    assert results[1][1].graph is final and all(r.changed for _, r in results)
    assert not any(n.op == "BatchNorm2d" for n in final) and final.nodes["conv1"].attrs["out_channels"] == 32
    verify(final)
