"""ONNX Runtime's output equals the PyTorch lowering's, with the same weights, for every op and template.

Tolerance: max |onnx - torch| <= 1e-4 * max(1, max |torch|) (absolute for outputs up to 1, relative
to the largest magnitude beyond that).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from convstudio.backends.onnx.export import export_model  # noqa: E402
from convstudio.backends.onnx.runtime import open_session, run  # noqa: E402
from convstudio.backends.torch import lower  # noqa: E402
from convstudio.backends.weights import init_params  # noqa: E402
from convstudio.ir.graph import Graph  # noqa: E402
from convstudio.ir.ops import registry  # noqa: E402
from convstudio.ir.templates import TEMPLATES, build_template  # noqa: E402

TOLERANCE = 1e-4


def single(op: str, shape, **attrs) -> Graph:
    g = Graph(op.lower())
    g.add("Input", name="x", attrs={"shape": list(shape)})
    g.add(op, ["x"], name="node", attrs=attrs)
    g.add("Output", ["node"], name="y")
    return g


def after_conv(op: str, shape=(4, 8, 8), **attrs) -> Graph:
    """`op` applied to a conv output, so inputs take negative and positive values of either size."""
    g = Graph(op.lower())
    g.add("Input", name="x", attrs={"shape": list(shape)})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": shape[0], "kernel_size": 3, "padding": 1})
    g.add(op, ["conv"], name="node", attrs=attrs)
    g.add("Output", ["node"], name="y")
    return g


def multi(op: str, shapes, **attrs) -> Graph:
    g = Graph(op.lower())
    refs = []
    for i, shape in enumerate(shapes):
        g.add("Input", name=f"x{i}", attrs={"shape": list(shape)})
        refs.append(f"x{i}")
    g.add(op, refs, name="node", attrs=attrs)
    g.add("Output", ["node"], name="y")
    return g


def permuted(op: str, **attrs) -> Graph:
    """`op` on a conv output moved to channels-last, then back (a ConvNeXt block's inner layout)."""
    g = after_conv("Permute", dims=[0, 2, 3, 1])
    g.add(op, ["node"], name="inner", attrs=attrs)
    g.add("Permute", ["inner"], name="back", attrs={"dims": [0, 3, 1, 2]})
    g.set_input("y", 0, "back")
    return g


def split_graph(**attrs) -> Graph:
    g = Graph("split")
    g.add("Input", name="x", attrs={"shape": [6, 4, 4]})
    node = g.add("ChannelSplit", ["x"], name="split", attrs=attrs)
    for k in range(node.opdef.num_outputs(node.resolved)):
        g.add("ReLU", [f"split:{k}" if k else "split"], name=f"relu{k}")
        g.add("Output", [f"relu{k}"], name=f"y{k}")
    return g


def shared_graph() -> Graph:
    g = Graph("shared")
    g.add("Input", name="a", attrs={"shape": [3, 8, 8]})
    g.add("Input", name="b", attrs={"shape": [3, 8, 8]})
    conv = {"out_channels": 4, "kernel_size": 3, "padding": 1}
    g.add("Conv2d", ["a"], name="conv_a", attrs=conv, share="tower")
    g.add("Conv2d", ["b"], name="conv_b", attrs=conv, share="tower")
    g.add("Add", ["conv_a", "conv_b"], name="sum")
    g.add("Output", ["sum"], name="y")
    return g


def deform_graph(mask: bool) -> Graph:
    g = Graph("deform")
    g.add("Input", name="x", attrs={"shape": [4, 7, 7]})
    g.add("Conv2d", ["x"], name="offset", attrs={"out_channels": 18, "kernel_size": 3, "padding": 1})
    refs = ["x", "offset"]
    if mask:
        g.add("Conv2d", ["x"], name="mask_logits", attrs={"out_channels": 9, "kernel_size": 3, "padding": 1})
        g.add("Sigmoid", ["mask_logits"], name="mask")
        refs.append("mask")
    g.add("DeformConv2d", refs, name="node", attrs={"out_channels": 6, "kernel_size": 3, "padding": 1})
    g.add("Output", ["node"], name="y")
    return g


CASES = {
    "conv": lambda: single("Conv2d", (4, 9, 9), out_channels=6, kernel_size=3, padding=1),
    "conv_strided_dilated_grouped": lambda: single("Conv2d", (4, 11, 11), out_channels=6, kernel_size=3, stride=2, dilation=2, groups=2,
                                                    bias=False),
    "conv_depthwise": lambda: single("Conv2d", (4, 8, 8), out_channels=4, kernel_size=(3, 5), padding=(1, 2), groups=4),
    "conv_same_even_kernel": lambda: single("Conv2d", (3, 8, 7), out_channels=4, kernel_size=4, padding="same"),
    "conv_valid_1x1": lambda: single("Conv2d", (3, 5, 5), out_channels=2, kernel_size=1, padding="valid"),
    **{
        f"conv_fused_{act}": (lambda act=act: single("Conv2d", (3, 6, 6), out_channels=4, kernel_size=3, padding=1, activation=act,
                                                   activation_param=0.3))
        for act in ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "hardswish")
    },
    "conv_transpose": lambda: single("ConvTranspose2d", (4, 5, 5), out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1),
    "conv_transpose_grouped_dilated": lambda: single("ConvTranspose2d", (4, 5, 5), out_channels=6, kernel_size=3, groups=2, dilation=2,
                                                      bias=False, activation="relu"),
    "deform_conv": lambda: deform_graph(mask=False),
    "deform_conv_mask": lambda: deform_graph(mask=True),
    "linear": lambda: single("Linear", (12,), out_features=5),
    "linear_3d_no_bias_fused": lambda: single("Linear", (4, 6), out_features=3, bias=False, activation="elu", activation_param=0.5),
    "relu": lambda: after_conv("ReLU"),
    "relu6": lambda: after_conv("ReLU6", shape=(4, 6, 6)),
    "leaky_relu": lambda: after_conv("LeakyReLU", negative_slope=0.2),
    "elu": lambda: after_conv("ELU", alpha=0.7),
    "prelu_one": lambda: after_conv("PReLU"),
    "prelu_channels": lambda: after_conv("PReLU", num_parameters=4),
    "rrelu": lambda: after_conv("RReLU", lower=0.1, upper=0.3),
    "selu": lambda: after_conv("SELU"),
    "sigmoid": lambda: after_conv("Sigmoid"),
    "tanh": lambda: after_conv("Tanh"),
    "silu": lambda: after_conv("SiLU"),
    "gelu": lambda: after_conv("GELU"),
    "gelu_tanh": lambda: after_conv("GELU", approximate="tanh"),
    "hardswish": lambda: after_conv("Hardswish"),
    "hardsigmoid": lambda: after_conv("Hardsigmoid"),
    "softmax_channels": lambda: after_conv("Softmax", dim=1),
    "softmax_last": lambda: after_conv("Softmax", dim=-1),
    "softmax_vector": lambda: single("Softmax", (7,), dim=1),
    "batchnorm2d": lambda: after_conv("BatchNorm2d", eps=1e-3),
    "batchnorm2d_not_affine": lambda: after_conv("BatchNorm2d", affine=False),
    "batchnorm2d_batch_stats": lambda: after_conv("BatchNorm2d", track_running_stats=False),
    "batchnorm1d_nc": lambda: single("BatchNorm1d", (6,)),
    "batchnorm1d_ncl": lambda: single("BatchNorm1d", (3, 5)),
    "lrn_odd": lambda: after_conv("LRN", shape=(6, 5, 5), size=3, alpha=1e-2, beta=0.75, k=2.0),
    "lrn_even": lambda: after_conv("LRN", shape=(6, 5, 5), size=4, alpha=0.1, beta=0.5, k=1.0),
    "maxpool": lambda: single("MaxPool2d", (3, 9, 9), kernel_size=3, stride=2, padding=1),
    "maxpool_ceil_dilated": lambda: single("MaxPool2d", (3, 10, 11), kernel_size=2, stride=2, dilation=2, ceil_mode=True),
    "maxpool_ceil": lambda: single("MaxPool2d", (3, 8, 8), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "maxpool_ceil_last_window_in_padding": lambda: single("MaxPool2d", (3, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    "avgpool_ceil_last_window_in_padding": lambda: single("AvgPool2d", (3, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    "maxpool_ceil_dilated_end_pad_past_kernel": lambda: single("MaxPool2d", (2, 7, 7), kernel_size=3, stride=3, dilation=2, padding=1,
                                                               ceil_mode=True),
    "avgpool_include_pad": lambda: single("AvgPool2d", (3, 9, 9), kernel_size=3, stride=2, padding=1),
    "avgpool_exclude_pad": lambda: single("AvgPool2d", (3, 9, 9), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "avgpool_ceil": lambda: single("AvgPool2d", (3, 8, 8), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "avgpool_ceil_exclude_pad": lambda: single("AvgPool2d", (3, 8, 8), kernel_size=3, stride=2, ceil_mode=True, count_include_pad=False),
    "global_avgpool": lambda: single("GlobalAvgPool", (3, 5, 6)),
    "global_avgpool_mean": lambda: single("GlobalAvgPool", (3, 5, 6), mean=True),
    "global_maxpool": lambda: single("GlobalMaxPool", (3, 5, 6)),
    "adaptive_avgpool_global": lambda: single("AdaptiveAvgPool2d", (3, 5, 6), output_size=1),
    "adaptive_avgpool_uniform": lambda: single("AdaptiveAvgPool2d", (3, 8, 7), output_size=(4, 3)),
    "adaptive_avgpool_uneven": lambda: single("AdaptiveAvgPool2d", (3, 8, 5), output_size=(3, 4)),
    "adaptive_avgpool_grow": lambda: single("AdaptiveAvgPool2d", (3, 1, 2), output_size=(3, 3)),
    "upsample_nearest_scale": lambda: single("Upsample", (2, 4, 5), scale_factor=2),
    "upsample_nearest_fraction": lambda: single("Upsample", (2, 4, 5), scale_factor=1.5),
    "upsample_nearest_size": lambda: single("Upsample", (2, 4, 5), size=(9, 7)),
    "upsample_bilinear": lambda: single("Upsample", (2, 4, 5), mode="bilinear", scale_factor=2),
    "upsample_bilinear_align": lambda: single("Upsample", (2, 4, 5), mode="bilinear", scale_factor=(2, 3), align_corners=True),
    "upsample_bilinear_size": lambda: single("Upsample", (2, 4, 5), mode="bilinear", size=(7, 9)),
    "flatten": lambda: single("Flatten", (3, 4, 5)),
    "flatten_from_2": lambda: single("Flatten", (3, 4, 5), start_dim=2),
    "flatten_1_to_2": lambda: single("Flatten", (3, 4, 5), start_dim=1, end_dim=2),
    "dropout": lambda: after_conv("Dropout", p=0.3),
    "identity": lambda: after_conv("Identity"),
    "add_broadcast": lambda: multi("Add", [(4, 5, 5), (4, 1, 1), (4, 5, 5)]),
    "mul_broadcast": lambda: multi("Mul", [(4, 5, 5), (4, 1, 1)]),
    "concat": lambda: multi("Concat", [(2, 4, 4), (3, 4, 4), (1, 4, 4)]),
    "concat_height": lambda: multi("Concat", [(2, 3, 4), (2, 5, 4)], dim=2),
    "channel_shuffle": lambda: single("ChannelShuffle", (6, 3, 3), groups=2),
    "channel_shuffle_3": lambda: single("ChannelShuffle", (6, 3, 3), groups=3),
    "channel_split": lambda: split_graph(parts=2),
    "channel_split_sections": lambda: split_graph(sections=[1, 3, 2]),
    "shared_weights": shared_graph,
    "conv_four_sided_padding": lambda: single("Conv2d", (3, 9, 8), out_channels=4, kernel_size=3, stride=2, padding=[0, 1, 1, 0]),
    "conv_four_sided_symmetric": lambda: single("Conv2d", (3, 6, 6), out_channels=4, kernel_size=3, padding=[1, 2, 1, 2]),
    "layer_norm_channels": lambda: after_conv("LayerNorm", eps=1e-6),
    "layer_norm_channels_plain": lambda: after_conv("LayerNorm", elementwise_affine=False),
    "layer_norm_vector": lambda: single("LayerNorm", (7,), channels_last=True),
    "layer_norm_channels_last": lambda: permuted("LayerNorm", channels_last=True),
    "permute": lambda: single("Permute", (3, 4, 5), dims=[0, 3, 1, 2]),
    "scale_channels": lambda: after_conv("Scale"),
    "scale_last": lambda: permuted("Scale", axis=-1),
    "scale_height": lambda: after_conv("Scale", axis=2),
    "stochastic_depth": lambda: after_conv("StochasticDepth", p=0.2),
}


def randomize(graph: Graph, seed: int = 0) -> None:
    """Default weights, then random BatchNorm statistics and PReLU slopes so they are really tested."""
    init_params(graph, seed)
    rng = np.random.default_rng(seed + 1)
    for node in graph:
        if graph.param_owner(node.name) != node.name:
            continue
        if node.op.startswith("BatchNorm"):
            for key, value in node.params.items():
                if key == "running_var":
                    node.params[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
                else:
                    node.params[key] = rng.normal(0, 0.5, value.shape).astype(np.float32) + (1 if key == "weight" else 0)
        if node.op == "PReLU":
            node.params["weight"] = rng.uniform(0.05, 0.5, node.params["weight"].shape).astype(np.float32)
        if node.op in ("LayerNorm", "Scale"):
            node.params = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in node.params.items()}


def inputs_for(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((batch, *graph.nodes[name].attrs["shape"])).astype(np.float32) for name in graph.inputs}


def max_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest difference, relative to the largest magnitude when that exceeds 1."""
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) / scale


def torch_outputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    module = lower(graph).eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(feeds[n]) for n in graph.inputs])
    outs = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in outs]


def onnx_outputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session, _, _ = open_session(export_model(graph), "cpu")
    return run(session, feeds)


def assert_parity(graph: Graph, batch: int = 2) -> None:
    feeds = inputs_for(graph, batch)
    want = torch_outputs(graph, feeds)
    got = onnx_outputs(graph, feeds)
    assert len(got) == len(want)
    for name, g, w in zip(graph.outputs, got, want):
        assert g.shape == w.shape, name
        err = max_error(g, w)
        assert err <= TOLERANCE, f"output {name}: error {err:.3g} > {TOLERANCE}"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case):
    graph = CASES[case]()
    randomize(graph)
    assert_parity(graph)


def test_every_op_has_a_parity_case():
    covered = {node.op for build in CASES.values() for node in build()}
    ops = set(registry.all_ops()) - {"Input", "Output", "Opaque"}
    assert ops - covered == set()


def _small_shape(template) -> tuple:
    return template.small_input(64)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_parity(name):
    template = TEMPLATES[name]
    graph = build_template(name, _small_shape(template), 10)
    randomize(graph)
    assert_parity(graph, batch=1)
