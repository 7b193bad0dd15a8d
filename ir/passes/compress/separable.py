"""separable: a conv becomes a depthwise conv (same kernel, stride, padding, dilation) and a 1x1 pointwise conv.

With `bn` a BatchNorm2d follows the depthwise conv; `activation` (a fused-activation name or none) is
applied between the two, as a separate op after BN or as the depthwise conv's fused activation. The
pointwise conv keeps the original name, out_channels, bias and activation.

With trained weights, each input channel's filters W[:, c] (Cout x k x k) are split by SVD into their best
rank-1 product u_c (Cout) x v_c (k x k): v_c is the depthwise kernel, u_c the pointwise column; a BN between them
starts as the identity. Without BN and activation the result is exact where every W[:, c] has rank 1.
"""

from __future__ import annotations

import numpy as np

from convstudio.ir.graph import Graph
from convstudio.ir.ops.activation import FUSED_ACTIVATIONS
from convstudio.ir.passes.compress.common import check_activation, conv_strategy, in_shape, place_before, spatial_attrs

DEFAULTS = {"bn": True, "activation": "relu"}


def applies(graph: Graph, name: str, **params) -> str | None:
    node = graph[name]
    if node.op != "Conv2d":
        return f"{name} is a {node.op}, not a Conv2d"
    a = node.resolved
    if a["kernel_size"] == (1, 1):
        return f"{name} is already a pointwise (1x1) conv"
    if a["groups"] != 1:
        return f"{name} is already grouped (groups={a['groups']})"
    if in_shape(graph, name)[0] == 1:
        return f"{name} has a single input channel"
    return None


def check(bn: bool, activation: str) -> None:
    check_activation(activation)


def rank1_split(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depthwise (Cin, 1, kh, kw), pointwise (Cout, Cin, 1, 1)) weights whose product is the best rank-1 fit of each W[:, c]."""
    cout, cin, kh, kw = weight.shape
    per_channel = np.transpose(np.asarray(weight, dtype=np.float64), (1, 0, 2, 3)).reshape(cin, cout, kh * kw)
    u, s, vt = np.linalg.svd(per_channel, full_matrices=False)
    root = np.sqrt(s[:, 0])
    depthwise = (vt[:, 0, :] * root[:, None]).reshape(cin, 1, kh, kw)
    pointwise = (u[:, :, 0] * root[:, None]).T.reshape(cout, cin, 1, 1)
    return depthwise.astype(weight.dtype), pointwise.astype(weight.dtype)


def rewrite(graph: Graph, name: str, bn: bool, activation: str) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    cin = in_shape(graph, name)[0]
    weight, bias = node.params.get("weight"), node.params.get("bias")
    dw_attrs = {"out_channels": cin, **spatial_attrs(a), "groups": cin, "bias": not bn}
    if not bn and activation != "none":
        dw_attrs["activation"] = activation
    added = [graph.add("Conv2d", [node.inputs[0]], name=graph.fresh_name(f"{name}_dw"), attrs=dw_attrs).name]
    if bn:
        added.append(graph.add("BatchNorm2d", [added[-1]], name=graph.fresh_name(f"{name}_dw_bn")).name)
        if activation != "none":
            op = FUSED_ACTIVATIONS[activation]
            added.append(graph.add(op, [added[-1]], name=graph.fresh_name(f"{name}_dw_{op.lower()}")).name)
    pw_attrs = {"out_channels": a["out_channels"], "kernel_size": 1, "bias": a["bias"]}
    if a["activation"] != "none":
        pw_attrs.update(activation=a["activation"], activation_param=a["activation_param"])
    graph.set_input(name, 0, added[-1])
    graph.set_attrs(name, pw_attrs)
    node.params = {}
    if weight is not None:
        depthwise, pointwise = rank1_split(weight)
        graph.nodes[added[0]].params = {"weight": depthwise, **({} if bn else {"bias": np.zeros(cin, weight.dtype)})}
        node.params = {"weight": pointwise, **({"bias": bias} if bias is not None else {})}
        if bn:
            eps = graph.nodes[added[1]].resolved["eps"]
            ones, zeros = np.ones(cin, weight.dtype), np.zeros(cin, weight.dtype)
            graph.nodes[added[1]].params = {"weight": ones, "bias": zeros, "running_mean": zeros.copy(), "running_var": ones - np.asarray(eps, weight.dtype)}
    place_before(graph, added, name)
    return [*added, name], f"{name}: conv -> depthwise {added[0]} + pointwise {name}"


STRATEGY = conv_strategy(
    "separable",
    "a conv becomes depthwise + pointwise (1x1), optionally with BN + activation between; initialised from a rank-1 split of each filter",
    DEFAULTS,
    applies,
    rewrite,
    check,
    keeps_weights=True,
)
