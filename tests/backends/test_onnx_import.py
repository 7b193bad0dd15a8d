"""ONNX import: torch-exported templates, model-zoo style files, patterns, opaque nodes, the CLI.

Numerical tolerance everywhere: |a - b| <= 1e-4 + 1e-4·|b| (float32, same weights).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.importer_core import sanitize
from convstudio.backends.onnx.opaque import opaque_to_onnx
from convstudio.backends.torch.lower import lower
from convstudio.backends.weights import init_params, load_design_weights
from convstudio.designer.cli.main import main
from convstudio.ir.cost import analyze
from convstudio.ir.design import load
from convstudio.ir.graph import verify
from convstudio.ir.templates import build_template
from tests.backends.onnx_checks import import_checked

ATOL = RTOL = 1e-4


class _Wrap(torch.nn.Module):
    """torch.onnx.export wants a plain module around the fx GraphModule."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def torch_to_onnx(module: torch.nn.Module, shape, dynamic: bool = True, opset: int | None = None) -> bytes:
    f = io.BytesIO()
    kwargs = {"dynamic_axes": {"x": {0: "N"}}} if dynamic else {}
    if opset:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(1, *shape),), f, dynamo=False, input_names=["x"], do_constant_folding=False, **kwargs)
    return f.getvalue()


