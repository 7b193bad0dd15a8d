"""Adaptive average pooling with windows of uneven size, as the exporters write it, imports as AdaptiveAvgPool2d;
BatchNormalization and Dropout of a training-mode export map to their layers.

torch's legacy exporter refuses AdaptiveAvgPool2d whose output size does not divide the input; its dynamo
exporter writes Transpose, GatherND, Where masks and Gather/Add sums divided by the window sizes, or a
ReduceMean when all windows are equal. Outputs agree with torch at 1e-5 (|a - b| <= 1e-5 + 1e-5·|b|).
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from convstudio.backends.onnx.adaptive import adaptive_pool
from convstudio.backends.onnx.export import export_model
from convstudio.backends.torch import lower
from convstudio.ir.cost import analyze
from convstudio.ir.graph import Graph
from tests.backends.onnx_checks import import_checked

TOL = 1e-5
# (output size, input H, W): uneven windows on both axes, on one axis, equal windows that overlap, more outputs than inputs
CASES = {
    "5x7_of_13x13": ((5, 7), 13, 13),
    "2x5_of_8x13": ((2, 5), 8, 13),
    "3x3_of_7x7": ((3, 3), 7, 7),
    "3x3_of_2x2": ((3, 3), 2, 2),
}


def _net(out, channels: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.AdaptiveAvgPool2d(out), nn.Conv2d(channels, 5, 1)).eval()


def _export(module: nn.Module, shape, dynamo: bool, optimize: bool = True, training: bool = False) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            logging.getLogger("torch").setLevel(logging.ERROR)
            program = torch.onnx.export(module, (torch.randn(2, *shape),), dynamo=True, input_names=["x"], optimize=optimize,
                                        dynamic_shapes=({0: torch.export.Dim("N")},), verbose=False)
            return program.model_proto.SerializeToString()
        f = io.BytesIO()
        mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(module, (torch.randn(2, *shape),), f, dynamo=False, input_names=["x"], opset_version=17, training=mode,
                          dynamic_axes={"x": {0: "N"}}, do_constant_folding=not training)
        return f.getvalue()


def _ort(model: bytes | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _close(got, want):
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def _ops(graph: Graph) -> list[str]:
    return [n.op for n in graph if n.op not in ("Input", "Output")]


@pytest.mark.parametrize("case", list(CASES))
def test_legacy_exporter_refuses_uneven_adaptive_pooling(case):
    """Nothing to import: torch.onnx.export(dynamo=False) raises for an output size that does not divide the input."""
    out, h, w = CASES[case]
    with pytest.raises(Exception, match="not factor of input size"):
        _export(_net(out), (3, h, w), dynamo=False)


@pytest.mark.parametrize("case, optimize", [(case, True) for case in CASES] + [("5x7_of_13x13", False)])
def test_dynamo_export_of_uneven_adaptive_pooling_imports_as_adaptive_avg_pool(case, optimize):
    out, h, w = CASES[case]
    net = _net(out)
    data = _export(net, (3, h, w), dynamo=True, optimize=optimize)
    design, report = import_checked(data)
    graph = design.graph
    assert report["opaque"] == []
    assert _ops(graph) == ["Conv2d", "AdaptiveAvgPool2d", "Conv2d"]
    pool = next(n for n in graph if n.op == "AdaptiveAvgPool2d")
    assert pool.attrs["output_size"] == list(out)
    assert analyze(graph, batch=1).total.params == sum(p.numel() for p in net.parameters())
    x = np.random.default_rng(1).standard_normal((3, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
        _close(lower(graph).eval()(torch.from_numpy(x)).numpy(), want)
    _close(_ort(data, x), want)
    _close(_ort(export_model(graph), x), want)


def _pool_design(out, shape) -> Graph:
    g = Graph("pool")
    g.add("Input", name="x", attrs={"shape": list(shape)})
    g.add("AdaptiveAvgPool2d", ["x"], name="pool", attrs={"output_size": list(out)})
    g.add("Output", ["pool"], name="y")
    return g


@pytest.mark.parametrize("case", ["5x7_of_13x13", "2x5_of_8x13", "3x3_of_2x2"])
def test_our_export_of_uneven_adaptive_pooling_read_node_by_node_comes_back(case):
    """Without the design it carries, our Slice/ReduceMean/Concat spelling is recognised the same way."""
    out, h, w = CASES[case]
    model = export_model(_pool_design(out, (3, h, w)))
    del model.metadata_props[:]
    design, report = import_checked(model)
    assert report["opaque"] == [] and not report["restored"]
    assert _ops(design.graph) == ["AdaptiveAvgPool2d"]
    assert next(iter(n for n in design.graph if n.op == "AdaptiveAvgPool2d")).attrs["output_size"] == list(out)
    x = np.random.default_rng(2).standard_normal((2, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        want = nn.AdaptiveAvgPool2d(out)(torch.from_numpy(x)).numpy()
    _close(adaptive_pool(x, out), want)
    _close(_ort(export_model(design.graph), x), want)


def _model(nodes, inits, out_shape) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_linear_nodes_computing_no_pooling_map_as_they_would_alone():
    """A row slice and its mean (no design op) stay Opaque; the scaling after them still maps; the result is unchanged."""
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "ax"], ["rows"]),
        helper.make_node("ReduceMean", ["rows"], ["mean"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["mean", "two"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["y"]),
    ]
    inits = {"s": np.array([1], np.int64), "e": np.array([4], np.int64), "ax": np.array([2], np.int64), "two": np.array(2.0, np.float32)}
    model = _model(nodes, inits, [3, 1, 6])
    design, report = import_checked(model)
    assert sorted(e["op"] for e in report["opaque"]) == ["ReduceMean", "Slice"]
    assert "ReLU" in _ops(design.graph) and "Opaque" in _ops(design.graph)
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    _close(_ort(export_model(design.graph), x), _ort(model, x))


def test_a_gelu_after_a_region_is_still_one_gelu():
    """x / sqrt(2) is left to open the GELU pattern even when x comes out of a region (a row slice)."""
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "ax"], ["rows"]),
        helper.make_node("Div", ["rows", "root2"], ["d"]),
        helper.make_node("Erf", ["d"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["p"]),
        helper.make_node("Mul", ["rows", "p"], ["xp"]),
        helper.make_node("Mul", ["xp", "half"], ["y"]),
    ]
    inits = {"s": np.array([1], np.int64), "e": np.array([4], np.int64), "ax": np.array([2], np.int64),
             "root2": np.array(np.sqrt(2), np.float32), "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    model = _model(nodes, inits, [3, 3, 6])
    design, report = import_checked(model)
    assert [e["op"] for e in report["opaque"]] == ["Slice"]
    assert [op for op in _ops(design.graph) if op != "Opaque"] == ["GELU"]
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32)
    _close(_ort(export_model(design.graph), x), _ort(model, x))


def test_regions_of_two_values_stay_apart():
    """Means over H of x and of relu(x) are two pools; their sum is an Add of the two, not one region."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ReduceMean", ["x"], ["a"], axes=[2], keepdims=1),
        helper.make_node("ReduceMean", ["r"], ["b"], axes=[2], keepdims=1),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    model = _model(nodes, {}, [3, 1, 6])
    design, report = import_checked(model)
    assert report["opaque"] == []
    assert sorted(_ops(design.graph)) == ["AdaptiveAvgPool2d", "AdaptiveAvgPool2d", "Add", "ReLU"]
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 6)).astype(np.float32)
    _close(_ort(export_model(design.graph), x), _ort(model, x))


