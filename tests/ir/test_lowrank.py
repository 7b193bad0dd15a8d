"""lowrank: rank choice, the pieces' geometry, weights that multiply back to the original, and declines."""

import numpy as np
import pytest

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import verify
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.compress.lowrank import choose_rank
from convstudio.ir.passes.compress.separable import rank1_split
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import Builder, build_template

LOWRANK = STRATEGIES["lowrank"]


def conv_design(cin=4, cout=6, weights=True, **attrs):
    b = Builder("one")
    x = b.input("x", (cin, 12, 10))
    b.output(b.op("Conv2d", x, "conv", out_channels=cout, **attrs), "out")
    g = b.graph
    if weights:
        rng = np.random.default_rng(0)
        kh, kw = g.nodes["conv"].resolved["kernel_size"]
        g.nodes["conv"].params = {"weight": rng.standard_normal((cout, cin, kh, kw)).astype(np.float32),
                                  "bias": rng.standard_normal(cout).astype(np.float32)}
    return g


def linear_design(fin=12, fout=5):
    b = Builder("fc")
    x = b.input("x", (fin,))
    b.output(b.op("Linear", x, "fc", out_features=fout, activation="relu"), "out")
    rng = np.random.default_rng(1)
    b.graph.nodes["fc"].params = {"weight": rng.standard_normal((fout, fin)).astype(np.float32), "bias": rng.standard_normal(fout).astype(np.float32)}
    return b.graph


@pytest.mark.parametrize("singular,rank,energy,expected", [
    ([3.0, 2.0, 1.0], 0, 0.9, 2),      # 9 + 4 = 13 of 14 squared energy
    ([3.0, 2.0, 1.0], 0, 1.0, 3),
    ([3.0, 2.0, 1.0], 0, 0.5, 1),
    ([3.0, 2.0, 1.0], 2, 0.1, 2),      # an explicit rank wins over energy
    ([3.0, 2.0, 1.0], 9, 0.9, 3),      # capped at full rank
    ([0.0, 0.0], 0, 0.9, 1),
])
def test_rank_from_rank_or_energy(singular, rank, energy, expected):
    assert choose_rank(np.array(singular), rank, energy) == expected


def test_linear_at_full_rank_multiplies_back_to_the_weight():
    g = linear_design()
    r = LOWRANK.apply(g, None, rank=5)
    first, last = r.graph.nodes["fc_lr"], r.graph.nodes["fc"]
    assert first.attrs == {"out_features": 5, "bias": False} and last.attrs["activation"] == "relu"
    assert np.allclose(last.params["weight"] @ first.params["weight"], g.nodes["fc"].params["weight"], atol=1e-5)
    assert np.array_equal(last.params["bias"], g.nodes["fc"].params["bias"])
    assert r.report == ["fc: linear 12x5 -> rank 5 (fc_lr + fc)"]
    verify(r.graph)


def test_energy_truncates_a_low_rank_linear_to_its_rank():
    g = linear_design(20, 10)
    rng = np.random.default_rng(2)
    g.nodes["fc"].params["weight"] = (rng.standard_normal((10, 3)) @ rng.standard_normal((3, 20))).astype(np.float32)
    r = LOWRANK.apply(g, None, energy=0.999999)
    assert r.graph.nodes["fc_lr"].attrs["out_features"] == 3
    product = r.graph.nodes["fc"].params["weight"] @ r.graph.nodes["fc_lr"].params["weight"]
    assert np.allclose(product, g.nodes["fc"].params["weight"], atol=1e-4)


def test_spatial_split_gives_the_kx1_the_vertical_and_the_1xk_the_horizontal_geometry():
    g = conv_design(kernel_size=[3, 5], stride=[2, 1], padding=[1, 2], dilation=[1, 2], activation="relu")
    r = LOWRANK.apply(g, ["conv"], method="spatial", rank=4)
    v, h = r.graph.nodes["conv_kx1"].resolved, r.graph.nodes["conv"].resolved
    assert (v["kernel_size"], v["stride"], v["padding"], v["dilation"], v["bias"]) == ((3, 1), (2, 1), (1, 0), (1, 1), False)
    assert (h["kernel_size"], h["stride"], h["padding"], h["dilation"], h["bias"]) == ((1, 5), (1, 1), (0, 2), (1, 2), True)
    assert h["activation"] == "relu" and v["out_channels"] == 4
    infer_shapes(g)
    infer_shapes(r.graph)
    assert r.graph.nodes["conv"].meta["shapes"] == g.nodes["conv"].meta["shapes"] == [(6, 6, 6)]


def test_spatial_split_at_full_rank_multiplies_back_to_the_weight():
    g = conv_design(kernel_size=3, padding=1)
    r = LOWRANK.apply(g, ["conv"], method="spatial", rank=100)
    v, h = r.graph.nodes["conv_kx1"].params["weight"], r.graph.nodes["conv"].params["weight"]
    assert v.shape == (12, 4, 3, 1) and h.shape == (6, 12, 1, 3)
    assert np.allclose(np.einsum("orx,rcy->ocyx", h[:, :, 0], v[..., 0]), g.nodes["conv"].params["weight"], atol=1e-5)


