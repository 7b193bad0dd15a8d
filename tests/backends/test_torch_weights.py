"""Weights as safetensors keyed "<node>.<param>": round trip, shared groups stored once, PyTorch's default
initialization, the lowered module's state_dict, and one clear error for each kind of bad weights file."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from convstudio.backends.torch import lower
from convstudio.backends.weights import check_params, init_params, load_design_weights, load_weights, param_shapes, save_weights
from convstudio.ir.design import Design, load, save
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.templates import build_template


def siamese() -> Graph:
    g = Graph("siamese")
    for side in ("left", "right"):
        g.add("Input", name=side, attrs={"shape": [2, 6, 6]})
        g.add("Conv2d", [side], name=f"{side}_conv", attrs={"out_channels": 3, "kernel_size": 3}, share="encoder")
        g.add("BatchNorm2d", [f"{side}_conv"], name=f"{side}_bn")
        g.add("Output", [f"{side}_bn"], name=f"{side}_out")
    return g


def test_round_trip_keys_are_node_and_param_and_shared_groups_are_stored_once(tmp_path):
    graph = siamese()
    init_params(graph, seed=4)
    save_weights(graph, tmp_path / "w.safetensors")
    stored = load_file(tmp_path / "w.safetensors")
    assert sorted(stored) == ["left_bn.bias", "left_bn.running_mean", "left_bn.running_var", "left_bn.weight",
                              "left_conv.bias", "left_conv.weight",
                              "right_bn.bias", "right_bn.running_mean", "right_bn.running_var", "right_bn.weight"]
    fresh = siamese()
    load_weights(fresh, tmp_path / "w.safetensors")
    assert fresh.nodes["right_conv"].params is fresh.nodes["left_conv"].params
    for name, shapes in param_shapes(graph).items():
        for key in shapes:
            assert np.array_equal(fresh.nodes[name].params[key], graph.nodes[name].params[key]), f"{name}.{key}"
    module = lower(fresh)
    state = {k: v.numpy() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sorted(state) == sorted(stored) and all(np.array_equal(state[k], stored[k]) for k in stored)


def test_default_initialization_follows_pytorch():
    """Conv/Linear weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5)); BN ones and zeros."""
    graph = build_template("lenet", (1, 8, 8), 10)
    init_params(graph, seed=0)
    conv2 = graph.nodes["conv2"].params["weight"]
    bound = 1 / math.sqrt(math.prod(conv2.shape[1:]))
    assert conv2.dtype == np.float32 and np.abs(conv2).max() <= bound and np.abs(conv2).max() > 0.9 * bound
    assert abs(float(conv2.std()) - bound / math.sqrt(3)) < 0.1 * bound  # std of U(-b, b) is b / sqrt(3)
    bn = siamese()
    init_params(bn)
    params = bn.nodes["left_bn"].params
    assert np.all(params["weight"] == 1) and np.all(params["bias"] == 0)
    assert np.all(params["running_mean"] == 0) and np.all(params["running_var"] == 1)
    again = build_template("lenet", (1, 8, 8), 10)
    init_params(again, seed=0)
    assert np.array_equal(again.nodes["conv2"].params["weight"], conv2)  # same seed, same weights


@pytest.fixture
def weights_file(tmp_path):
    graph = siamese()
    init_params(graph)
    save_weights(graph, tmp_path / "w.safetensors")
    return tmp_path / "w.safetensors"


def test_bad_weights_files_name_the_tensor_and_file(weights_file, tmp_path):
    tensors = load_file(weights_file)
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != "left_bn.running_var"}, "weights lack 'left_bn.running_var'"),
        "extra": ({**tensors, "ghost.weight": np.zeros(2, np.float32)}, "tensor 'ghost.weight' matches no parameter"),
        "shape": ({**tensors, "left_conv.bias": np.zeros(4, np.float32)}, "'left_conv.bias' has shape [4], the design needs [3]"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(content, path)
        with pytest.raises(DesignError, match=re.escape(message)) as err:
            load_weights(siamese(), path)
        assert f"{name}.safetensors" in err.value.line()
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DesignError, match="not a readable safetensors file"):
        load_weights(siamese(), tmp_path / "junk.safetensors")
    with pytest.raises(DesignError, match="weights file not found"):
        load_weights(siamese(), tmp_path / "absent.safetensors")


def test_design_without_weights_where_they_are_required(tmp_path):
    design = Design(siamese(), path=tmp_path / "net.json")
    assert load_design_weights(design) is None
    with pytest.raises(DesignError) as err:
        load_design_weights(design, required=True)
    assert err.value.line() == "the design has no weights (train it or give --weights), design 'siamese'"


def test_design_names_its_weights_relative_to_its_own_folder(weights_file, tmp_path, monkeypatch):
    save(Design(siamese(), weights="w.safetensors"), tmp_path / "net.json")
    monkeypatch.chdir("/")
    design = load(tmp_path / "net.json")
    assert design.weights_path() == tmp_path / "w.safetensors"
    assert load_design_weights(design, required=True)
    check_params(design.graph)
    assert np.array_equal(design.graph.nodes["left_conv"].params["weight"], load_file(weights_file)["left_conv.weight"])