def test_where_with_a_nonzero_branch_ends_a_region():
    """Gather of every row is x itself; Where with a constant 1 branch is affine, not linear, so it stays Opaque;
    the mean over H after it is a pool of its own (to 1 x W) reading the Where."""
    nodes = [
        helper.make_node("Gather", ["x", "rows"], ["picked"], axis=2),
        helper.make_node("Where", ["mask", "one", "picked"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["y"], axes=[2], keepdims=1),
    ]
    mask = np.zeros((6, 1), bool)
    mask[2] = True
    inits = {"rows": np.arange(6, dtype=np.int64), "mask": mask, "one": np.array(1.0, np.float32)}
    model = _model(nodes, inits, [3, 1, 6])
    design, report = import_checked(model)
    assert [e["op"] for e in report["opaque"]] == ["Where"]
    pool = next(n for n in design.graph if n.op == "AdaptiveAvgPool2d")
    assert pool.attrs["output_size"] == [1, 6]
    assert design.graph.nodes[pool.inputs[0]].attrs["onnx_op"] == "Where"
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)
    _close(_ort(export_model(design.graph), x), _ort(model, x))


def test_training_mode_export_maps_batchnorm_with_batch_statistics_and_dropout():
    """torch's training-mode export: BatchNormalization(training_mode=1) normalizes with the batch's statistics, a
    BatchNorm2d without running statistics does the same; Dropout with training_mode on is the Dropout layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU(), nn.Dropout(0.3)).train()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    data = _export(net, (3, 8, 8), dynamo=False, training=True)
    modes = [helper.get_attribute_value(a) for n in onnx.load_from_string(data).graph.node for a in n.attribute if a.name == "training_mode"]
    assert modes == [1]
    design, report = import_checked(data)
    assert report["opaque"] == []
    assert _ops(design.graph) == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout"]
    bn = next(n for n in design.graph if n.op == "BatchNorm2d")
    assert bn.attrs["track_running_stats"] is False and bn.attrs["eps"] == 1e-3 and sorted(bn.params) == ["bias", "weight"]
    assert next(n for n in design.graph if n.op == "Dropout").attrs["p"] == 0.3
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net[:3](torch.from_numpy(x)).numpy()  # batch statistics, dropout left out
        _close(lower(design.graph).eval()(torch.from_numpy(x)).numpy(), want)
    _close(_ort(export_model(design.graph), x), want)


def test_eval_export_drops_dropout_and_folds_batchnorm():
    """Nothing to map: the eval-mode exporters drop Dropout and fold BatchNorm into the conv."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3)).eval()
    for dynamo in (False, True):
        design, report = import_checked(_export(net, (3, 8, 8), dynamo=dynamo))
        assert report["opaque"] == [] and _ops(design.graph) == ["Conv2d", "ReLU"]


