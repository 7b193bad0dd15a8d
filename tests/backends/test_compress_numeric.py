"""Weight-preserving compression, checked numerically: pruned designs validate, lower to PyTorch and run in
ONNX Runtime with the same output; decompositions at full rank compute the original function."""

import numpy as np
import pytest
import torch

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.runtime import open_session, run
from convstudio.backends.torch import lower
from convstudio.ir.design import Design
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import Builder, build_template, insert_block
from tests.backends.onnx_checks import assert_validates
from tests.backends.test_fuse_numeric import randomize

pytestmark = pytest.mark.usefixtures("one_thread")


def torch_output(graph, x: np.ndarray) -> np.ndarray:
    module = lower(graph).eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def ort_output(graph, x: np.ndarray) -> np.ndarray:
    session, _, _ = open_session(export_model(graph), provider="cpu")
    return run(session, {graph.inputs[0]: x})[0]


def sample(graph, batch=2, seed=0) -> np.ndarray:
    infer_shapes(graph)
    shape = graph.nodes[graph.inputs[0]].meta["shapes"][0]
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def dense_block_design():
    """A densenet-style block: each layer sees the concat of all earlier outputs."""
    b = Builder("dense")
    x = b.input("x", (3, 32, 32))
    stem = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", x, "stem", out_channels=16, kernel_size=3, padding=1, bias=False), "stem_bn"), "stem_relu")
    out, _ = insert_block(b.graph, "dense_block", stem)
    pooled = b.op("Flatten", b.op("GlobalAvgPool", out, "pool"), "flatten")
    b.output(b.op("Linear", pooled, "fc", out_features=10), "logits")
    return b.graph