def run_onnx(model: bytes | onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def run_torch(graph, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return lower(graph).eval()(torch.from_numpy(x)).numpy()


def assert_close(got, want):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "name, shape, dynamic",
    [("squeezenet1_1", [3, 224, 224], True), ("mobilenet_v2", [3, 32, 32], True), ("shufflenet_v2_x1_0", [3, 64, 64], True)],
)
def test_torch_exported_template_imports_with_exact_counts_and_outputs(name, shape, dynamic):
    template = build_template(name, input_shape=shape)
    init_params(template, seed=0)
    original = torch_to_onnx(_Wrap(lower(template)), shape, dynamic=dynamic)
    design, report = import_checked(original)
    graph = design.graph
    verify(graph)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    want, got = analyze(template, "torchvision").total, analyze(graph, "torchvision").total
    assert (got.params, got.macs) == (want.params, want.macs)
    if name == "squeezenet1_1":
        assert (got.params, got.macs) == (1_235_496, 349_151_936)
    if name == "shufflenet_v2_x1_0":
        ops = {n.op for n in graph}
        assert {"ChannelShuffle", "ChannelSplit"} <= ops
    batch = 2 if dynamic else 1
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    reference = run_onnx(original, x)[0]
    assert_close(run_onnx(export_model(graph), x)[0], reference)
    assert_close(run_torch(graph, x), reference)


class _Zoo(torch.nn.Module):
    """Activations, pools, resampling and joins as torch exports them."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.deconv = torch.nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.prelu = torch.nn.PReLU(8)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)
        self.head = torch.nn.Linear(10, 6)
        for p in self.bn.parameters():
            torch.nn.init.uniform_(p, 0.5, 1.5)
        self.bn.running_mean.uniform_(-0.1, 0.1)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        F = torch.nn.functional
        y = self.bn(self.conv(x))
        y = F.relu6(y) + F.hardswish(y) + F.hardsigmoid(y) + F.silu(y) + F.elu(y, 0.7) + F.selu(y)
        y = self.prelu(F.leaky_relu(y, 0.2))
        y = F.avg_pool2d(y, 3, stride=2, padding=1, ceil_mode=True)
        y = F.interpolate(self.deconv(y), scale_factor=0.5, mode="nearest")
        y = torch.cat([torch.sigmoid(y), torch.tanh(y)], dim=1)
        y = F.max_pool2d(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False), 2)
        y = F.adaptive_avg_pool2d(y, 1) * y
        y = F.dropout(torch.flatten(F.max_pool2d(y, 2), 1), 0.3, training=False)
        return F.softmax(self.head(torch.matmul(self.fc(y), torch.eye(10)) + 0.5), dim=1)


def test_torch_export_of_many_ops_maps_every_node():
    torch.manual_seed(0)
    original = torch_to_onnx(_Zoo(), [3, 16, 16], opset=17)
    design, report = import_checked(original)
    ops = {n.op for n in design.graph}
    assert {
        "ReLU6",
        "Hardswish",
        "Hardsigmoid",
        "SiLU",
        "ELU",
        "SELU",
        "LeakyReLU",
        "PReLU",
        "AvgPool2d",
        "ConvTranspose2d",
        "Upsample",
        "Concat",
        "Sigmoid",
        "Tanh",
        "MaxPool2d",
        "GlobalAvgPool",
        "Mul",
        "Flatten",
        "Linear",
        "Softmax",
        "BatchNorm2d",
    } <= ops, ops
    opaque = {e["op"] for e in report["opaque"]}
    assert opaque <= {"Add", "MatMul"}, report["opaque"]
    x = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32)
    reference = run_onnx(original, x)[0]
    assert_close(run_onnx(export_model(design.graph, opset=17), x)[0], reference)


def _model(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 4
    return model


def _f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_old_zoo_style_model_maps_and_matches():
    """Opset 8: a Constant weight, BN with spatial, Reshape to a constant shape, Dropout ratio, LRN, Sum.

    (ConstantOfShape-initialized weights are covered by the light/ zoo models in the conformance suite.)
    """
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(_f32(4, 3, 3, 3, seed=9))),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"], spatial=1, epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("LRN", ["r"], ["l"], size=3, alpha=1e-3, beta=0.75, bias=2.0),
        helper.make_node("Sum", ["l", "r", "n"], ["sum"]),
        helper.make_node("MaxPool", ["sum"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["p"], ["d"], ratio=0.25),
        helper.make_node("Reshape", ["d", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(_f32(4, seed=1), "b"),
        numpy_helper.from_array(_f32(4, seed=2) + 2, "s"),
        numpy_helper.from_array(_f32(4, seed=3), "bb"),
        numpy_helper.from_array(_f32(4, seed=4), "m"),
        numpy_helper.from_array(np.abs(_f32(4, seed=5)) + 0.5, "v"),
        numpy_helper.from_array(np.array([1, 64], np.int64), "target"),
        numpy_helper.from_array(_f32(5, 64, seed=6), "fw"),
        numpy_helper.from_array(_f32(5, seed=7), "fb"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
        opset=8,
    )
    design, report = import_checked(model)
    graph = design.graph
    assert report["counts"]["opaque"] == 0, report["opaque"]
    assert graph.inputs == ["x"]
    assert [n.op for n in graph if n.op not in ("Input", "Output")] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "LRN",
        "Add",
        "MaxPool2d",
        "Dropout",
        "Flatten",
        "Linear",
    ]
    assert graph.nodes["Dropout" if "Dropout" in graph else next(n.name for n in graph if n.op == "Dropout")].attrs["p"] == 0.25
    assert any(e["op"] == "Constant" for e in report["folded"])
    x = _f32(1, 3, 8, 8, seed=8)
    reference = run_onnx(model, x)[0]
    assert_close(run_torch(graph, x), reference)
    assert_close(run_onnx(export_model(graph), x)[0], reference)


def test_zero_pad_folds_into_conv_and_asymmetric_pad_stays_opaque():
    w = numpy_helper.from_array(_f32(2, 3, 3, 3), "w")
    pads_sym = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64), "ps")
    pads_asym = numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64), "pa")
    nodes = [
        helper.make_node("Pad", ["x", "ps"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["c"]),
        helper.make_node("Pad", ["c", "pa"], ["odd"]),
        helper.make_node("Relu", ["odd"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 7, 9])],
        [w, pads_sym, pads_asym],
    )
    design, report = import_checked(model)
    conv = next(n for n in design.graph if n.op == "Conv2d")
    assert conv.attrs["padding"] == [1, 2]
    assert [e["op"] for e in report["opaque"]] == ["Pad"]
    assert "absorbs" in report["opaque"][0]["reason"]
    x = _f32(2, 3, 6, 6, seed=3)
    assert_close(run_onnx(export_model(design.graph, opset=13), x)[0], run_onnx(model, x)[0])


def test_opaque_node_keeps_shapes_weights_and_round_trips(tmp_path):
    """InstanceNormalization and a 1-d Conv have no IR op: they stay opaque with their weights."""
    nodes = [
        helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["n"], epsilon=1e-4),
        helper.make_node("Conv", ["n", "w1d"], ["c"], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(_f32(3, seed=1), "scale"),
        numpy_helper.from_array(_f32(3, seed=2), "bias"),
        numpy_helper.from_array(_f32(5, 3, 3, seed=3), "w1d"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 10])],
        inits,
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "d.json"), "--json"]) == 0
    design = load(tmp_path / "d.json")
    assert design.weights is None and design.weights_path() == tmp_path / "d.safetensors" and (tmp_path / "d.safetensors").is_file()
    load_design_weights(design, required=True)
    graph = design.graph
    opaque = [n for n in graph if n.op == "Opaque" and n.attrs.get("batched", True)]
    assert [n.attrs["onnx_op"] for n in opaque] == ["InstanceNormalization", "Conv"]
    report = analyze(graph, "flops")
    costs = report.by_name()
    conv = opaque[1]
    assert costs[conv.name].shapes == [(5, 10)]
    assert costs[conv.name].formula == "unknown: opaque ONNX op Conv"
    assert report.total.params == 3 + 3 + 45
    np.testing.assert_array_equal(graph.nodes[conv.inputs[1]].params["value"], numpy_helper.to_array(inits[2]))
    proto = opaque_to_onnx(conv, ["a", "b"], ["out"])
    assert (proto.op_type, list(proto.input), list(proto.output)) == ("Conv", ["a", "b"], ["out"])
    assert helper.get_attribute_value(proto.attribute[0]) == [1, 1]
    x = _f32(4, 3, 10, seed=4)
    assert_close(run_onnx(export_model(graph, opset=13), x)[0], run_onnx(model, x)[0])


def test_deform_conv_maps_with_offsets_and_mask():
    w = numpy_helper.from_array(_f32(4, 2, 3, 3, seed=1) * 0.3, "w")
    b = numpy_helper.from_array(_f32(4, seed=2), "b")
    off_w = numpy_helper.from_array(_f32(18, 2, 3, 3, seed=3) * 0.1, "ow")
    mask_w = numpy_helper.from_array(_f32(9, 2, 3, 3, seed=4) * 0.1, "mw")
    nodes = [
        helper.make_node("Conv", ["x", "ow"], ["offset"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "mw"], ["mask_logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["mask_logits"], ["mask"]),
        helper.make_node("DeformConv", ["x", "w", "offset", "b", "mask"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 7, 7])],
        [w, b, off_w, mask_w],
        opset=19,
    )
    design, report = import_checked(model)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    assert "DeformConv2d" in {n.op for n in design.graph}
    x = _f32(2, 2, 7, 7, seed=5)
    assert_close(run_torch(design.graph, x), run_onnx(model, x)[0])


def test_names_are_sanitized_uniquely_and_deterministically():
    nodes = [helper.make_node("Relu", ["in:0"], ["1x"], name="relu/1"), helper.make_node("Relu", ["1x"], ["out.0"], name="relu:1")]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("in:0", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("out.0", TensorProto.FLOAT, ["N", 4])],
    )
    first, _ = import_checked(model, name="my model")
    second, _ = import_checked(model, name="my model")
    names = list(first.graph.nodes)
    assert names == list(second.graph.nodes) == ["in_0", "relu_1", "relu_1_1", "out_0"]
    assert first.graph.name == "my_model"
    assert sanitize("0abc") == "n_0abc" and sanitize("///") == "node"


def test_cli_import_prints_report(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("LogSoftmax", ["r"], ["y"], axis=1)]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "d.json")]) == 0
    text = capsys.readouterr().out
    assert "1 mapped" in text and "1 opaque" in text and "LogSoftmax" in text
    assert main(["import", str(path), "-o", str(tmp_path / "e.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"mapped": 1, "folded": 0, "opaque": 1}
    assert data["opaque"][0]["reason"] == "no mapping for LogSoftmax"


def test_opset9_constant_of_shape_weights_and_upsample():
    shape = numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), "w_shape")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=numpy_helper.from_array(np.array([0.05], np.float32))),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Upsample", ["c", "scales"], ["u"], mode="nearest"),
        helper.make_node("Clip", ["u"], ["y"], min=0.0, max=6.0),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [shape, scales],
        opset=9,
    )
    design, report = import_checked(model)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    assert [n.op for n in design.graph if n.op not in ("Input", "Output")] == ["Conv2d", "Upsample", "ReLU6"]
    assert [e["op"] for e in report["folded"]] == ["ConstantOfShape"]
    x = _f32(2, 3, 8, 8, seed=11) * 4
    assert_close(run_torch(design.graph, x), run_onnx(model, x)[0])


def test_opset20_gelu_reductions_and_split():
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    split = numpy_helper.from_array(np.array([1, 3], np.int64), "split")
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], approximate="tanh"),
        helper.make_node("Split", ["g", "split"], ["a", "b"], axis=1),
        helper.make_node("GlobalMaxPool", ["a"], ["gm"]),
        helper.make_node("ReduceMean", ["b", "axes"], ["rm"], keepdims=0),
        helper.make_node("Flatten", ["gm"], ["f"], axis=1),
        helper.make_node("Concat", ["f", "rm"], ["cat"], axis=1),
        helper.make_node("Softmax", ["cat"], ["y"], axis=-1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [axes, split],
        opset=20,
    )
    model.ir_version = 9
    design, report = import_checked(model)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    ops = [n.op for n in design.graph if n.op not in ("Input", "Output")]
    assert ops == ["GELU", "ChannelSplit", "GlobalMaxPool", "GlobalAvgPool", "Flatten", "Flatten", "Concat", "Softmax"]
    x = _f32(3, 4, 5, 5, seed=12)
    assert_close(run_torch(design.graph, x), run_onnx(model, x)[0])


class _TorchvisionShuffleBlock(torch.nn.Module):
    """torchvision's ShuffleNetV2 data flow: chunk, branch, concat, then its channel_shuffle on x.size()."""

    def __init__(self):
        super().__init__()
        self.branch = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        left, right = x.chunk(2, dim=1)
        x = torch.cat((left, torch.relu(self.branch(right))), dim=1)
        batchsize, num_channels, height, width = x.size()
        x = x.view(batchsize, 2, num_channels // 2, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(batchsize, -1, height, width)


def test_dynamic_shape_chains_fold_into_channel_split_and_shuffle():
    torch.manual_seed(0)
    original = torch_to_onnx(_TorchvisionShuffleBlock(), [8, 5, 5])
    onnx_ops = {n.op_type for n in onnx.load_model_from_string(original).graph.node}
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Transpose"} <= onnx_ops
    assert onnx_ops & {"Split", "Slice"}
    design, report = import_checked(original)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    ops = [n.op for n in design.graph if n.op not in ("Input", "Output")]
    assert set(ops) == {"ChannelSplit", "Conv2d", "ReLU", "Concat", "ChannelShuffle"}, ops
    x = np.random.default_rng(3).standard_normal((3, 8, 5, 5)).astype(np.float32)
    reference = run_onnx(original, x)[0]
    assert_close(run_torch(design.graph, x), reference)
    assert_close(run_onnx(export_model(design.graph), x)[0], reference)


def test_zero_pad_folds_into_an_average_pool_that_counts_padding():
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("AveragePool", ["padded"], ["y"], kernel_shape=[3, 3], strides=[2, 2], count_include_pad=1),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [pads],
    )
    design, report = import_checked(model)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    (pool,) = [n for n in design.graph if n.op not in ("Input", "Output")]
    assert pool.op == "AvgPool2d" and pool.attrs["padding"] == [1, 1] and pool.resolved["count_include_pad"]
    x = _f32(2, 2, 6, 6, seed=4)
    assert_close(run_torch(design.graph, x), run_onnx(model, x)[0])


def test_cli_import_refuses_to_overwrite_the_model(tmp_path, capsys):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    data = model.SerializeToString()
    for name, out in (("m.onnx", "m.onnx"), ("m.safetensors", "m.json")):
        path = tmp_path / name
        path.write_bytes(data)
        assert main(["import", str(path), "-o", str(tmp_path / out)]) == 2
        assert path.read_bytes() == data
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") and "would overwrite" in line for line in lines)


def test_cli_import_fixes_symbolic_spatial_dimensions_with_input(tmp_path, capsys):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(1, 3, 8, 8),), f, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    path = tmp_path / "m.onnx"
    path.write_bytes(f.getvalue())
    out = tmp_path / "d.json"
    assert main(["import", str(path), "-o", str(out)]) == 2
    assert "--input" in capsys.readouterr().err
    for bad in ("3x12", "4x12x10", "y=3x12x10"):
        assert main(["import", str(path), "-o", str(out), "--input", bad]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3 and not out.exists()
    assert main(["import", str(path), "-o", str(out), "--input", "1x3x12x10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == {"x": [3, 12, 10]} and report["batch"] == "N"
    design = load(out)
    load_design_weights(design, required=True)
    x = _f32(2, 3, 12, 10, seed=6)
    assert_close(run_torch(design.graph, x), run_onnx(f.getvalue(), x)[0])


class _DynamoShuffleBlock(_TorchvisionShuffleBlock):
    """The shuffle block with a bias-free conv and a BatchNorm, as in torchvision's ShuffleNetV2 branches."""

    def __init__(self):
        super().__init__()
        self.branch = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4))


def test_default_torch_exporter_output_imports_with_exact_counts():
    """torch.onnx.export's default (dynamo) exporter, unoptimized so BatchNorm stays: the zero conv bias it
    computes with CastLike/Expand, SplitToSequence/SequenceAt for chunk and contiguous() inside the shuffle."""
    torch.manual_seed(0)
    module = _DynamoShuffleBlock().eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.randn(1, 8, 5, 5),), dynamo=True, input_names=["x"],
                                    dynamic_shapes=({0: torch.export.Dim("N")},), optimize=False)
    original = program.model_proto
    assert {"SplitToSequence", "SequenceAt", "CastLike", "Expand", "Identity"} <= {n.op_type for n in original.graph.node}
    design, report = import_checked(original)
    assert report["counts"]["opaque"] == 0, report["opaque"]
    assert {n.op for n in design.graph} - {"Input", "Output"} == {"ChannelSplit", "Conv2d", "BatchNorm2d", "ReLU", "Concat", "ChannelShuffle"}
    total = analyze(design.graph, "torchvision").total
    assert (total.params, total.macs) == (sum(p.numel() for p in module.parameters()), 4 * 4 * 9 * 25)
    x = np.random.default_rng(5).standard_normal((2, 8, 5, 5)).astype(np.float32)
    reference = run_onnx(original, x)[0]
    assert_close(run_onnx(export_model(design.graph), x)[0], reference)
    assert_close(run_torch(design.graph, x), reference)