def test_asymmetric_same_padding_is_split_per_axis():
    g = conv_design(kernel_size=[4, 2], padding="same")
    r = LOWRANK.apply(g, ["conv"], rank=2)
    assert r.graph.nodes["conv_kx1"].attrs["padding"] == [1, 0, 2, 0]
    assert r.graph.nodes["conv"].attrs["padding"] == [0, 0, 0, 1]
    infer_shapes(r.graph)
    assert r.graph.nodes["conv"].meta["shapes"] == [(6, 12, 10)]


def test_tucker_at_full_rank_multiplies_back_to_the_weight():
    g = conv_design(kernel_size=3, stride=2, padding=1)
    r = LOWRANK.apply(g, ["conv"], method="tucker", rank=100)
    first, core, last = (r.graph.nodes[n].params["weight"] for n in ("conv_in", "conv_core", "conv"))
    assert first.shape == (4, 4, 1, 1) and core.shape == (6, 4, 3, 3) and last.shape == (6, 6, 1, 1)
    rebuilt = np.einsum("or,rskl,si->oikl", last[..., 0, 0], core, first[..., 0, 0])
    assert np.allclose(rebuilt, g.nodes["conv"].params["weight"], atol=1e-5)
    assert r.graph.nodes["conv_core"].resolved["stride"] == (2, 2) and r.graph.nodes["conv"].resolved["kernel_size"] == (1, 1)


def test_tucker_ranks_each_channel_mode_by_energy():
    g = conv_design(cin=8, cout=10, kernel_size=3)
    rng = np.random.default_rng(4)
    core = rng.standard_normal((2, 3, 3, 3))
    w = np.einsum("or,rskl,is->oikl", rng.standard_normal((10, 2)), core, rng.standard_normal((8, 3)))
    g.nodes["conv"].params["weight"] = w.astype(np.float32)
    r = LOWRANK.apply(g, ["conv"], method="tucker", energy=0.999999)
    assert r.graph.nodes["conv_in"].attrs["out_channels"] == 3 and r.graph.nodes["conv_core"].attrs["out_channels"] == 2


def test_separable_split_is_exact_for_rank_one_filters():
    rng = np.random.default_rng(5)
    w = np.einsum("oc,ckl->ockl", rng.standard_normal((6, 4)), rng.standard_normal((4, 3, 3))).astype(np.float32)
    depthwise, pointwise = rank1_split(w)
    assert depthwise.shape == (4, 1, 3, 3) and pointwise.shape == (6, 4, 1, 1)
    assert np.allclose(np.einsum("oc,ckl->ockl", pointwise[..., 0, 0], depthwise[:, 0]), w, atol=1e-5)


@pytest.mark.parametrize("attrs,params,reason", [
    ({"kernel_size": 3, "groups": 2}, {}, "conv is a grouped conv (groups=2): its filters see different inputs"),
    ({"kernel_size": 1}, {}, "conv has a 1x1 kernel: a spatial split needs both sides above 1"),
    ({"kernel_size": [3, 1]}, {}, "conv has a 3x1 kernel: a spatial split needs both sides above 1"),
    ({"kernel_size": 1}, {"method": "tucker"}, "conv is a 1x1 conv: Tucker-2 needs a larger kernel"),
])
def test_declines_say_why(attrs, params, reason):
    g = conv_design(**attrs)
    assert LOWRANK.applies(g, "conv", **params) == reason
    assert LOWRANK.apply(g, ["conv"], **params).data["declined"] == [{"node": "conv", "reason": reason}]


def test_without_weights_an_explicit_rank_is_needed():
    g = conv_design(weights=False, kernel_size=3)
    assert LOWRANK.applies(g, "conv") == "conv has no trained weights to decompose (give rank=R for fresh weights)"
    r = LOWRANK.apply(g, ["conv"], rank=2)
    assert r.graph.nodes["conv_kx1"].attrs["out_channels"] == 2 and not r.graph.nodes["conv"].params
    g = build_template("resnet18", (3, 32, 32), 10)
    r = LOWRANK.apply(g, None, method="tucker", rank=8)
    verify(r.graph)
    assert r.graph.nodes["layer1_0_conv1_core"].attrs["out_channels"] == 8


@pytest.mark.parametrize("params,message", [
    ({"method": "cp"}, "method must be one of spatial, tucker, got 'cp'"),
    ({"rank": -1}, "rank must be 0 (use energy) or positive, got -1"),
    ({"energy": 0.0}, "energy must be above 0 and at most 1, got 0.0"),
    ({"energy": 1.5}, "energy must be above 0 and at most 1, got 1.5"),
])
def test_bad_parameters_are_design_errors(params, message):
    with pytest.raises(DesignError) as info:
        LOWRANK.apply(linear_design(), None, **params)
    assert info.value.what == message and info.value.where == f"--param {next(iter(params))}"
