"""The PyTorch lowering: every op against an independent torch/numpy reference, every template's
parameter count and intermediate shapes against the IR, shared weights, train/eval semantics,
deformable convolution and torch.compile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from convstudio.backends.torch import lower, params_from_module
from convstudio.backends.torch.deform import deform_conv2d
from convstudio.backends.torch.modules import LOWERINGS
from convstudio.backends.weights import init_params, param_shapes, weights_to_dict
from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.ops import all_ops
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.templates import TEMPLATES, build_template

ATOL = 1e-5  # float32 results of the same arithmetic in a different order


def op_graph(op: str, attrs: dict, shapes: list) -> Graph:
    """Inputs x0, x1, ... -> one node 'node' -> one Output per output of the op."""
    g = Graph("case")
    for i, shape in enumerate(shapes):
        g.add("Input", name=f"x{i}", attrs={"shape": list(shape)})
    node = g.add(op, [f"x{i}" for i in range(len(shapes))], name="node", attrs=attrs)
    for k in range(node.opdef.num_outputs(node.resolved)):
        g.add("Output", ["node" if k == 0 else f"node:{k}"], name=f"out{k}")
    return g


def random_params(graph: Graph, seed: int = 1) -> dict[str, torch.Tensor]:
    """Give every parameter and buffer random values (variances positive); returns the node's as tensors."""
    init_params(graph, 0)
    rng = np.random.default_rng(seed)
    for node in graph:
        for key, value in node.params.items():
            new = rng.normal(size=value.shape).astype(np.float32)
            node.params[key] = np.abs(new) + 0.5 if key == "running_var" else new
    return {k: torch.from_numpy(v) for k, v in graph.nodes["node"].params.items()}


FUSED = {
    "none": lambda y, p: y,
    "relu": lambda y, p: y.clamp_min(0),
    "relu6": lambda y, p: y.clamp(0, 6),
    "leaky_relu": lambda y, p: torch.where(y > 0, y, p * y),
    "elu": lambda y, p: torch.where(y > 0, y, p * (torch.exp(y) - 1)),
    "sigmoid": lambda y, p: 1 / (1 + torch.exp(-y)),
    "tanh": lambda y, p: torch.tanh(y),
    "silu": lambda y, p: y / (1 + torch.exp(-y)),
    "hardswish": lambda y, p: y * (y + 3).clamp(0, 6) / 6,
}


def conv_ref(a, p, x):
    (top, bottom), (left, right) = conv_pads(a)
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), p["weight"], p.get("bias"), a["stride"], 0, a["dilation"], a["groups"])
    return FUSED[a["activation"]](y, a["activation_param"])


def layer_norm_ref(a, p, x):
    """Normalization written out over dim 1 (or the last dim), biased variance."""
    dim = -1 if a["channels_last"] else 1
    mean = x.mean(dim, keepdim=True)
    var = ((x - mean) ** 2).mean(dim, keepdim=True)
    y = (x - mean) / torch.sqrt(var + a["eps"])
    if not a["elementwise_affine"]:
        return y
    shape = [1] * x.dim()
    shape[dim] = -1
    return y * p["weight"].view(shape) + p["bias"].view(shape)


def conv_t_ref(a, p, x):
    y = F.conv_transpose2d(x, p["weight"], p.get("bias"), a["stride"], a["padding"], a["output_padding"], a["groups"], a["dilation"])
    return FUSED[a["activation"]](y, a["activation_param"])


def linear_ref(a, p, x):
    return FUSED[a["activation"]](x @ p["weight"].T + (p["bias"] if "bias" in p else 0), a["activation_param"])


def bn_ref(a, p, x):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if a["track_running_stats"]:
        mean, var = p["running_mean"].view(shape), p["running_var"].view(shape)
    else:
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + a["eps"])
    return y * p["weight"].view(shape) + p["bias"].view(shape) if a["affine"] else y


def pool_ref(fn, a, x, **extra):
    stride = a["stride"] or a["kernel_size"]
    return fn(x, a["kernel_size"], stride, a["padding"], ceil_mode=a["ceil_mode"], **extra)


