"""Export then import gives back the same design; torch-exported spellings of issue 10 import without opaque nodes.

Our own exports carry the design (`convstudio.design` metadata) and come back exactly, with what ONNX cannot
express; files without it, and files torch wrote with either exporter, are mapped node by node.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from convstudio.backends.onnx.export import export_model  # noqa: E402
from convstudio.ir.cost import analyze  # noqa: E402
from convstudio.ir.design import Design, dumps  # noqa: E402
from convstudio.ir.templates import TEMPLATES  # noqa: E402
from tests.backends.onnx_checks import import_checked  # noqa: E402
from tests.backends.test_onnx_modern_ops import TinyConvNeXt  # noqa: E402
from tests.backends.test_onnx_parity import CASES, randomize, single  # noqa: E402

EXTRA_CASES = {
    "batchnorm_momentum_not_affine_no_stats": lambda: single("BatchNorm2d", (3, 4, 4), momentum=0.3, affine=False, track_running_stats=False),
    "dropout_p": lambda: single("Dropout", (3, 4, 4), p=0.25),
    "stochastic_depth_batch": lambda: single("StochasticDepth", (3, 4, 4), p=0.3, mode="batch"),
}
ROUND_TRIP = {
    **CASES,
    **EXTRA_CASES,
    **{f"template_{name}": (lambda t=t: t.build(t.small_input(32))) for name, t in TEMPLATES.items()},
}


def _same_design(original, back) -> None:
    assert dumps(back) == dumps(Design(original))
    for node in original:
        assert set(back.graph.nodes[node.name].params) == set(node.params)
        for key, value in node.params.items():
            np.testing.assert_array_equal(back.graph.nodes[node.name].params[key], value)


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_export_then_import_gives_back_the_same_design(case):
    graph = ROUND_TRIP[case]()
    randomize(graph)
    design, report = import_checked(export_model(graph))
    assert report["restored"] and report["opaque"] == []
    _same_design(graph, design)


def test_share_groups_and_training_section_come_back():
    graph = CASES["shared_weights"]()
    randomize(graph)
    from convstudio.backends.onnx.export import build

    training = {"loss": "triplet", "epochs": 3}
    design, _ = import_checked(build(graph, training=training)[0])
    assert design.graph.nodes["conv_b"].share == "tower" and design.training == training
    assert design.graph.nodes["conv_b"].params is design.graph.nodes["conv_a"].params


def test_weights_come_from_the_file_and_an_edited_graph_is_imported_node_by_node():
    """The design in the metadata is used only while the graph is still exactly its export; weights are the file's."""
    graph = CASES["relu"]()
    randomize(graph)
    model = export_model(graph)
    next(t for t in model.graph.initializer if t.name == "conv.weight").raw_data = np.ones((4, 4, 3, 3), np.float32).tobytes()
    design, report = import_checked(model)
    assert report["restored"]
    np.testing.assert_array_equal(design.graph.nodes["conv"].params["weight"], np.ones((4, 4, 3, 3), np.float32))
    next(n for n in model.graph.node if n.op_type == "Relu").op_type = "Sigmoid"
    design, report = import_checked(model)
    assert not report["restored"] and [n.op for n in design.graph if n.op in ("ReLU", "Sigmoid")] == ["Sigmoid"]


def test_metadata_of_another_design_is_ignored():
    graph, other = CASES["relu"](), CASES["sigmoid"]()
    randomize(graph)
    randomize(other)
    model = export_model(graph)
    foreign = next(p for p in export_model(other).metadata_props if p.key == "convstudio.design")
    next(p for p in model.metadata_props if p.key == "convstudio.design").value = foreign.value
    design, report = import_checked(model)
    assert not report["restored"] and [n.op for n in design.graph if n.op == "ReLU"] == ["ReLU"]


@pytest.mark.parametrize("case", ["relu6", "template_mobilenet_v2", "upsample_nearest_size", "upsample_bilinear_size", "global_avgpool_mean"])
def test_without_metadata_clip_bounds_sizes_and_means_map(case):
    """ReLU6's 1-element Clip bounds (numpy 2 refuses float() of them), Upsample sizes led by the batch, ReduceMean."""
    graph = ROUND_TRIP[case]()
    randomize(graph)
    model = export_model(graph)
    del model.metadata_props[:]
    design, report = import_checked(model)
    assert report["opaque"] == [] and not report["restored"]
    def layers(g):  # Dropout is the Identity it is in eval: only the metadata brings it back
        return sorted((n.op, repr(sorted(n.resolved.items()))) for n in g if n.op != "Dropout")

    assert layers(design.graph) == layers(graph)


# ---- torch-exported modules, both exporters -----------------------------------------------------


def torch_to_onnx(module: nn.Module, inputs: tuple, dynamo: bool) -> bytes:
    module.eval()
    names = [f"x{i}" for i in range(len(inputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            logging.getLogger("torch").setLevel(logging.ERROR)
            batch = tuple({0: torch.export.Dim("N", min=1, max=64)} for _ in inputs)
            program = torch.onnx.export(module, inputs, dynamo=True, input_names=names, dynamic_shapes=batch, verbose=False)
            return program.model_proto.SerializeToString()
        f = io.BytesIO()
        torch.onnx.export(module, inputs, f, dynamo=False, opset_version=17, input_names=names, dynamic_axes={n: {0: "N"} for n in names})
        return f.getvalue()


def _run(data: bytes, feeds: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), feeds)})


