"""Fusion pass: structure, names, attributes, folded parameters and every decline reason."""

import numpy as np
import pytest

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps
from convstudio.ir.graph import verify
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import TEMPLATES, Builder, build_template


def chain(*layers, shape=(3, 8, 8)):
    """x -> layers... -> out; each layer is (op, name, attrs)."""
    b = Builder("t")
    x = b.input("x", shape)
    for op, name, attrs in layers:
        x = b.op(op, x, name, **attrs)
    b.output(x, "out")
    return b.graph


CONV = ("Conv2d", "conv", {"out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False})
BN = ("BatchNorm2d", "bn", {})


def reasons(result):
    return [d["reason"] for d in result.data["declined"]]


def test_conv_bn_relu_fuses_into_the_conv():
    g = chain(CONV, BN, ("ReLU", "relu", {}))
    before = dumps(Design(g))
    r = fuse(g)
    verify(r.graph)
    assert dumps(Design(g)) == before, "the input graph must not change"
    assert r.changed
    assert r.data["fused"] == [{"pattern": "Conv2d+BatchNorm2d+ReLU", "nodes": ["conv", "bn", "relu"], "into": "conv"}]
    assert list(r.graph.nodes) == ["x", "conv", "out"]
    conv = r.graph.nodes["conv"]
    assert conv.attrs["bias"] is True and conv.attrs["activation"] == "relu"
    assert r.graph.nodes["out"].inputs == ["conv"]
    assert r.report == ["fused conv + bn + relu -> conv (Conv2d+BatchNorm2d+ReLU)"]


@pytest.mark.parametrize(
    "op,attrs,expected,param",
    [
        ("ReLU6", {}, "relu6", 0.01),
        ("LeakyReLU", {"negative_slope": 0.2}, "leaky_relu", 0.2),
        ("ELU", {"alpha": 0.7}, "elu", 0.7),
        ("Sigmoid", {}, "sigmoid", 0.01),
        ("Tanh", {}, "tanh", 0.01),
        ("SiLU", {}, "silu", 0.01),
        ("Hardswish", {}, "hardswish", 0.01),
    ],
)
def test_each_fusable_activation_becomes_the_attribute(op, attrs, expected, param):
    r = fuse(chain(CONV, BN, (op, "act", attrs)))
    conv = r.graph.nodes["conv"].resolved
    assert (conv["activation"], conv["activation_param"]) == (expected, param)
    assert r.data["fused"][0]["pattern"] == f"Conv2d+BatchNorm2d+{op}"


def test_conv_with_activation_and_no_bn_fuses():
    r = fuse(chain(CONV, ("ReLU", "relu", {})))
    assert r.data["fused"][0]["pattern"] == "Conv2d+ReLU"
    assert r.graph.nodes["conv"].attrs.get("bias") is False


def test_transposed_and_linear_patterns():
    up = ("ConvTranspose2d", "up", {"out_channels": 4, "kernel_size": 2, "stride": 2})
    r = fuse(chain(up, ("BatchNorm2d", "bn", {}), ("SiLU", "a", {})))
    assert r.data["fused"][0]["pattern"] == "ConvTranspose2d+BatchNorm2d+SiLU"
    r = fuse(chain(("Flatten", "f", {}), ("Linear", "fc", {"out_features": 5}), ("BatchNorm1d", "bn", {}), ("Tanh", "t", {})))
    assert r.data["fused"][0]["pattern"] == "Linear+BatchNorm1d+Tanh"
    assert list(r.graph.nodes) == ["x", "f", "fc", "out"]


def test_linear_bn_fold_is_exact_in_numpy():
    """Linear + BatchNorm1d (eval) + LeakyReLU equals the folded Linear within 1e-5 relative."""
    fc = ("Linear", "fc", {"out_features": 6, "bias": False})
    g = chain(fc, ("BatchNorm1d", "bn", {"eps": 1e-3}), ("LeakyReLU", "a", {"negative_slope": 0.1}), shape=(5,))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    stats = {k: rng.normal(size=6).astype(np.float32) for k in ("weight", "bias", "running_mean")}
    stats["running_var"] = rng.uniform(0.5, 2, size=6).astype(np.float32)
    g.nodes["fc"].params = {"weight": w}
    g.nodes["bn"].params = stats
    x = rng.normal(size=(7, 5))
    y = (x @ w.T - stats["running_mean"]) / np.sqrt(stats["running_var"] + 1e-3) * stats["weight"] + stats["bias"]
    y = np.where(y > 0, y, 0.1 * y)
    fused = fuse(g).graph.nodes["fc"]
    z = x @ fused.params["weight"].T + fused.params["bias"]
    z = np.where(z > 0, z, 0.1 * z)
    assert fused.params["weight"].dtype == np.float32
    np.testing.assert_allclose(z, y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


def identity_stats(scale):
    """BN parameters that multiply channel c by scale[c] (mean 0, var + eps = 1, shift 0)."""
    c = scale.shape[0]
    return {"weight": scale, "bias": np.zeros(c, np.float32), "running_mean": np.zeros(c, np.float32),
            "running_var": np.ones(c, np.float32) - 1e-5}


def test_grouped_conv_fold_scales_output_channels():
    g = chain(("Conv2d", "conv", {"out_channels": 6, "kernel_size": 3, "groups": 3}), BN, shape=(6, 8, 8))
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    g.nodes["conv"].params = {"weight": weight, "bias": np.zeros(6, np.float32)}
    scale = np.arange(1, 7, dtype=np.float32)
    g.nodes["bn"].params = identity_stats(scale)
    folded = fuse(g).graph.nodes["conv"].params["weight"]
    np.testing.assert_allclose(folded, weight * scale[:, None, None, None], rtol=1e-6)


def test_transposed_grouped_fold_scales_dim_one_per_group():
    g = chain(("ConvTranspose2d", "up", {"out_channels": 4, "kernel_size": 2, "groups": 2, "bias": False}), BN, shape=(6, 4, 4))
    weight = np.ones((6, 2, 2, 2), np.float32)
    scale = np.array([1, 2, 3, 4], np.float32)
    g.nodes["up"].params = {"weight": weight}
    g.nodes["bn"].params = identity_stats(scale)
    folded = fuse(g).graph.nodes["up"].params["weight"]
    assert np.allclose(folded[:3, :, 0, 0], [[1, 2]] * 3) and np.allclose(folded[3:, :, 0, 0], [[3, 4]] * 3)


def test_without_weights_the_structure_fuses_and_costs_less():
    g = build_template("resnet18", (3, 64, 64), 10)
    r = fuse(g)
    assert not any(n.op == "BatchNorm2d" for n in r.graph)
    assert all(not n.params for n in r.graph)
    before, after = analyze(g).total, analyze(r.graph).total
    assert after.params < before.params and after.flops < before.flops
    assert after.macs == before.macs
    assert after.activation_bytes < before.activation_bytes


def test_declines_when_the_conv_output_has_several_consumers():
    b = Builder("t")
    x = b.input("x", (3, 8, 8))
    c = b.op("Conv2d", x, "conv", out_channels=4, kernel_size=1)
    n = b.op("BatchNorm2d", c, "bn")
    b.output(b.op("Add", [n, c], "add"), "out")
    r = fuse(b.graph)
    assert not r.changed
    assert reasons(r) == ["conv output has 2 consumers"]
    assert r.report == ["declined conv + bn: conv output has 2 consumers"]


def test_declines_when_the_conv_output_is_a_graph_output():
    b = Builder("t")
    x = b.input("x", (3, 8, 8))
    c = b.op("Conv2d", x, "conv", out_channels=4, kernel_size=1)
    b.output(c, "features")
    b.output(b.op("BatchNorm2d", c, "bn"), "out")
    r = fuse(b.graph)
    assert reasons(r) == ["conv output is a graph output (features)"]


def test_declines_bn_without_running_statistics():
    r = fuse(chain(CONV, ("BatchNorm2d", "bn", {"track_running_stats": False})))
    assert reasons(r) == ["BN without running statistics (bn has track_running_stats false)"]
    assert "bn" in r.graph.nodes


def test_declines_bn_before_the_conv():
    r = fuse(chain(("BatchNorm2d", "bn", {}), ("ReLU", "relu", {}), CONV))
    assert not r.changed
    assert reasons(r) == ["BN before the conv is not a pattern (bn follows Input x and feeds conv)"]


def test_declines_an_activation_that_cannot_fuse():
    r = fuse(chain(CONV, BN, ("GELU", "gelu", {})))
    assert r.data["fused"][0]["nodes"] == ["conv", "bn"]
    assert reasons(r) == ["activation GELU (gelu) cannot fuse into conv"]
    assert r.graph.nodes["gelu"].inputs == ["conv"]


def test_declines_bn_after_a_conv_that_already_applies_an_activation():
    r = fuse(chain(("Conv2d", "conv", {"out_channels": 4, "kernel_size": 1, "activation": "relu"}), BN))
    assert reasons(r) == ["conv applies relu before bn"]


def siamese(bn_share):
    """Two branches sharing one conv; their BNs share a group when `bn_share` is given."""
    b = Builder("t")
    for side in ("a", "b"):
        x = b.input(side, (3, 8, 8))
        c = b.op("Conv2d", x, f"{side}_conv", share="conv", out_channels=4, kernel_size=1)
        n = b.op("BatchNorm2d", c, f"{side}_bn", share=bn_share)
        b.output(b.op("ReLU", n, f"{side}_relu"), f"{side}_out")
    return b.graph


def test_declines_a_shared_conv_whose_bns_have_their_own_statistics():
    r = fuse(siamese(None))
    assert reasons(r) == ["a_bn has its own statistics while a_conv shares parameters (group 'conv')"]
    assert r.data["declined"][0]["nodes"] == ["a_conv", "b_conv"]


def test_shared_conv_and_bn_fuse_together_and_keep_sharing():
    g = siamese("bn")
    g.nodes["a_conv"].params = g.nodes["b_conv"].params = {"weight": np.ones((4, 3, 1, 1), np.float32), "bias": np.zeros(4, np.float32)}
    g.nodes["a_bn"].params = g.nodes["b_bn"].params = identity_stats(np.array([1, 2, 3, 4], np.float32))
    r = fuse(g)
    verify(r.graph)
    assert [f["into"] for f in r.data["fused"]] == ["a_conv", "b_conv"]
    a, b = r.graph.nodes["a_conv"], r.graph.nodes["b_conv"]
    assert a.share == b.share == "conv" and a.params is b.params
    assert np.allclose(a.params["weight"][:, 0, 0, 0], [1, 2, 3, 4])


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_fuses_to_a_valid_graph(name):
    t = TEMPLATES[name]
    g = build_template(name, t.small_input(64), 10)
    r = fuse(g)
    verify(r.graph)
    analyze(r.graph)
    names = set(r.graph.nodes)
    for f in r.data["fused"]:
        assert f["into"] in names and not (set(f["nodes"]) - {f["into"]}) & names
    remaining = [n.name for n in r.graph if n.op.startswith("BatchNorm")]
    explained = {n for d in r.data["declined"] for n in d["nodes"]}
    assert set(remaining) <= explained, "every BN left unfused is explained"


def test_conv_weights_without_bn_statistics_are_dropped_with_a_note():
    g = chain(CONV, BN)
    g.nodes["conv"].params = {"weight": np.ones((4, 3, 3, 3), np.float32)}
    r = fuse(g)
    assert r.graph.nodes["conv"].params == {}
    assert r.report[-1] == "conv: weights dropped (bn has no parameters or running statistics to fold)"
    assert g.nodes["conv"].params["weight"].shape == (4, 3, 3, 3)


def test_bn_after_an_activation_is_declined_naming_the_activation():
    r = fuse(chain(CONV, ("ReLU", "relu", {}), BN))
    assert r.data["fused"][0]["pattern"] == "Conv2d+ReLU"
    assert reasons(r) == ["bn follows ReLU relu; BN folds only into a Conv2d, ConvTranspose2d or Linear right before it"]


def test_a_bn_not_connected_yet_is_declined_and_the_rest_fuses():
    """Work in progress in the designer: a BN whose input is not connected yet."""
    g = chain(CONV, ("ReLU", "relu", {}), ("Conv2d", "conv2", {"out_channels": 4, "kernel_size": 1}), BN)
    g.set_input("bn", 0, None)
    r = fuse(g)
    assert [f["pattern"] for f in r.data["fused"]] == ["Conv2d+ReLU"]
    assert reasons(r) == ["bn has no input yet; BN folds only into a Conv2d, ConvTranspose2d or Linear right before it"]


def test_bn_after_a_layer_that_does_not_fold_is_declined():
    b = Builder("t")
    x = b.input("x", (3, 8, 8))
    offsets = b.op("Conv2d", x, "offsets", out_channels=18, kernel_size=3, padding=1)
    d = b.op("DeformConv2d", [x, offsets], "deform", out_channels=4, kernel_size=3, padding=1)
    b.output(b.op("BatchNorm2d", d, "bn"), "out")
    r = fuse(b.graph)
    assert not r.changed
    assert reasons(r) == ["bn follows DeformConv2d deform; BN folds only into a Conv2d, ConvTranspose2d or Linear right before it"]


def test_declines_linear_bn_on_a_sequence():
    r = fuse(chain(("Linear", "fc", {"out_features": 6}), ("BatchNorm1d", "bn", {}), shape=(4, 5)))
    assert reasons(r) == ["fc output is not (N, C), so bn normalizes another dimension"]


def test_declines_a_sharing_group_whose_members_differ():
    g = siamese("bn")
    g.set_inputs("b_out", ["b_bn"])
    g.erase("b_relu")
    r = fuse(g)
    assert not r.changed
    assert reasons(r) == ["members of sharing group 'conv' are followed by different layers"]
