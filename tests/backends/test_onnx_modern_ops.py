"""ConvNeXt's vocabulary and TensorFlow-style padding through ONNX: torch-exported modules import with no
Opaque node and exact counts, our exports come back as the same ops, and the re-export runs in
onnxruntime like the original (|a - b| <= 1e-5 + 1e-5·|b|).
"""

from __future__ import annotations

import io
import logging
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.importer import import_model
from convstudio.backends.onnx.mapping import GELU_KAPPA
from convstudio.backends.torch import lower
from convstudio.backends.weights import init_params
from convstudio.ir.cost import analyze
from convstudio.ir.graph import Graph

TOL = 1e-5


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block in eval (stochastic depth is the identity)."""

    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)

    def forward(self, x):
        return x + self.layer_scale * self.block(x)


class TinyConvNeXt(nn.Module):
    def __init__(self, head: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8, eps=1e-6))
        self.stage = CNBlock(8)
        self.down = nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, stride=2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), LayerNorm2d(16, eps=1e-6), nn.Flatten(1), nn.Linear(16, 10)) if head else None
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)

    def forward(self, x):
        x = self.down(self.stage(self.stem(x)))
        return self.head(x) if self.head is not None else x


class TensorFlowSame(nn.Module):
    """Stride-2 'same' padding as TensorFlow writes it (zero pad right and bottom), then an even-kernel 'same' conv."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.same = nn.Conv2d(8, 4, 4, padding="same")

    def forward(self, x):
        return self.same(self.conv(self.pad(x)))


def torch_to_onnx(module: nn.Module, shape, dynamo: bool = False, opset: int = 17) -> bytes:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            logging.getLogger("torch").setLevel(logging.ERROR)
            batch = ({0: torch.export.Dim("N")},)
            program = torch.onnx.export(module, (torch.randn(2, *shape),), dynamo=True, opset_version=opset, input_names=["x"],
                                        dynamic_shapes=batch, optimize=False, verbose=False)
            return program.model_proto.SerializeToString()
        f = io.BytesIO()
        torch.onnx.export(module, (torch.randn(1, *shape),), f, dynamo=False, input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {0: "N"}}, do_constant_folding=False)
        return f.getvalue()