def bilinear_zero_outside(img: np.ndarray, y: float, x: float) -> float:
    """torchvision's bilinear_interpolate: zero beyond the image, corners outside read zero."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    corners = ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx), (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx))
    for yy, xx, weight in corners:
        if 0 <= yy < h and 0 <= xx < w:
            total += weight * img[yy, xx]
    return total


def deform_reference(x, offset, weight, bias, stride, padding, dilation, mask=None) -> np.ndarray:
    """Deformable convolution written out loop by loop in float64 numpy."""
    x, offset, weight = (np.asarray(t, dtype=np.float64) for t in (x, offset, weight))
    n, c, h, w = x.shape
    cout, cg, kh, kw = weight.shape
    groups, ho, wo = c // cg, offset.shape[2], offset.shape[3]
    offset_groups = offset.shape[1] // (2 * kh * kw)
    columns = np.zeros((n, c, kh, kw, ho, wo))
    for b in range(n):
        for ch in range(c):
            og = ch // (c // offset_groups)
            for i in range(kh):
                for j in range(kw):
                    tap = og * kh * kw + i * kw + j
                    for oy in range(ho):
                        for ox in range(wo):
                            y = oy * stride[0] - padding[0] + i * dilation[0] + offset[b, 2 * tap, oy, ox]
                            xx = ox * stride[1] - padding[1] + j * dilation[1] + offset[b, 2 * tap + 1, oy, ox]
                            value = bilinear_zero_outside(x[b, ch], y, xx)
                            if mask is not None:
                                value *= float(mask[b, tap, oy, ox])
                            columns[b, ch, i, j, oy, ox] = value
    out = np.zeros((n, cout, ho, wo))
    per_group = cout // groups
    for oc in range(cout):
        g = oc // per_group
        cols = columns[:, g * cg : (g + 1) * cg]
        out[:, oc] = np.einsum("cij,ncijyx->nyx", weight[oc], cols)
        if bias is not None:
            out[:, oc] += float(bias[oc])
    return out


def deform_ref(a, p, x, offset, mask=None):
    out = deform_reference(x, offset, p["weight"], p.get("bias"), a["stride"], a["padding"], a["dilation"], mask)
    return torch.from_numpy(out).float()


# (op, attrs, per-sample input shapes, reference(attrs, params, *inputs) in eval mode)
CASES = [
    ("Conv2d", {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "groups": 2, "bias": False}, [(4, 8, 8)], conv_ref),
    ("Conv2d", {"out_channels": 4, "kernel_size": [3, 1], "padding": "same", "dilation": 2, "activation": "leaky_relu",
                "activation_param": 0.2}, [(4, 8, 8)], conv_ref),
    ("Conv2d", {"out_channels": 4, "kernel_size": 4, "padding": "same", "activation": "elu", "activation_param": 0.7},
     [(4, 7, 9)], conv_ref),
    ("Conv2d", {"out_channels": 8, "kernel_size": 3, "groups": 4, "padding": "valid", "activation": "relu6"}, [(4, 8, 8)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 1, "padding": [1, 0], "stride": [1, 2], "activation": "silu"}, [(4, 8, 8)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 2, "activation": "hardswish", "in_channels": 4}, [(4, 5, 5)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "activation": "sigmoid"}, [(4, 5, 5)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "activation": "tanh"}, [(4, 5, 5)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "activation": "relu"}, [(4, 5, 5)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": [0, 0, 1, 1]}, [(4, 8, 8)], conv_ref),
    ("Conv2d", {"out_channels": 3, "kernel_size": [2, 3], "padding": [1, 1, 1, 1], "activation": "relu"}, [(4, 6, 6)], conv_ref),
    ("ConvTranspose2d", {"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}, [(4, 5, 5)], conv_t_ref),
    ("ConvTranspose2d", {"out_channels": 4, "kernel_size": [2, 3], "groups": 2, "dilation": 2, "bias": False, "activation": "tanh"},
     [(4, 4, 4)], conv_t_ref),
    ("DeformConv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 2, "offset_groups": 2},
     [(4, 5, 5), (36, 5, 5)], deform_ref),
    ("DeformConv2d", {"out_channels": 2, "kernel_size": 2, "stride": 2, "dilation": [1, 2], "bias": False},
     [(2, 6, 7), (8, 3, 3), (4, 3, 3)], deform_ref),
    ("ReLU", {}, [(4, 3, 3)], lambda a, p, x: x.clamp_min(0)),
    ("ReLU6", {}, [(4, 3, 3)], lambda a, p, x: x.clamp(0, 6)),
    ("LeakyReLU", {"negative_slope": 0.3}, [(4, 3, 3)], lambda a, p, x: torch.where(x > 0, x, 0.3 * x)),
    ("ELU", {"alpha": 0.7}, [(4, 3, 3)], lambda a, p, x: torch.where(x > 0, x, 0.7 * (torch.exp(x) - 1))),
    ("PReLU", {"num_parameters": 4, "init": 0.1}, [(4, 3, 3)], lambda a, p, x: torch.where(x > 0, x, p["weight"].view(1, 4, 1, 1) * x)),
    ("PReLU", {}, [(6,)], lambda a, p, x: torch.where(x > 0, x, p["weight"] * x)),
    ("RReLU", {"lower": 0.1, "upper": 0.3}, [(4, 3, 3)], lambda a, p, x: torch.where(x > 0, x, 0.2 * x)),
    ("SELU", {}, [(4, 3, 3)], lambda a, p, x: 1.0507009873554805 * torch.where(x > 0, x, 1.6732632423543772 * (torch.exp(x) - 1))),
    ("Sigmoid", {}, [(4, 3, 3)], lambda a, p, x: 1 / (1 + torch.exp(-x))),
    ("Tanh", {}, [(4, 3, 3)], lambda a, p, x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1)),
    ("SiLU", {}, [(4, 3, 3)], lambda a, p, x: x / (1 + torch.exp(-x))),
    ("GELU", {}, [(4, 3, 3)], lambda a, p, x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    ("GELU", {"approximate": "tanh"}, [(4, 3, 3)],
     lambda a, p, x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ("Hardswish", {}, [(4, 3, 3)], lambda a, p, x: x * (x + 3).clamp(0, 6) / 6),
    ("Hardsigmoid", {}, [(4, 3, 3)], lambda a, p, x: (x + 3).clamp(0, 6) / 6),
    ("Softmax", {}, [(4, 3, 3)], lambda a, p, x: torch.exp(x) / torch.exp(x).sum(1, keepdim=True)),
    ("Softmax", {"dim": -1}, [(4, 3, 5)], lambda a, p, x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)),
    ("BatchNorm2d", {"eps": 1e-3, "momentum": 0.2}, [(4, 3, 3)], bn_ref),
    ("BatchNorm2d", {"affine": False}, [(4, 3, 3)], bn_ref),
    ("BatchNorm2d", {"track_running_stats": False, "num_features": 4}, [(4, 3, 3)], bn_ref),
    ("BatchNorm1d", {}, [(6,)], bn_ref),
    ("LayerNorm", {"eps": 1e-6}, [(6, 3, 3)], layer_norm_ref),
    ("LayerNorm", {"channels_last": True}, [(3, 3, 6)], layer_norm_ref),
    ("LayerNorm", {"elementwise_affine": False, "eps": 0.1}, [(6, 3, 3)], layer_norm_ref),
    ("LayerNorm", {"channels_last": True}, [(6,)], layer_norm_ref),
    ("BatchNorm1d", {"eps": 0.1}, [(6, 5)], bn_ref),
    ("LRN", {"size": 3, "alpha": 0.01, "beta": 0.5, "k": 2.0}, [(6, 3, 3)],
     lambda a, p, x: x / (2.0 + 0.01 / 3 * F.pad(x**2, (0, 0, 0, 0, 1, 1)).unfold(1, 3, 1).sum(-1)) ** 0.5),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, [(4, 8, 8)],
     lambda a, p, x: pool_ref(F.max_pool2d, a, x, dilation=a["dilation"])),
    ("MaxPool2d", {"kernel_size": 2, "dilation": 2}, [(4, 8, 8)], lambda a, p, x: pool_ref(F.max_pool2d, a, x, dilation=a["dilation"])),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, [(4, 8, 8)],
     lambda a, p, x: pool_ref(F.avg_pool2d, a, x, count_include_pad=False)),
    ("AvgPool2d", {"kernel_size": [2, 3]}, [(4, 8, 8)], lambda a, p, x: pool_ref(F.avg_pool2d, a, x)),
    ("GlobalAvgPool", {}, [(4, 5, 6)], lambda a, p, x: x.mean((2, 3), keepdim=True)),
    ("GlobalAvgPool", {"mean": True}, [(4, 5, 6)], lambda a, p, x: x.mean((2, 3), keepdim=True)),
    ("GlobalMaxPool", {}, [(4, 5, 6)], lambda a, p, x: x.amax((2, 3), keepdim=True)),
    ("AdaptiveAvgPool2d", {"output_size": [3, 2]}, [(4, 6, 6)],
     lambda a, p, x: x.unflatten(2, (3, 2)).unflatten(4, (2, 3)).mean((3, 5))),
    ("Upsample", {"scale_factor": 2}, [(4, 3, 3)], lambda a, p, x: x.repeat_interleave(2, 2).repeat_interleave(2, 3)),
    ("Upsample", {"size": [6, 9]}, [(4, 3, 3)], lambda a, p, x: x.repeat_interleave(2, 2).repeat_interleave(3, 3)),
    ("Upsample", {"mode": "bilinear", "size": [5, 7], "align_corners": True}, [(4, 3, 4)],
     lambda a, p, x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True)),
    ("Upsample", {"mode": "bilinear", "scale_factor": [1.5, 2]}, [(4, 4, 3)],
     lambda a, p, x: F.interpolate(x, scale_factor=(1.5, 2.0), mode="bilinear", align_corners=False)),
    ("Linear", {"out_features": 5, "activation": "relu"}, [(16,)], linear_ref),
    ("Linear", {"out_features": 5, "bias": False, "in_features": 4, "activation": "leaky_relu", "activation_param": 0.5},
     [(3, 4)], linear_ref),
    ("Flatten", {}, [(4, 3, 3)], lambda a, p, x: x.reshape(x.shape[0], -1)),
    ("Flatten", {"start_dim": 2, "end_dim": 3}, [(4, 3, 3)], lambda a, p, x: x.reshape(x.shape[0], 4, 9)),
    ("Dropout", {"p": 0.5}, [(4, 3, 3)], lambda a, p, x: x),
    ("Identity", {}, [(4, 3, 3)], lambda a, p, x: x),
    ("Add", {}, [(4, 3, 3), (4, 1, 1), (1, 3, 3)], lambda a, p, x, y, z: x + y + z),
    ("Add", {}, [(4, 3, 3), (4, 3, 3)], lambda a, p, x, y: x + y),
    ("Mul", {}, [(4, 1, 1), (4, 3, 3), (1, 3, 3), (4, 3, 3)], lambda a, p, w, x, y, z: w * x * y * z),
    ("Mul", {}, [(4, 3, 3), (4, 1, 1)], lambda a, p, x, y: x * y),
    ("Concat", {}, [(2, 3, 3), (3, 3, 3)], lambda a, p, x, y: torch.cat([x, y], 1)),
    ("Concat", {"dim": -1}, [(2, 3, 3), (2, 3, 1)], lambda a, p, x, y: torch.cat([x, y], 3)),
    ("ChannelShuffle", {"groups": 2}, [(6, 3, 3)], lambda a, p, x: torch.nn.ChannelShuffle(2)(x)),
    ("ChannelSplit", {}, [(6, 3, 3)], lambda a, p, x: (x[:, :3], x[:, 3:])),
    ("ChannelSplit", {"sections": [1, 3, 2]}, [(6, 3, 3)], lambda a, p, x: (x[:, :1], x[:, 1:4], x[:, 4:])),
    ("Permute", {"dims": [0, 2, 3, 1]}, [(6, 3, 4)], lambda a, p, x: x.permute(0, 2, 3, 1)),
    ("Scale", {}, [(6, 3, 3)], lambda a, p, x: x * p["weight"].view(1, 6, 1, 1)),
    ("Scale", {"axis": -1, "init": 0.5}, [(3, 3, 6)], lambda a, p, x: x * p["weight"]),
    ("StochasticDepth", {"p": 0.4}, [(6, 3, 3)], lambda a, p, x: x),
]


def assert_outputs_close(got, expected, atol: float, rtol: float) -> None:
    """One tensor or a tuple of them, compared element by element."""
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=atol, rtol=rtol)


def _case_id(case) -> str:
    return f"{case[0]}-{'-'.join(f'{k}={v}' for k, v in case[1].items())}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_op_matches_reference(case):
    op, attrs, shapes, reference = case
    graph = op_graph(op, attrs, shapes)
    params = random_params(graph)
    module = lower(graph).eval()
    torch.manual_seed(0)
    xs = [torch.randn(2, *s) for s in shapes]
    if op == "DeformConv2d":
        xs[1] = xs[1] * 1.5  # some taps land outside the image
        if len(xs) > 2:
            xs[2] = torch.rand_like(xs[2])
    with torch.no_grad():
        got = module(*xs)
    expected = reference(graph.nodes["node"].resolved, params, *xs)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    report = analyze(graph)
    ir_shapes = report.by_name()["node"].shapes
    for g, e, s in zip(got, expected, ir_shapes):
        assert tuple(g.shape[1:]) == tuple(s)
        torch.testing.assert_close(g, e.float(), atol=ATOL, rtol=1e-5)
    assert sum(p.numel() for p in module.parameters()) == report.total.params


def test_every_registered_op_has_a_lowering_and_a_case():
    ops = set(all_ops()) - {"Opaque"}
    assert ops <= set(LOWERINGS)
    assert set(LOWERINGS) <= set(all_ops())
    assert ops - {"Input", "Output"} <= {c[0] for c in CASES}


def test_op_without_lowering_names_the_node():
    graph = op_graph("ReLU", {}, [(4, 3, 3)])
    graph.add("Opaque", ["node"], name="mystery", attrs={"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[4, 3, 3]]})
    graph.set_input("out0", 0, "mystery")
    with pytest.raises(DesignError, match="'Opaque' has no PyTorch lowering, node 'mystery'"):
        lower(graph)


def _template_input(template) -> tuple:
    return template.small_input(64)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_lowers_with_ir_params_and_shapes(name):
    template = TEMPLATES[name]
    graph = build_template(name, _template_input(template), min(template.num_classes, 10))
    module = lower(graph).eval()
    assert sum(p.numel() for p in module.parameters()) == analyze(graph).total.params
    design_keys = {f"{node}.{key}" for node, shapes in param_shapes(graph).items() for key in shapes}
    counters = {k for k in module.state_dict() if k.endswith(".num_batches_tracked")}
    assert set(module.state_dict()) - counters == design_keys
    xs = [torch.randn(2, *graph.nodes[i].attrs["shape"]) for i in graph.inputs]
    with torch.no_grad():
        ShapeProp(module).propagate(*xs)
    fx_nodes = {n.name: n for n in module.graph.nodes}
    for ref, fx_name in module.meta["values"].items():
        src, k = parse_ref(ref)
        got = tuple(fx_nodes[fx_name].meta["tensor_meta"].shape)
        assert got == (2, *graph.nodes[src].meta["shapes"][k]), ref


def test_lowering_uses_node_params_and_leaves_the_graph_alone():
    graph = build_template("lenet", (1, 8, 8), 10)
    lower(graph, seed=3)
    assert all(not node.params for node in graph)
    init_params(graph, 3)
    module = lower(graph, seed=99)
    for key, value in weights_to_dict(graph).items():
        assert np.array_equal(module.state_dict()[key].numpy(), value)
    assert "conv1 = self.conv1(x)" in module.code


def siamese_graph(in_channels: int = 3) -> Graph:
    g = Graph("siamese")
    g.add("Input", name="left", attrs={"shape": [3, 8, 8]})
    g.add("Input", name="right", attrs={"shape": [in_channels, 8, 8]})
    for side in ("left", "right"):
        g.add("Conv2d", [side], name=f"{side}_conv", attrs={"out_channels": 4, "kernel_size": 3, "activation": "relu"}, share="encoder")
        g.add("GlobalAvgPool", [f"{side}_conv"], name=f"{side}_pool")
        g.add("Flatten", [f"{side}_pool"], name=f"{side}_flat")
        g.add("Linear", [f"{side}_flat"], name=f"{side}_fc", attrs={"out_features": 5}, share="head")
        g.add("Output", [f"{side}_fc"], name=f"{side}_embedding")
    return g


def test_shared_nodes_use_one_module():
    graph = siamese_graph()
    module = lower(graph)
    assert sorted(module.state_dict()) == ["left_conv.bias", "left_conv.weight", "left_fc.bias", "left_fc.weight"]
    assert module.code.count("self.left_conv(") == 2 and "right_conv" not in dict(module.named_modules())
    x = torch.randn(2, 3, 8, 8)
    a, b = module(x, x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert sum(p.numel() for p in module.parameters()) == analyze(graph).total.params


def test_triplet_template_shares_one_module_per_group():
    graph = build_template("triplet_net", (1, 8, 8), 8)
    groups = graph.share_groups()
    assert groups, "triplet_net declares sharing groups"
    module = lower(graph)
    names = dict(module.named_children())
    for members in groups.values():
        assert members[0] in names and not set(members[1:]) & set(names)
        assert module.code.count(f"self.{members[0]}(") == len(members)


def test_shared_nodes_with_different_inputs_are_refused():
    with pytest.raises(DesignError, match="node 'right_conv' share"):
        lower(siamese_graph(in_channels=2))


def test_params_from_module_writes_back_trained_values():
    graph = siamese_graph()
    module = lower(graph)
    with torch.no_grad():
        module.left_conv.weight.add_(1.0)
    with pytest.raises(DesignError, match="no tensor 'left_conv.weight'"):
        params_from_module(graph, torch.nn.Sequential(module))  # keys "0.left_conv.weight" do not match
    params_from_module(graph, module)
    np.testing.assert_array_equal(graph.nodes["left_conv"].params["weight"], module.left_conv.weight.detach().numpy())
    assert graph.nodes["right_conv"].params is graph.nodes["left_conv"].params
    assert graph.nodes["left_conv"].params["weight"].dtype == np.float32


def test_reserved_names():
    graph = op_graph("ReLU", {}, [(4, 3, 3)])
    graph.rename("x0", "torch")
    graph.add("Conv2d", ["node"], name="F", attrs={"out_channels": 2, "kernel_size": 1, "activation": "relu"})
    graph.set_input("out0", 0, "F")
    module = lower(graph)
    assert module(torch.ones(1, 4, 3, 3)).shape == (1, 2, 3, 3)
    clash = op_graph("Conv2d", {"out_channels": 2, "kernel_size": 1}, [(4, 3, 3)])
    clash.rename("node", "cuda")
    with pytest.raises(DesignError, match="node 'cuda'"):
        lower(clash)


def test_relu_overwrites_only_private_fresh_tensors():
    g = Graph("inplace")
    g.add("Input", name="x", attrs={"shape": [3, 6, 6]})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["conv"], name="private")  # only reader of a fresh conv output
    g.add("BatchNorm2d", ["private"], name="bn")
    g.add("ReLU", ["bn"], name="shared_input")  # bn is also an output
    g.add("Sigmoid", ["shared_input"], name="sig")
    g.add("ReLU", ["sig"], name="after_sigmoid")  # sigmoid's backward reads its output
    g.add("Conv2d", ["after_sigmoid"], name="fused", attrs={"out_channels": 2, "kernel_size": 1, "activation": "relu6"})
    g.add("Output", ["fused"], name="out")
    g.add("Output", ["bn"], name="features")
    module = lower(g).train()
    assert module.private.inplace and not module.shared_input.inplace and not module.after_sigmoid.inplace
    assert "relu6(fused, inplace = True)" in module.code
    reference = lower(g).train()
    for m in reference.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    reference.graph.find_nodes(op="call_function", target=F.relu6)[0].kwargs = {}
    reference.recompile()
    x = torch.randn(2, 3, 6, 6)
    got, expected = module(x), reference(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    sum(t.square().sum() for t in got).backward()
    sum(t.square().sum() for t in expected).backward()
    torch.testing.assert_close(module.conv.weight.grad, reference.conv.weight.grad, atol=0, rtol=0)


# ---- deformable convolution ---------------------------------------------------------------------


@pytest.mark.parametrize("stride,padding,dilation,groups,offset_groups", [((1, 1), (1, 1), (1, 1), 1, 1), ((2, 1), (0, 2), (2, 1), 2, 2)])
def test_deform_conv_matches_numpy_reference(stride, padding, dilation, groups, offset_groups):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 7, generator=gen)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=gen)
    bias = torch.randn(6, generator=gen)
    ho = (6 + 2 * padding[0] - dilation[0] * 2 - 1) // stride[0] + 1
    wo = (7 + 2 * padding[1] - dilation[1] * 2 - 1) // stride[1] + 1
    offset = 2.0 * torch.randn(2, 2 * offset_groups * 9, ho, wo, generator=gen)
    offset[0, 0, 0, 0] = -1.0  # exactly on the border: the far corner has weight 0
    mask = torch.rand(2, offset_groups * 9, ho, wo, generator=gen)
    for m in (None, mask):
        got = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, m)
        expected = deform_reference(x.numpy(), offset.numpy(), weight.numpy(), bias.numpy(), stride, padding, dilation,
                                    None if m is None else m.numpy())
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=1e-5)  # float32 vs float64


def test_deform_conv_with_zero_offsets_is_plain_conv():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    weight = torch.randn(6, 2, 3, 3, generator=gen)
    offset = torch.zeros(1, 2 * 9, 4, 2)
    mask = torch.ones(1, 9, 4, 2)
    got = deform_conv2d(x, offset, weight, None, (2, 3), (1, 1), (1, 2), mask)
    torch.testing.assert_close(got, F.conv2d(x, weight, None, (2, 3), (1, 1), (1, 2), groups=2), atol=ATOL, rtol=1e-5)


def test_deform_conv_gradients_reach_input_offsets_and_weights():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    offset = (0.3 * torch.randn(1, 18, 5, 5)).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    deform_conv2d(x, offset, weight, None, (1, 1), (1, 1), (1, 1)).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, offset, weight))


# ---- train / eval semantics ---------------------------------------------------------------------


def test_dropout_train_and_eval():
    module = lower(op_graph("Dropout", {"p": 0.25}, [(64, 8, 8)]))
    x = torch.ones(4, 64, 8, 8)
    module.train()
    y = module(x)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    module.eval()
    torch.testing.assert_close(module(x), x, atol=0, rtol=0)


def test_rrelu_train_and_eval():
    module = lower(op_graph("RReLU", {"lower": 0.1, "upper": 0.3}, [(64, 8, 8)]))
    x = -torch.ones(2, 64, 8, 8)
    module.train()
    slopes = -module(x)
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and slopes.std() > 0.01
    module.eval()
    torch.testing.assert_close(module(x), torch.full_like(x, -0.2))


def test_batchnorm_train_and_eval():
    graph = op_graph("BatchNorm2d", {"momentum": 0.5}, [(3, 4, 4)])
    module = lower(graph)
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    module.train()
    y = module(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    mean = x.mean((0, 2, 3))
    torch.testing.assert_close(module.node.running_mean, 0.5 * mean, atol=1e-5, rtol=1e-5)
    module.eval()
    expected = (x - module.node.running_mean.view(1, 3, 1, 1)) / torch.sqrt(module.node.running_var.view(1, 3, 1, 1) + 1e-5)
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    assert module.node.num_batches_tracked == 1  # torch's counter, kept; the design does not store it
    weights = {k: v for k, v in module.state_dict().items() if k != "node.num_batches_tracked"}
    fresh = lower(graph)
    fresh.load_state_dict(weights)  # strict: torch fills in the missing counter
    torch.testing.assert_close(fresh.node.running_mean, module.node.running_mean, atol=0, rtol=0)


def test_torch_compile_small_graph():
    """Whole-graph capture (no graph breaks), forward and backward, through AOT autograd."""
    g = Graph("compiled")
    g.add("Input", name="x", attrs={"shape": [2, 6, 6]})
    g.add("Conv2d", ["x"], name="offsets", attrs={"out_channels": 18, "kernel_size": 3, "padding": 1})
    g.add("DeformConv2d", ["x", "offsets"], name="deform", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add("BatchNorm2d", ["deform"], name="bn")
    g.add("GlobalAvgPool", ["bn"], name="pool")
    g.add("Flatten", ["pool"], name="flat")
    g.add("Linear", ["flat"], name="fc", attrs={"out_features": 3, "activation": "relu"})
    g.add("Output", ["fc"], name="logits")
    eager, module = lower(g), lower(g)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 2, 6, 6)
    got, expected = compiled(x), eager(x)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    got.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(module.deform.weight.grad, eager.deform.weight.grad, atol=1e-5, rtol=1e-4)
    params_from_module(g, compiled)  # unwraps the compiled module
    np.testing.assert_array_equal(g.nodes["bn"].params["running_mean"], eager.bn.running_mean.numpy())


@pytest.mark.parametrize("name,shape", [("triplet_net", (1, 16, 16)), ("shufflenet_v2_x1_0", (3, 32, 32))])
def test_torch_compile_captures_templates_whole(name, shape):
    """Shared modules with three inputs and outputs, channel split/shuffle/concat: one graph, no breaks, same outputs."""
    graph = build_template(name, shape, 8)
    module = lower(graph).eval()
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    xs = [torch.randn(2, *graph.nodes[i].attrs["shape"]) for i in graph.inputs]
    with torch.no_grad():
        assert_outputs_close(compiled(*xs), module(*xs), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_in_training_drops_whole_samples_or_the_batch(mode):
    """torchvision's semantics: each sample (row) or the whole batch (batch) is zeroed with probability p,
    the rest scaled by 1 / (1 - p); eval and p = 0 are the identity."""
    graph = op_graph("StochasticDepth", {"p": 0.5, "mode": mode}, [(3, 2, 2)])
    module = lower(graph).train()
    torch.manual_seed(0)
    x = torch.rand(64, 3, 2, 2) + 1.0
    factors = set()
    for _ in range(8):
        ratio = module(x) / x
        per_sample = ratio.flatten(1)
        assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))
        values = set(per_sample[:, 0].tolist())
        assert values <= {0.0, 2.0}
        if mode == "batch":
            assert len(values) == 1
        factors |= values
    assert factors == {0.0, 2.0}
    assert torch.equal(module.eval()(x), x)
    keep = lower(op_graph("StochasticDepth", {"p": 0.0, "mode": mode}, [(3, 2, 2)])).train()
    assert torch.equal(keep(x), x)


def test_layer_scale_and_layer_norm_train_their_parameters():
    graph = op_graph("LayerNorm", {}, [(4, 3, 3)])
    graph.add("Scale", ["node"], name="gamma", attrs={"init": 0.25})
    graph.set_input("out0", 0, "gamma")
    module = lower(graph).train()
    assert torch.equal(module.gamma.weight, torch.full((4,), 0.25))
    module(torch.randn(2, 4, 3, 3)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert sorted(module.state_dict()) == ["gamma.weight", "node.bias", "node.weight"]