def chain_with_zero_filters():
    """conv-bn-relu twice, a residual block, a global pool and a linear; half of the channels of every prunable
    group are dead (zero filters, zero BN scale and shift), so they contribute exactly nothing downstream."""
    b = Builder("chain")
    x = b.input("x", (3, 16, 16))
    h = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", x, "c1", out_channels=16, kernel_size=3, padding=1), "b1"), "r1")
    h = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", h, "c2", out_channels=12, kernel_size=3, padding=1), "b2"), "r2")
    branch = b.op("BatchNorm2d", b.op("Conv2d", h, "c3", out_channels=12, kernel_size=3, padding=1, bias=False), "b3")
    h = b.op("ReLU", b.op("Add", [h, branch], "add"), "r3")
    h = b.op("Linear", b.op("Flatten", b.op("GlobalAvgPool", h, "pool"), "flatten"), "fc1", out_features=8, activation="relu")
    b.output(b.op("Linear", h, "fc2", out_features=5), "logits")
    g = b.graph
    randomize(g, 1)
    rng = np.random.default_rng(3)
    for producers, norms, n in ((["c1"], ["b1"], 16), (["c2", "c3"], ["b2", "b3"], 12), (["fc1"], [], 8)):
        dead = rng.choice(n, n // 2, replace=False)
        for name in producers:
            g.nodes[name].params = {k: v.copy() for k, v in g.nodes[name].params.items()}
            for v in g.nodes[name].params.values():
                v[dead] = 0
        for name in norms:
            g.nodes[name].params = {k: v.copy() for k, v in g.nodes[name].params.items()}
            g.nodes[name].params["weight"][dead] = 0
            g.nodes[name].params["bias"][dead] = 0
    return g


def test_pruning_dead_channels_leaves_the_output_unchanged():
    g = chain_with_zero_filters()
    r = STRATEGIES["prune"].apply(g, None, ratio=0.5, importance="l1")
    pruned = {grp["group"]: (grp["before"], grp["after"]) for grp in r.data["groups"] if not grp["skipped"]}
    assert pruned == {"c1": (16, 8), "c2": (12, 6), "fc1": (8, 4)}
    assert r.graph.nodes["c3"].params["weight"].shape == (6, 6, 3, 3)
    assert r.graph.nodes["fc2"].params["weight"].shape == (5, 4)
    x = sample(g)
    assert np.abs(torch_output(r.graph, x) - torch_output(g, x)).max() <= 1e-6


def test_pruning_dead_channels_of_a_grouped_conv_leaves_the_output_unchanged():
    b = Builder("grouped")
    x = b.input("x", (4, 8, 8))
    h = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", x, "c1", out_channels=8, kernel_size=1), "b1"), "r1")
    h = b.op("ReLU", b.op("BatchNorm2d", b.op("Conv2d", h, "c2", out_channels=8, kernel_size=3, padding=1, groups=2), "b2"), "r2")
    b.output(b.op("Conv2d", h, "c3", out_channels=6, kernel_size=1), "out")
    g = b.graph
    randomize(g, 4)
    for conv, bn, dead in (("c1", "b1", [1, 2, 5, 7]), ("c2", "b2", [0, 3, 4, 6])):
        for name in (conv, bn):
            g.nodes[name].params = {k: v.copy() for k, v in g.nodes[name].params.items()}
        g.nodes[conv].params["weight"][dead] = 0
        g.nodes[conv].params["bias"][dead] = 0
        g.nodes[bn].params["weight"][dead] = 0
        g.nodes[bn].params["bias"][dead] = 0
    r = STRATEGIES["prune"].apply(g, None, ratio=0.5)
    assert r.graph.nodes["c2"].params["weight"].shape == (4, 2, 3, 3) and r.graph.nodes["c2"].attrs["groups"] == 2
    x = sample(g)
    assert np.abs(torch_output(r.graph, x) - torch_output(g, x)).max() <= 1e-6


TEMPLATES = ["resnet18", "mobilenet_v2", "shufflenet_v2_x1_0", "googlenet", "se_resnet50", "resnext50_32x4d"]


@pytest.mark.parametrize("name", [*TEMPLATES, "dense_block"])
def test_pruned_designs_validate_and_agree_in_onnx_runtime(name):
    g = dense_block_design() if name == "dense_block" else build_template(name, (3, 32, 32), 10)
    randomize(g)
    r = STRATEGIES["prune"].apply(g, None, ratio=0.5)
    assert r.changed and any(not grp["skipped"] for grp in r.data["groups"])
    assert r.report == [line for line in r.report if line]
    assert_validates(Design(r.graph))
    x = sample(r.graph)
    expected = torch_output(r.graph, x)
    assert expected.shape == (2, 10) and np.isfinite(expected).all()
    assert np.abs(ort_output(r.graph, x) - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def single_layer(op, in_shape, **attrs):
    b = Builder("one")
    x = b.input("x", in_shape)
    b.output(b.op(op, x, "layer", **attrs), "out")
    randomize(b.graph, 2)
    return b.graph


def assert_same_output(before, after, tol=1e-4):
    x = sample(before)
    expected = torch_output(before, x)
    assert np.abs(torch_output(after, x) - expected).max() <= tol * max(1.0, float(np.abs(expected).max()))


LOWRANK_CASES = [
    ("Linear", (24,), {"out_features": 10, "activation": "relu"}, {}),
    ("Conv2d", (5, 13, 11), {"out_channels": 7, "kernel_size": 3, "padding": 1, "stride": 2}, {"method": "spatial"}),
    ("Conv2d", (5, 13, 11), {"out_channels": 7, "kernel_size": [3, 5], "padding": [2, 1], "stride": [2, 1], "dilation": [2, 1]},
     {"method": "spatial"}),
    ("Conv2d", (5, 12, 12), {"out_channels": 7, "kernel_size": 4, "padding": "same", "activation": "relu6"}, {"method": "spatial"}),
    ("Conv2d", (5, 13, 11), {"out_channels": 7, "kernel_size": 3, "padding": 1, "stride": 2}, {"method": "tucker"}),
    ("Conv2d", (5, 13, 11), {"out_channels": 7, "kernel_size": [3, 5], "padding": [2, 1], "dilation": [2, 1]}, {"method": "tucker"}),
]


@pytest.mark.parametrize("case", LOWRANK_CASES, ids=[f"{c[0]}-{c[3].get('method', 'svd')}-{i}" for i, c in enumerate(LOWRANK_CASES)])
def test_lowrank_at_full_rank_computes_the_original_function(case):
    op, shape, attrs, params = case
    g = single_layer(op, shape, **attrs)
    r = STRATEGIES["lowrank"].apply(g, None, rank=1000, **params)
    assert r.changed
    assert_same_output(g, r.graph)


def test_lowrank_by_energy_on_resnet18_validates_and_agrees_in_onnx_runtime():
    g = build_template("resnet18", (3, 32, 32), 10)
    randomize(g)
    r = STRATEGIES["lowrank"].apply(g, ["layer1_0_conv1", "fc"], energy=0.9)
    r = STRATEGIES["lowrank"].apply(r.graph, ["layer1_1_conv2"], method="tucker", energy=0.9)
    assert {"layer1_0_conv1_kx1", "fc_lr", "layer1_1_conv2_in", "layer1_1_conv2_core"} <= set(r.graph.nodes)
    assert_validates(Design(r.graph))
    x = sample(r.graph)
    expected = torch_output(r.graph, x)
    assert np.abs(ort_output(r.graph, x) - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("bn", [False, True])
def test_separable_is_exact_for_filters_of_rank_one_per_input_channel(bn):
    g = single_layer("Conv2d", (5, 13, 11), out_channels=7, kernel_size=3, padding=1, stride=2)
    rng = np.random.default_rng(6)
    g.nodes["layer"].params["weight"] = np.einsum("oc,ckl->ockl", rng.standard_normal((7, 5)), rng.standard_normal((5, 3, 3))).astype(np.float32)
    r = STRATEGIES["separable"].apply(g, None, bn=bn, activation="none")
    assert_same_output(g, r.graph)


def test_width_keeps_the_function_when_the_dropped_channels_are_dead():
    g = chain_with_zero_filters()
    r = STRATEGIES["width"].apply(g, None, alpha=0.5)
    assert r.graph.nodes["c1"].attrs["out_channels"] == 8 and r.graph.nodes["c1"].params["weight"].shape == (8, 3, 3, 3)
    x = sample(g)
    assert np.abs(torch_output(r.graph, x) - torch_output(g, x)).max() <= 1e-6


@pytest.fixture
def trained_design(tmp_path):
    """The dead-channel chain saved with its weights beside it."""
    from convstudio.backends.weights import save_weights
    from convstudio.ir.design import save

    g = chain_with_zero_filters()
    save_weights(g, tmp_path / "chain.safetensors")
    save(Design(g, weights="chain.safetensors"), tmp_path / "chain.json")
    return g, tmp_path / "chain.json"


@pytest.mark.parametrize("args", [["prune", "--param", "ratio=0.5", "--param", "importance=l1"], ["lowrank", "--param", "energy=0.9"]])
def test_compress_verb_writes_the_carried_weights(trained_design, tmp_path, capsys, args):
    import json

    from convstudio.backends.weights import load_weights
    from convstudio.designer.cli.main import main
    from convstudio.ir.design import load

    g, path = trained_design
    out = tmp_path / "small.json"
    assert main(["compress", str(path), "--strategy", *args, "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"] == "small.safetensors" and data["fresh_weights"] == [] and data["delta"]["params"]["abs"] < 0
    small = load(out)
    load_weights(small.graph, tmp_path / "small.safetensors")
    x = sample(g)
    tolerance = 1e-6 if args[0] == "prune" else 0.5
    assert np.abs(torch_output(small.graph, x) - torch_output(g, x)).max() <= tolerance * max(1.0, float(np.abs(torch_output(g, x)).max()))
    assert main(["validate", str(out)]) == 0
    assert "weights small.safetensors ok" in capsys.readouterr().out


def test_compress_verb_names_a_bad_prune_parameter(trained_design, tmp_path, capsys):
    from convstudio.designer.cli.main import main

    _, path = trained_design
    out = tmp_path / "never.json"
    assert main(["compress", str(path), "--strategy", "prune", "--param", "ratio=1", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: ratio must be at least 0 and below 1, got 1.0, --param ratio"]
    assert main(["compress", str(path), "--strategy", "prune", "--nodes", "fc2", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: prune does not apply: channels feed the graph output 'logits', node 'fc2'"]
    assert not out.exists()
