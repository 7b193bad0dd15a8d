"""Fused and unfused graphs compute the same function (PyTorch eval mode, random weights and BN statistics).

Tolerance: max |fused - unfused| <= 1e-5 · max |unfused output| (float32 rounding of the folded weights).
"""

import json
import math

import numpy as np
import pytest
import torch

from convstudio.backends.torch import lower
from convstudio.backends.weights import init_params, load_weights, param_shapes
from convstudio.designer.cli.main import main
from convstudio.designer.cli.verb_fuse import randomize_bn
from convstudio.ir.design import Design, load, save
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import TEMPLATES, Builder, build_template

RTOL = 1e-5


def randomize(graph, seed=0):
    """Random weights (scaled by 1/sqrt(fan-in)) and random BN affine parameters and running statistics.

    Large weights tile a pool of random values from a random offset (fast for vgg's 100M-weight classifier).
    """
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 20, dtype=np.float32)
    for name, shapes in param_shapes(graph).items():
        node = graph.nodes[name]
        if node.op.startswith("BatchNorm"):
            c = shapes["running_mean"][0] if "running_mean" in shapes else shapes["weight"][0]
            values = {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.3, c),
                      "running_mean": rng.normal(0, 0.3, c), "running_var": rng.uniform(0.3, 2.0, c)}
            node.params = {k: values[k].astype(np.float32) for k in shapes}
            continue
        fan_in = math.prod(shapes["weight"][1:]) if "weight" in shapes else 1
        node.params = {k: tiled(np.roll(pool, int(rng.integers(1 << 20))) / np.float32(math.sqrt(fan_in)), s) for k, s in shapes.items()}
    init_params(graph, seed)


def tiled(values, shape):
    """An array of `shape` filled by repeating `values` (copies doubling in size)."""
    n = math.prod(shape)
    out = np.empty(n, np.float32)
    done = min(n, values.size)
    out[:done] = values[:done]
    while done < n:
        step = min(done, n - done)
        out[done : done + step] = out[:step]
        done += step
    return out.reshape(shape)


def outputs(graph, inputs):
    module = lower(graph).eval()
    with torch.no_grad():
        out = module(*inputs)
    return out if isinstance(out, tuple) else (out,)


def assert_same_function(graph, seed=0, batch=1):
    randomize(graph, seed)
    result = fuse(graph)
    infer_shapes(graph)
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(batch, *graph.nodes[n].meta["shapes"][0], generator=gen) for n in graph.inputs]
    for a, b in zip(outputs(graph, inputs), outputs(result.graph, inputs)):
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) <= RTOL * max(scale, 1e-30), "fused output differs beyond 1e-5 relative"
    return result


def small_input(name):
    return TEMPLATES[name].small_input(32)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_fused_equals_unfused(name):
    graph = build_template(name, small_input(name), 10)
    result = assert_same_function(graph)
    if any(n.op.startswith("BatchNorm") and not n.share for n in graph):
        assert result.data["fused"], "templates with BN fuse something"


def chain(shape, *layers):
    b = Builder("t")
    x = b.input("x", shape)
    for op, attrs in layers:
        x = b.op(op, x, **attrs)
    b.output(x, "out")
    return b.graph


@pytest.mark.parametrize(
    "act", [("ReLU", {}), ("ReLU6", {}), ("LeakyReLU", {"negative_slope": 0.2}), ("ELU", {"alpha": 0.5}),
            ("Sigmoid", {}), ("Tanh", {}), ("SiLU", {}), ("Hardswish", {})], ids=lambda a: a[0],
)
def test_grouped_conv_bn_activation(act):
    conv = ("Conv2d", {"out_channels": 12, "kernel_size": 3, "groups": 3, "bias": False, "padding": 1})
    g = chain((6, 9, 9), conv, ("BatchNorm2d", {"eps": 1e-3}), act)
    assert assert_same_function(g).data["fused"][0]["pattern"] == f"Conv2d+BatchNorm2d+{act[0]}"


def test_depthwise_conv_bn():
    conv = ("Conv2d", {"out_channels": 16, "kernel_size": 3, "groups": 8, "stride": 2})
    g = chain((8, 9, 9), conv, ("BatchNorm2d", {"affine": False}), ("ReLU6", {}))
    assert len(assert_same_function(g).graph.nodes) == 3


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_bn(groups):
    up = ("ConvTranspose2d", {"out_channels": 6, "kernel_size": 3, "stride": 2, "groups": groups, "output_padding": 1, "bias": False})
    g = chain((4, 5, 5), up, ("BatchNorm2d", {}), ("LeakyReLU", {"negative_slope": 0.1}))
    assert assert_same_function(g).data["fused"][0]["pattern"] == "ConvTranspose2d+BatchNorm2d+LeakyReLU"