def run_onnx(model: bytes | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_close(got, want):
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def node_by_node(model: onnx.ModelProto) -> onnx.ModelProto:
    """Our export without the design it carries, so the importer maps it node by node as any other file."""
    del model.metadata_props[:]
    return model


def ops_of(graph: Graph) -> list[str]:
    return [n.op for n in graph if n.op not in ("Input", "Output")]


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_exported_convnext_pieces_import_exactly(dynamo):
    torch.manual_seed(0)
    net = TinyConvNeXt(head=not dynamo).eval()  # the dynamo export's batch-merging Reshape of the head is another case
    data = torch_to_onnx(net, (3, 32, 32), dynamo=dynamo)
    design, report = import_model(data)
    graph = design.graph
    assert report["opaque"] == []
    ops = ops_of(graph)
    assert {"LayerNorm", "Permute", "GELU", "Scale"} <= set(ops)
    assert "BatchNorm2d" not in ops
    norms = [n.resolved["channels_last"] for n in graph if n.op == "LayerNorm"]
    assert sorted(norms) == [False] * (len(norms) - 1) + [True]
    assert all(n.resolved["eps"] == 1e-6 for n in graph if n.op == "LayerNorm")
    scale = next(n for n in graph if n.op == "Scale")
    assert scale.resolved["axis"] == 1 and scale.params["weight"].shape == (8,)
    report_cost = analyze(graph, "fvcore", batch=2)
    assert report_cost.total.params == sum(p.numel() for p in net.parameters())
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    counted = FlopCountAnalysis(net, torch.randn(2, 3, 32, 32)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert report_cost.total.flops == counted.total()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    reference = run_onnx(data, x)
    with torch.no_grad():
        assert_close(lower(graph).eval()(torch.from_numpy(x)).numpy(), reference)
    assert_close(run_onnx(export_model(graph), x), reference)


@pytest.mark.parametrize("dynamo", [False, True])
def test_zero_pad_and_even_kernel_same_fold_into_four_sided_conv_padding(dynamo):
    torch.manual_seed(0)
    data = torch_to_onnx(TensorFlowSame(), (3, 15, 16), dynamo=dynamo)
    design, report = import_model(data)
    graph = design.graph
    assert report["opaque"] == []
    assert ops_of(graph) == ["Conv2d", "Conv2d"]
    strided, same = (n for n in graph if n.op == "Conv2d")
    assert strided.attrs["padding"] == [0, 0, 1, 1]
    assert same.attrs["padding"] == [1, 1, 2, 2]
    # (15 + 1 - 3) // 2 + 1 = 7 rows, (16 + 1 - 3) // 2 + 1 = 8 columns; 'same' keeps 7x8
    cost = analyze(graph, "torchvision")
    assert cost.by_name()[strided.name].shapes == [(8, 7, 8)]
    assert cost.total.macs == 8 * 7 * 8 * 3 * 9 + 4 * 7 * 8 * 8 * 16
    x = np.random.default_rng(2).standard_normal((2, 3, 15, 16)).astype(np.float32)
    reference = run_onnx(data, x)
    with torch.no_grad():
        assert_close(lower(graph).eval()(torch.from_numpy(x)).numpy(), reference)
    exported = export_model(graph)
    assert [n.op_type for n in exported.graph.node] == ["Conv", "Conv"]
    assert [list(a.ints) for n in exported.graph.node for a in n.attribute if a.name == "pads"] == [[0, 0, 1, 1], [1, 1, 2, 2]]
    assert_close(run_onnx(exported, x), reference)


@pytest.mark.parametrize("dynamo, opset, spelling", [(False, 17, {"Erf", "Tanh"}), (True, 18, {"Erf", "Pow", "Tanh"}), (False, 20, {"Gelu"})])
def test_gelu_in_every_exporter_spelling_imports_as_gelu(dynamo, opset, spelling):
    """Both approximations: spelled out with Erf, or with Tanh and x·x·x (legacy) or Pow (dynamo); native Gelu from opset 20."""
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 1), nn.GELU(approximate="tanh"))
    data = torch_to_onnx(module, (3, 6, 6), dynamo=dynamo, opset=opset)
    assert spelling <= {n.op_type for n in onnx.load_from_string(data).graph.node}
    design, report = import_model(data)
    assert report["opaque"] == []
    assert ops_of(design.graph) == ["Conv2d", "GELU", "Conv2d", "GELU"]
    assert [n.resolved["approximate"] for n in design.graph if n.op == "GELU"] == ["none", "tanh"]
    assert analyze(design.graph).total.params == sum(p.numel() for p in module.parameters())
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        assert_close(lower(design.graph).eval()(torch.from_numpy(x)).numpy(), run_onnx(data, x))
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(data, x))