@pytest.mark.parametrize("case", list(CASES))
def test_adaptive_pool_flops_count_every_window_element(case):
    """flops: one add per element of every window (overlapping windows count twice) plus a division per output;
    fvcore: one per input element. Window memberships are read off torch's own pooling of one-hot rows."""
    out, h, w = CASES[case]

    def memberships(size: int, n: int) -> int:
        with torch.no_grad():
            return int((nn.AdaptiveAvgPool1d(n)(torch.eye(size)[:, None, :]) > 0).sum())

    graph = _pool_design(out, (3, h, w))
    assert analyze(graph, "flops", batch=1).total.flops == 3 * memberships(h, out[0]) * memberships(w, out[1]) + 3 * out[0] * out[1]
    assert analyze(graph, "fvcore", batch=1).total.flops == 3 * h * w


FOLD_CASES = {
    "gather_nd": (helper.make_node("GatherND", ["a", "b"], ["y"]), [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.array([[[1, 2]], [[0, -1]]])]),
    "where": (helper.make_node("Where", ["a", "b", "c"], ["y"]), [np.array([[True], [False]]), np.float32(0), np.ones((2, 3), np.float32)]),
    "reduce_sum": (helper.make_node("ReduceSum", ["a", "b"], ["y"], keepdims=0), [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.array([0, -1])]),
    "reduce_mean": (helper.make_node("ReduceMean", ["a"], ["y"], axes=[1]), [np.arange(24, dtype=np.float32).reshape(2, 3, 4)]),
    "reduce_mean_int": (helper.make_node("ReduceMean", ["a"], ["y"], axes=[1]), [np.array([[1, 2], [4, 4]], np.int64)]),
    "reduce_all": (helper.make_node("ReduceSum", ["a"], ["y"]), [np.arange(6, dtype=np.float32).reshape(2, 3)]),
    "reduce_noop": (helper.make_node("ReduceSum", ["a", "b"], ["y"], noop_with_empty_axes=1), [np.ones((2, 3), np.float32), np.zeros(0, np.int64)]),
}


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_numpy_folding_of_region_ops_agrees_with_the_reference_evaluator(case):
    from onnx.reference import ReferenceEvaluator

    from convstudio.backends.onnx import fold

    node, inputs = FOLD_CASES[case]
    opset = 17  # ReduceSum reads its axes as an input, ReduceMean as an attribute
    (got,) = fold.evaluate(node, inputs, opset)
    names = list(node.input)
    model = helper.make_model(helper.make_graph([node], "g", [], [helper.make_empty_tensor_value_info("y")],
                                                [numpy_helper.from_array(np.asarray(x), n) for n, x in zip(names, inputs)]),
                              opset_imports=[helper.make_opsetid("", opset)])
    (want,) = ReferenceEvaluator(model).run(None, {})
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_folding_refuses_gather_nd_and_where_results_too_large_before_allocating():
    from convstudio.backends.onnx import fold

    huge = np.broadcast_to(np.float32(0), (4, 2**14, 2**14))  # no memory behind it
    with pytest.raises(fold.CannotFold, match="shape"):
        fold.evaluate(helper.make_node("GatherND", ["a", "b"], ["y"]), [huge, np.zeros((2**10, 1), np.int64)], 17)
    wide = np.broadcast_to(np.float32(0), (2**15, 1, 2**15))
    with pytest.raises(fold.CannotFold, match="shape"):
        fold.evaluate(helper.make_node("Where", ["a", "b", "c"], ["y"]), [np.ones((1, 2**15, 1), bool), wide, np.float32(0)], 17)