def test_linear_bn1d():
    g = chain((3, 4, 4), ("Flatten", {}), ("Linear", {"out_features": 7}), ("BatchNorm1d", {}), ("SiLU", {}))
    assert assert_same_function(g).data["fused"][0]["pattern"] == "Linear+BatchNorm1d+SiLU"


def test_fuse_verb_saves_folded_weights_and_verifies(tmp_path, capsys):
    graph = build_template("mobilenet_v2", (3, 32, 32), 10)
    randomize(graph)
    from convstudio.backends.weights import save_weights

    save_weights(graph, tmp_path / "m.safetensors")
    save(Design(graph, weights="m.safetensors"), tmp_path / "m.json")
    assert main(["fuse", str(tmp_path / "m.json"), "-o", str(tmp_path / "f.json"), "--verify", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"] == "f.safetensors" and len(data["fused"]) == 52 and data["declined"] == []
    assert data["verify"]["torch"]["max_rel_diff"] <= RTOL
    assert data["verify"]["onnxruntime"]["max_rel_diff"] <= RTOL
    assert data["delta"]["nodes"]["abs"] < 0 and data["after"]["flops"] < data["before"]["flops"]
    fused = load(tmp_path / "f.json")
    load_weights(fused.graph, tmp_path / "f.safetensors")
    x = torch.randn(1, 3, 32, 32)
    a, b = outputs(graph, [x])[0], outputs(fused.graph, [x])[0]
    assert float((a - b).abs().max()) <= RTOL * float(a.abs().max())


def test_fuse_verb_table_and_bad_input(tmp_path, capsys):
    save(Design(build_template("lenet")), tmp_path / "l.json")
    assert main(["fuse", str(tmp_path / "l.json"), "-o", str(tmp_path / "lf.json"), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "peak memory" in text and "fc1 + relu3 -> fc1 (Linear+ReLU)" in text and "torch: max abs diff" in text
    assert not (tmp_path / "lf.safetensors").exists()
    (tmp_path / "bad.json").write_text("{bad")
    broken = build_template("lenet")
    broken.set_attr("fc1", "in_features", 999)
    save(Design(broken), tmp_path / "shapes.json")
    cases = (("missing.json", "error: no such file"), ("bad.json", "error: malformed JSON"), ("shapes.json", "error: in_features is 999"))
    for source, message in cases:
        assert main(["fuse", str(tmp_path / source), "-o", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "x.json").exists()


def test_fuse_verb_verifies_shared_conv_and_bn(tmp_path, capsys):
    """Random BN statistics stay shared within a sharing group, so the check compares like with like."""
    b = Builder("siamese")
    for side in ("a", "b"):
        x = b.input(side, (3, 8, 8))
        c = b.op("Conv2d", x, f"{side}_conv", share="conv", out_channels=4, kernel_size=3)
        n = b.op("BatchNorm2d", c, f"{side}_bn", share="bn")
        b.output(b.op("ReLU", n, f"{side}_relu"), f"{side}_out")
    save(Design(b.graph), tmp_path / "s.json")
    graph = b.graph.copy()
    init_params(graph)
    randomize_bn(graph, seed=0)
    assert graph.nodes["a_bn"].params is graph.nodes["b_bn"].params
    assert main(["fuse", str(tmp_path / "s.json"), "-o", str(tmp_path / "f.json"), "--verify", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["into"] for f in data["fused"]] == ["a_conv", "b_conv"]
    for backend in ("torch", "onnxruntime"):
        assert data["verify"][backend]["max_rel_diff"] <= RTOL


@pytest.mark.parametrize("limit,what", [("0.001", "verifying the fusion exceeded the time limit of 0.001 s"), ("0", "time limit must be a positive number"),
                                        ("nan", "time limit must be a positive number")])
def test_fuse_verify_is_bounded_by_its_time_limit(tmp_path, capsys, limit, what):
    save(Design(build_template("lenet")), tmp_path / "l.json")
    assert main(["fuse", str(tmp_path / "l.json"), "-o", str(tmp_path / "lf.json"), "--verify", "--time-limit", limit]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and what in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.json"]  # nothing written when the check fails