def test_squares_cubes_and_tanh_outside_a_gelu_keep_their_ops():
    consts = [numpy_helper.from_array(np.array(GELU_KAPPA * 2, np.float32), "k")]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Mul", ["x", "sq"], ["cube"]),
             helper.make_node("Mul", ["cube", "k"], ["kc"]), helper.make_node("Tanh", ["kc"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    design, report = import_model(model)
    assert report["opaque"] == []
    assert ops_of(design.graph) == ["Mul", "Mul", "BatchNorm2d", "Tanh"]
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(model, x))


def _gelu_model(order: str) -> onnx.ModelProto:
    """0.5·x·(1 + erf(x / sqrt 2)) with the multiplications in one of the orders exporters write."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sqrt2", math.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Div", ["r", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["one", "e"], ["p"]),
    ]
    if order == "x_then_half":
        nodes += [helper.make_node("Mul", ["r", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif order == "half_then_x":
        nodes += [helper.make_node("Mul", ["half", "p"], ["m"]), helper.make_node("Mul", ["r", "m"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["r", "half"], ["m"]), helper.make_node("Mul", ["m", "p"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("order", ["x_then_half", "half_then_x", "halved_x_first"])
def test_erf_gelu_in_every_order_becomes_one_gelu(order):
    model = _gelu_model(order)
    design, report = import_model(model)
    assert report["opaque"] == []
    assert ops_of(design.graph) == ["ReLU", "GELU"]
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(model, x))


def test_division_and_erf_outside_a_gelu_stay_opaque():
    consts = [numpy_helper.from_array(np.array(3.0, np.float32), "three"), numpy_helper.from_array(np.array(math.sqrt(2), np.float32), "s")]
    nodes = [helper.make_node("Div", ["x", "three"], ["d"]), helper.make_node("Div", ["d", "s"], ["e_in"]),
             helper.make_node("Erf", ["e_in"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    design, report = import_model(model)
    assert [e["op"] for e in report["opaque"]] == ["Div", "Div", "Erf"]
    assert "not a step of a GELU" in report["opaque"][1]["reason"]
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(model, x))


def test_layer_scale_imports_as_scale_and_a_per_channel_affine_stays_one_batchnorm():
    consts = [numpy_helper.from_array(np.arange(1, 4, dtype=np.float32).reshape(3, 1, 1), "gamma"),
              numpy_helper.from_array(np.array([0.5, -1.0, 2.0], np.float32).reshape(1, 3, 1, 1), "beta"),
              numpy_helper.from_array(np.linspace(0.5, 2.0, 4).astype(np.float32), "last")]
    nodes = [helper.make_node("Mul", ["x", "gamma"], ["scaled"]), helper.make_node("Relu", ["scaled"], ["r"]),
             helper.make_node("Mul", ["gamma", "r"], ["s2"]), helper.make_node("Add", ["s2", "beta"], ["shifted"]),
             helper.make_node("Mul", ["shifted", "last"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    design, report = import_model(model)
    assert report["opaque"] == []
    assert ops_of(design.graph) == ["Scale", "ReLU", "BatchNorm2d", "Scale"]
    scales = [n for n in design.graph if n.op == "Scale"]
    assert [n.resolved["axis"] for n in scales] == [1, -1]
    cost = analyze(design.graph, "fvcore")
    assert cost.total.params == 3 + 6 + 4
    assert [cost.by_name()[n.name].flops for n in scales] == [0, 0]
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 4)).astype(np.float32)
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(model, x))


def _single(op: str, shape, **attrs) -> Graph:
    g = Graph(op.lower())
    g.add("Input", name="x", attrs={"shape": list(shape)})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": shape[0], "kernel_size": 1})
    g.add(op, ["conv"], name="node", attrs=attrs)
    g.add("Output", ["node"], name="y")
    return g


def _channels_last(*layers: tuple[str, dict]) -> Graph:
    """Layers between a permute to channels-last and one back, as inside a ConvNeXt block.

    (Permute, channels-last LayerNorm, Permute back, with nothing else between, is a channels-first
    LayerNorm and comes back as one.)
    """
    g = _single("Permute", (4, 3, 5), dims=[0, 2, 3, 1])
    ref = "node"
    for i, (op, attrs) in enumerate(layers):
        ref = g.add(op, [ref], name=f"inner{i}", attrs=attrs).name
    g.add("Permute", [ref], name="back", attrs={"dims": [0, 3, 1, 2]})
    g.set_input("y", 0, "back")
    return g


ROUND_TRIP = {
    "layer_norm_channels": lambda: _single("LayerNorm", (4, 3, 5), eps=1e-6),
    "layer_norm_plain": lambda: _single("LayerNorm", (4, 3, 5), elementwise_affine=False),
    "layer_norm_channels_last": lambda: _channels_last(("LayerNorm", {"channels_last": True, "eps": 1e-6}), ("Scale", {"axis": -1})),
    "scale_channels": lambda: _single("Scale", (4, 3, 5)),
    "scale_last": lambda: _channels_last(("Scale", {"axis": -1}),),
    "permute": lambda: _single("Permute", (4, 3, 5), dims=[0, 3, 1, 2]),
    "gelu": lambda: _single("GELU", (4, 3, 5)),
    "gelu_tanh": lambda: _single("GELU", (4, 3, 5), approximate="tanh"),
    "hardswish": lambda: _single("Hardswish", (4, 3, 5)),
    "hardsigmoid": lambda: _single("Hardsigmoid", (4, 3, 5)),
    "conv_four_sided": lambda: _single("Conv2d", (4, 7, 6), out_channels=3, kernel_size=3, stride=2, padding=[0, 1, 1, 0]),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_export_then_import_node_by_node_gives_the_same_ops_attributes_and_weights(case):
    graph = ROUND_TRIP[case]()
    init_params(graph, 0)
    rng = np.random.default_rng(7)
    for node in graph:
        node.params = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in node.params.items()}
    model = node_by_node(export_model(graph))
    design, report = import_model(model)
    back = design.graph
    assert report["opaque"] == []
    assert sorted((n.name, n.op, n.resolved) for n in back) == sorted((n.name, n.op, n.resolved) for n in graph)
    for node in graph:
        for key, value in node.params.items():
            np.testing.assert_array_equal(back.nodes[node.name].params[key], value)
    x = np.random.default_rng(8).standard_normal((2, *graph.nodes["x"].attrs["shape"])).astype(np.float32)
    assert_close(run_onnx(export_model(back), x), run_onnx(model, x))


def test_channels_first_layer_norm_folds_only_when_the_transposes_are_read_once():
    """A permuted value read elsewhere keeps its Permute, LayerNorm and Permute back (each exact on its own)."""
    g = _channels_last(("LayerNorm", {"channels_last": True}),)
    g.add("Output", ["node"], name="permuted")
    init_params(g, 0)
    design, report = import_model(node_by_node(export_model(g)))
    assert report["opaque"] == []
    assert sorted(ops_of(design.graph)) == ["Conv2d", "LayerNorm", "Permute", "Permute"]
    alone = _channels_last(("LayerNorm", {"channels_last": True}),)
    init_params(alone, 0)
    design, _ = import_model(node_by_node(export_model(alone)))
    assert ops_of(design.graph) == ["Conv2d", "LayerNorm"]
    assert design.graph.nodes["inner0"].resolved["channels_last"] is False


def test_stochastic_depth_exports_as_the_identity_it_is_in_eval():
    g = _single("StochasticDepth", (4, 3, 5), p=0.3, mode="batch")
    init_params(g, 0)
    assert [n.op_type for n in export_model(g).graph.node] == ["Conv", "Identity"]


@pytest.mark.parametrize("dynamo", [False, True])
def test_layer_norm_without_affine_parameters_imports_without_parameters(dynamo):
    """torch writes the missing weight and bias as computed ones (and zeros): no parameters come back."""
    module = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm(5, elementwise_affine=False), nn.Conv2d(4, 2, 1))
    data = torch_to_onnx(module, (3, 4, 5), dynamo=dynamo, opset=18)
    design, report = import_model(data)
    assert report["opaque"] == []
    (norm,) = (n for n in design.graph if n.op == "LayerNorm")
    assert norm.attrs == {"channels_last": True, "elementwise_affine": False} and norm.params == {}
    assert analyze(design.graph).total.params == sum(p.numel() for p in module.parameters())
    x = np.random.default_rng(9).standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert_close(run_onnx(export_model(design.graph), x), run_onnx(data, x))