def assert_same_outputs(data: bytes, design, inputs: tuple) -> None:
    """ONNX Runtime on the torch export and on our re-export of the imported design agree."""
    feeds = [x.numpy() for x in inputs]
    want, got = (_run(model, feeds) for model in (data, export_model(design.graph).SerializeToString()))
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


class ResizeToInput(nn.Module):
    """An FCN/DeepLab head: upsample back to the input's size, read from its shape."""

    def __init__(self, mode: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.mode = mode

    def forward(self, x):
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(self.conv(x), size=x.shape[-2:], mode=self.mode, **kwargs)


class ChannelPReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.PReLU(4)
        nn.init.uniform_(self.act.weight, 0.1, 0.9)

    def forward(self, x):
        return self.act(self.conv(x))


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean([2, 3]))


class TripletNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def tower(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    def forward(self, a, b, c):
        return self.tower(a), self.tower(b), self.tower(c)


def _inputs(*shapes):
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, *s, generator=gen) for s in shapes)


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_to_the_input_shape_maps_to_upsample_with_a_size(mode, dynamo):
    inputs = _inputs((3, 9, 10))
    data = torch_to_onnx(ResizeToInput(mode), inputs, dynamo)
    design, report = import_checked(data)
    assert report["opaque"] == []
    (up,) = [n for n in design.graph if n.op == "Upsample"]
    assert list(up.resolved["size"]) == [9, 10] and up.resolved["mode"] == mode
    assert_same_outputs(data, design, inputs)


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_resize_to_the_input_shape_that_does_not_map_stays_one_opaque_node(dynamo):
    """Bicubic has no IR form: the import keeps going with the Resize opaque (sizes of H and W, opset 18)."""
    inputs = _inputs((3, 9, 10))
    data = torch_to_onnx(ResizeToInput("bicubic"), inputs, dynamo)
    design, report = import_checked(data)
    assert [(e["op"], e["reason"]) for e in report["opaque"]] == [("Resize", "mode cubic")]
    kept = [n.attrs["onnx_op"] if n.op == "Opaque" else n.op for n in design.graph]
    assert [op for op in kept if op != "Constant"] == ["Input", "Conv2d", "Resize", "Output"]
    assert_same_outputs(data, design, inputs)


@pytest.mark.parametrize("dynamo", [False, True])
def test_convnext_head_with_the_batch_merging_reshape_imports(dynamo):
    """dynamo writes the pooled head as Reshape(-1) of the whole batch and a Gather of consecutive positions."""
    torch.manual_seed(0)
    inputs = _inputs((3, 32, 32))
    data = torch_to_onnx(TinyConvNeXt(head=True), inputs, dynamo)
    design, report = import_checked(data)
    assert report["opaque"] == []
    assert [n.op for n in design.graph][-3:] == ["Flatten", "Linear", "Output"]
    assert_same_outputs(data, design, inputs)


@pytest.mark.parametrize("dynamo", [False, True])
def test_prelu_slopes_shaped_per_channel_map(dynamo):
    inputs = _inputs((3, 8, 8))
    data = torch_to_onnx(ChannelPReLU(), inputs, dynamo)
    design, report = import_checked(data)
    assert report["opaque"] == [] and [n.resolved["num_parameters"] for n in design.graph if n.op == "PReLU"] == [4]
    assert_same_outputs(data, design, inputs)


@pytest.mark.parametrize("dynamo", [False, True])
def test_reduce_mean_stays_a_mean_that_fvcore_counts_zero(dynamo):
    from fvcore.nn import FlopCountAnalysis

    module = MeanHead()
    inputs = _inputs((3, 8, 8))
    data = torch_to_onnx(module, inputs, dynamo)
    design, report = import_checked(data)
    assert report["opaque"] == []
    (pool,) = [n for n in design.graph if n.op == "GlobalAvgPool"]
    assert pool.resolved["mean"]
    analysis = FlopCountAnalysis(module.eval(), inputs[0])
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert analyze(design.graph, "fvcore", batch=2).total.flops == analysis.total()
    assert_same_outputs(data, design, inputs)


@pytest.mark.parametrize("dynamo", [False, True])
def test_shared_initializers_become_one_share_group_per_layer(dynamo):
    module = TripletNet()
    inputs = _inputs((3, 8, 8), (3, 8, 8), (3, 8, 8))
    data = torch_to_onnx(module, inputs, dynamo)
    design, report = import_checked(data)
    assert report["opaque"] == []
    groups = design.graph.share_groups()
    assert sorted(len(m) for m in groups.values()) == [3, 3]
    assert analyze(design.graph, "torchvision").total.params == sum(p.numel() for p in module.parameters())
    assert_same_outputs(data, design, inputs)


def test_equal_constant_parameters_are_not_taken_for_sharing():
    """Exporters merge equal constants (a fresh BatchNorm's ones and zeros): those layers stay separate."""
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    inputs = _inputs((3, 8, 8))
    data = torch_to_onnx(module, inputs, dynamo=True)
    design, _ = import_checked(data)
    assert design.graph.share_groups() == {}
