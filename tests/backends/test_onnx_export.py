"""ONNX export: checker, names, dynamic batch, metadata, opset choice, shared weights, files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from convstudio.backends.onnx.export import MAX_OPSET, build, export_file, export_model, required_opset
from convstudio.backends.onnx.ops import FLOOR_OPSET, LOWERINGS
from convstudio.backends.onnx.runtime import open_session, run
from convstudio.backends.weights import init_params, save_weights
from convstudio.designer.cli.main import main
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps, loads, save
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops import registry
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import build_template
from tests.backends.onnx_checks import import_checked

TOLERANCE = 1e-4  # max abs difference between two onnxruntime runs that must agree


def tiny(op: str = "ReLU", shape=(3, 8, 8), **attrs) -> Graph:
    g = Graph("tiny")
    g.add("Input", name="x", attrs={"shape": list(shape)})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add(op, ["conv"], name="act", attrs=attrs)
    g.add("Output", ["act"], name="y")
    return g


def shared() -> Graph:
    g = Graph("siamese")
    conv = {"out_channels": 4, "kernel_size": 3}
    for side in ("a", "b"):
        g.add("Input", name=side, attrs={"shape": [3, 6, 6]})
        g.add("Conv2d", [side], name=f"conv_{side}", attrs=conv, share="tower")
    g.add("Add", ["conv_a", "conv_b"], name="sum")
    g.add("Output", ["sum"], name="y")
    return g


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session, _, _ = open_session(model, "cpu")
    return run(session, feeds)


def test_lenet_passes_full_checker_and_runs():
    model = export_model(build_template("lenet"))
    onnx.checker.check_model(model, full_check=True)
    out = ort_run(model, {"x": np.zeros((2, 1, 28, 28), np.float32)})
    assert out[0].shape == (2, 10)


def test_every_registered_op_has_a_lowering():
    assert set(registry.all_ops()) - {"Input", "Output"} <= set(LOWERINGS)


def test_names_come_from_the_design():
    g = build_template("lenet")
    model = export_model(g)
    names = {n.name for n in model.graph.node}
    assert {"conv1", "relu1", "pool1", "flatten", "fc1", "fc3"} <= names
    assert {"conv1.weight", "conv1.bias", "fc3.weight"} <= {t.name for t in model.graph.initializer}
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]
    produced = {v for n in model.graph.node for v in n.output}
    assert {"conv1", "relu1", "pool2", "fc2"} <= produced


def test_multi_output_values_are_named_node_colon_k():
    g = Graph("split")
    g.add("Input", name="x", attrs={"shape": [6, 4, 4]})
    g.add("ChannelSplit", ["x"], name="split", attrs={"sections": [2, 4]})
    g.add("ReLU", ["split"], name="a")
    g.add("Sigmoid", ["split:1"], name="b")
    g.add("Output", ["a"], name="ya")
    g.add("Output", ["b"], name="yb")
    model = export_model(g)
    split = next(n for n in model.graph.node if n.op_type == "Split")
    assert list(split.output) == ["split", "split:1"]
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 4)).astype(np.float32)
    ya, yb = ort_run(model, {"x": x})
    np.testing.assert_allclose(ya, np.maximum(x[:, :2], 0), atol=1e-6)
    np.testing.assert_allclose(yb, 1 / (1 + np.exp(-x[:, 2:])), atol=1e-6)


def test_dynamic_batch_runs_batch_one_and_three():
    model = export_model(build_template("lenet"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    one = ort_run(model, {"x": x[:1]})[0]
    three = ort_run(model, {"x": x})[0]
    assert one.shape == (1, 10) and three.shape == (3, 10)
    assert np.abs(three[:1] - one).max() <= TOLERANCE


def test_metadata_holds_cost_totals_design_and_weights_note():
    g = build_template("lenet")
    model = export_model(g)
    props = {p.key: p.value for p in model.metadata_props}
    cost = json.loads(props["convstudio.cost"])
    totals = analyze(g, "flops").total.as_dict()
    assert cost["convention"] == "flops"
    assert {k: cost[k] for k in totals} == totals
    design = loads(props["convstudio.design"])
    assert dumps(design) == props["convstudio.design"]
    assert list(design.graph.nodes) == list(g.nodes)
    assert props["convstudio.weights"].startswith("initialized (seed 0)")


def test_weights_come_from_node_params_without_changing_the_graph():
    g = build_template("lenet")
    init_params(g, seed=5)
    model = export_model(g)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(init["conv2.weight"], g.nodes["conv2"].params["weight"])
    assert {p.key: p.value for p in model.metadata_props}["convstudio.weights"] == "from the design"
    fresh = build_template("lenet")
    export_model(fresh)
    assert all(not node.params for node in fresh)


def test_missing_weights_are_initialized_with_the_seed_and_reported():
    g = build_template("lenet")
    _, report, _ = build(g, seed=3)
    assert report["weights_initialized"] and "fc1" in report["initialized_nodes"]
    seeded = build_template("lenet")
    init_params(seeded, seed=3)
    a = {t.name: t.raw_data for t in export_model(g, seed=3).graph.initializer}
    b = {t.name: t.raw_data for t in export_model(seeded).graph.initializer}
    assert a == b


def test_shared_weights_give_one_initializer_used_by_both_nodes():
    model = export_model(shared())
    weights = [t.name for t in model.graph.initializer if t.name.endswith(".weight")]
    assert weights == ["conv_a.weight"]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.input[1] == "conv_a.weight" and n.input[2] == "conv_a.bias" for n in convs)


@pytest.mark.parametrize(
    "graph, opset",
    [
        (lambda: build_template("lenet"), FLOOR_OPSET),
        (lambda: tiny("Hardswish"), FLOOR_OPSET),
        (lambda: tiny("GELU"), FLOOR_OPSET),
        (lambda: tiny("Softmax", dim=-1), FLOOR_OPSET),
        (lambda: tiny("Softmax", dim=1), 13),
        (lambda: tiny("LayerNorm"), 17),
        (lambda: tiny("GELU", approximate="tanh"), FLOOR_OPSET),
        (lambda: tiny("Permute", dims=[0, 2, 3, 1]), FLOOR_OPSET),
        (lambda: tiny("Scale"), FLOOR_OPSET),
        (lambda: tiny("StochasticDepth", p=0.2), FLOOR_OPSET),
        (lambda: tiny("Conv2d", out_channels=2, kernel_size=2, padding=[0, 0, 1, 1]), FLOOR_OPSET),
    ],
)
def test_lowest_opset_that_covers_the_design(graph, opset):
    g = graph()
    model = export_model(g)
    assert model.opset_import[0].version == opset
    assert model.ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


def test_deform_conv_needs_opset_19_and_names_the_node():
    g = Graph("deform")
    g.add("Input", name="x", attrs={"shape": [2, 5, 5]})
    g.add("Input", name="offset", attrs={"shape": [18, 5, 5]})
    g.add("DeformConv2d", ["x", "offset"], name="dcn", attrs={"out_channels": 3, "kernel_size": 3, "padding": 1})
    g.add("Output", ["dcn"], name="y")
    infer_shapes(g)
    assert required_opset(g) == (19, "dcn")
    assert export_model(g).opset_import[0].version == 19
    with pytest.raises(DesignError) as err:
        export_model(g, opset=17)
    assert "dcn" in err.value.line() and "19" in err.value.line()


def test_explicit_opset_is_used_and_changes_spelling():
    assert {n.op_type for n in export_model(tiny("Hardswish")).graph.node} >= {"HardSigmoid", "Mul"}
    assert "HardSwish" in {n.op_type for n in export_model(tiny("Hardswish"), opset=14).graph.node}
    assert "Erf" in {n.op_type for n in export_model(tiny("GELU")).graph.node}
    assert "Gelu" in {n.op_type for n in export_model(tiny("GELU"), opset=20).graph.node}


@pytest.mark.parametrize("opset", [FLOOR_OPSET - 1, MAX_OPSET + 1])
def test_opset_out_of_range_is_a_design_error(opset):
    with pytest.raises(DesignError, match="opset"):
        export_model(tiny(), opset=opset)


@pytest.mark.parametrize("opset", [FLOOR_OPSET, 13, 18, MAX_OPSET])
def test_every_supported_opset_and_ir_version_loads_in_onnxruntime(opset):
    g = tiny("GELU")
    g.add("Upsample", ["act"], name="up", attrs={"size": [10, 12], "mode": "bilinear"})
    g.add("Output", ["up"], name="big")
    model = export_model(g, opset=opset)
    assert model.ir_version <= 13
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    reference = ort_run(export_model(g), {"x": x})
    for got, want in zip(ort_run(model, {"x": x}), reference):
        assert np.abs(got - want).max() <= TOLERANCE


def test_adaptive_pool_with_uniform_windows_is_an_average_pool():
    g = tiny("AdaptiveAvgPool2d", shape=(3, 7, 7), output_size=3)
    pool = [n for n in export_model(g).graph.node if n.name == "act"][0]
    assert pool.op_type == "AveragePool"
    attrs = {a.name: list(a.ints) for a in pool.attribute}
    assert attrs["kernel_shape"] == [3, 3] and attrs["strides"] == [2, 2]


def test_fused_export_drops_batchnorm_and_agrees_with_unfused():
    g = tiny("BatchNorm2d")
    g.add("ReLU", ["act"], name="relu")
    g.set_input("y", 0, "relu")
    init_params(g)
    rng = np.random.default_rng(0)
    g.nodes["act"].params["running_mean"] = rng.normal(0, 1, 4).astype(np.float32)
    g.nodes["act"].params["running_var"] = rng.uniform(0.5, 2, 4).astype(np.float32)
    plain = export_model(g)
    fused = export_model(g, fuse=True)
    assert "BatchNormalization" in {n.op_type for n in plain.graph.node}
    assert "BatchNormalization" not in {n.op_type for n in fused.graph.node}
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.abs(ort_run(plain, {"x": x})[0] - ort_run(fused, {"x": x})[0]).max() <= TOLERANCE


def test_output_reading_an_input_directly_gets_an_identity():
    g = Graph("passthrough")
    g.add("Input", name="x", attrs={"shape": [4]})
    g.add("ReLU", ["x"], name="r")
    g.add("Output", ["x"], name="same")
    g.add("Output", ["r"], name="y1")
    g.add("Output", ["r"], name="y2")
    model = export_model(g)
    x = np.array([[-1, 2, -3, 4]], np.float32)
    same, y1, y2 = ort_run(model, {"x": x})
    np.testing.assert_array_equal(same, x)
    np.testing.assert_array_equal(y1, np.maximum(x, 0))
    np.testing.assert_array_equal(y2, y1)


def test_export_file_writes_atomically_and_reports(tmp_path):
    path = tmp_path / "lenet.onnx"
    report = export_file(Design(build_template("lenet")), path)
    assert path.stat().st_size == report["bytes"]
    assert report["opset"] == FLOOR_OPSET and report["weights_initialized"]
    onnx.checker.check_model(str(path), full_check=True)
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.onnx"]
    with pytest.raises(DesignError, match="folder does not exist"):
        export_file(build_template("lenet"), tmp_path / "missing" / "m.onnx")


def test_bad_graph_is_a_design_error_and_writes_nothing(tmp_path):
    g = Graph("bad")
    g.add("Input", name="x", attrs={"shape": [3, 4, 4]})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 2, "kernel_size": 7})
    g.add("Output", ["conv"], name="y")
    with pytest.raises(DesignError, match="conv"):
        export_file(g, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


# ---- the `export` verb -----------------------------------------------------------------------------


def _design_file(tmp_path, graph: Graph, weights: bool = False):
    design = Design(graph)
    path = tmp_path / "design.json"
    if weights:
        init_params(graph, seed=7)
        save_weights(graph, tmp_path / "design.safetensors")
        design.weights = "design.safetensors"
    save(design, path)
    return path


def test_cli_export_prints_opset_ir_and_initialized_weights(tmp_path, capsys):
    path = _design_file(tmp_path, build_template("lenet"))
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"opset {FLOOR_OPSET}" in text and "IR version 6" in text and "initialized" in text
    assert out.exists()


def test_cli_export_uses_the_design_weights(tmp_path, capsys):
    graph = build_template("lenet")
    path = _design_file(tmp_path, graph, weights=True)
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights_initialized"] is False and report["weights_file"].endswith("design.safetensors")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(init["fc1.weight"], graph.nodes["fc1"].params["weight"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--opset", "5"], "opset 5"),
        (["--opset", "99"], "opset 99"),
    ],
)
def test_cli_export_bad_opset_exits_2(tmp_path, capsys, args, message):
    path = _design_file(tmp_path, build_template("lenet"))
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_opset_too_low_names_the_node(tmp_path, capsys):
    path = _design_file(tmp_path, tiny("Softmax", dim=1))
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx"), "--opset", "12"]) == 2
    assert "node 'act'" in capsys.readouterr().err


def test_cli_export_missing_design_and_missing_folder_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.json"), "-o", str(tmp_path / "m.onnx")]) == 2
    path = _design_file(tmp_path, build_template("lenet"))
    assert main(["export", str(path), "-o", str(tmp_path / "no" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "folder does not exist" in err and "Traceback" not in err


def test_opaque_nodes_from_the_importer_export_again():
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = onnx.numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Cos", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6])], [weight, bias])
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    original.ir_version = 7
    design, _ = import_checked(original)
    assert "Opaque" in {n.op for n in design.graph}
    exported = export_model(design.graph)
    assert "Cos" in {n.op_type for n in exported.graph.node} and exported.opset_import[0].version == 13
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    assert np.abs(ort_run(original, {"x": x})[0] - ort_run(exported, {"x": x})[0]).max() <= TOLERANCE


def test_cli_export_input_shape_override(tmp_path, capsys):
    path = _design_file(tmp_path, build_template("lenet"))
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "-o", str(out), "--input", "1x32x32"]) == 0
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 32, 32]


def test_opaque_outputs_keep_their_element_type_and_unbatched_shape():
    """A bool output of a kept ONNX node and an int64 constant output (a folded Shape) export as such."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Shape", ["x"], ["shape"], start=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("positive", onnx.TensorProto.BOOL, ["N", 3, 4]),
         helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])],
        [onnx.numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    original.ir_version = 8
    design, _ = import_checked(original)
    exported = export_model(design.graph)
    onnx.checker.check_model(exported, full_check=True)
    types = {o.name: o.type.tensor_type for o in exported.graph.output}
    assert types["positive"].elem_type == onnx.TensorProto.BOOL
    assert types["shape"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_value for d in types["shape"].shape.dim] == [2]
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    positive, shape = ort_run(exported, {"x": x})
    np.testing.assert_array_equal(positive, x > 0)
    np.testing.assert_array_equal(shape, [3, 4])


def test_model_over_the_protobuf_limit_is_a_design_error(tmp_path, capsys, monkeypatch):
    """A model larger than one protobuf may hold (2 GiB; lowered here to lenet's size) is refused, nothing written."""
    import convstudio.backends.onnx.export as export

    monkeypatch.setattr(export, "MAX_PROTO_BYTES", 100_000)
    path = _design_file(tmp_path, build_template("lenet"))
    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model would take") and "at most 2 GiB" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
