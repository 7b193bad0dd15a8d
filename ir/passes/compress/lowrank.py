"""lowrank: a layer as a product of smaller ones, initialised from the decomposition of its trained weights.

Rules:
- Linear (out x in) -> Linear(in -> r) then Linear(r -> out): truncated SVD, sqrt(S) on each side;
- `method=spatial`, kxk conv -> kx1 conv (Cin -> r) then 1xk conv (r -> Cout): SVD of the weight arranged as
  (Cin·kh) x (Cout·kw) (Jaderberg et al. 2014); the kx1 takes the vertical stride, padding and dilation, the 1xk the horizontal;
- `method=tucker`, conv -> 1x1 (Cin -> r_in), kxk core (r_in -> r_out, original geometry), 1x1 (r_out -> Cout):
  Tucker-2 by HOSVD of the channel modes;
- the rank is `rank` (capped at full rank) or, with rank=0, the fewest singular values holding `energy` of the squared sum;
- the last piece keeps the node's name, bias and fused activation; the first pieces have no bias (so zero padding
  commutes with them and the decomposition is exact at full rank);
- grouped convs are declined; a design without weights needs an explicit rank (the pieces get fresh weights).
"""

from __future__ import annotations

import math

import numpy as np

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops.conv import conv_pads
from convstudio.ir.passes.compress.common import Strategy, in_shape, per_node, place_before

DEFAULTS = {"method": "spatial", "rank": 0, "energy": 0.9}
METHODS = ("spatial", "tucker")


def check(method: str, rank: int, energy: float) -> None:
    if method not in METHODS:
        raise DesignError(f"method must be one of {', '.join(METHODS)}, got '{method}'", "--param method")
    if rank < 0:
        raise DesignError(f"rank must be 0 (use energy) or positive, got {rank}", "--param rank")
    if not (0 < energy <= 1 and math.isfinite(energy)):
        raise DesignError(f"energy must be above 0 and at most 1, got {energy}", "--param energy")


def choose_rank(singular: np.ndarray, rank: int, energy: float) -> int:
    """`rank` capped at the full rank, or the fewest singular values holding `energy` of the squared sum (at least 1)."""
    if rank:
        return min(rank, len(singular))
    squares = np.asarray(singular, dtype=np.float64) ** 2
    total = squares.sum()
    if total == 0:
        return 1
    return max(1, min(len(squares), int(np.searchsorted(np.cumsum(squares) / total, energy - 1e-12)) + 1))


def applies(graph: Graph, name: str, method: str = DEFAULTS["method"], rank: int = 0, energy: float = DEFAULTS["energy"]) -> str | None:
    node = graph[name]
    if node.op not in ("Conv2d", "Linear"):
        return f"{name} is a {node.op}, not a Conv2d or Linear"
    if node.share:
        return f"{name} shares its parameters (group '{node.share}')"
    if node.op == "Conv2d":
        a = node.resolved
        if a["groups"] != 1:
            return f"{name} is a grouped conv (groups={a['groups']}): its filters see different inputs"
        kh, kw = a["kernel_size"]
        if method == "spatial" and (kh == 1 or kw == 1):
            return f"{name} has a {kh}x{kw} kernel: a spatial split needs both sides above 1"
        if method == "tucker" and (kh, kw) == (1, 1):
            return f"{name} is a 1x1 conv: Tucker-2 needs a larger kernel"
    if not rank and "weight" not in node.params:
        return f"{name} has no trained weights to decompose (give rank=R for fresh weights)"
    return None


def _svd(matrix: np.ndarray):
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    return u, s, vt


def _last_piece_attrs(a: dict, **attrs) -> dict:
    """The attributes of the piece that keeps the node's name: its bias and fused activation."""
    out = dict(attrs, bias=a["bias"])
    if a["activation"] != "none":
        out.update(activation=a["activation"], activation_param=a["activation_param"])
    return out


def _pads(pads: tuple[int, int], vertical: bool) -> list[int]:
    """Padding for a piece that pads one axis only: a pair when symmetric, else [top, left, bottom, right]."""
    lo, hi = pads
    if lo == hi:
        return [lo, 0] if vertical else [0, lo]
    return [lo, 0, hi, 0] if vertical else [0, lo, 0, hi]


def _rewrite_linear(graph: Graph, name: str, rank: int, energy: float) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    fin = in_shape(graph, name)[-1]
    w = node.params.get("weight")
    if w is not None:
        u, s, vt = _svd(w)
        r = choose_rank(s, rank, energy)
        root = np.sqrt(s[:r])
        first_w, last_w = (root[:, None] * vt[:r]).astype(w.dtype), (u[:, :r] * root).astype(w.dtype)
    else:
        r = min(rank, fin, a["out_features"])
    first = graph.add("Linear", [node.inputs[0]], name=graph.fresh_name(f"{name}_lr"), attrs={"out_features": r, "bias": False}).name
    graph.set_input(name, 0, first)
    graph.set_attrs(name, _last_piece_attrs(a, out_features=a["out_features"]))
    if w is not None:
        graph.nodes[first].params = {"weight": first_w}
        node.params = {"weight": last_w, **({"bias": node.params["bias"]} if "bias" in node.params else {})}
    else:
        node.params = {}
    place_before(graph, [first], name)
    return [first, name], f"{name}: linear {fin}x{a['out_features']} -> rank {r} ({first} + {name})"


def _rewrite_spatial(graph: Graph, name: str, rank: int, energy: float) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    cin, cout = in_shape(graph, name)[0], a["out_channels"]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["stride"], a["dilation"]
    ph, pw = conv_pads(a)
    w = node.params.get("weight")
    if w is not None:
        u, s, vt = _svd(np.transpose(w, (1, 2, 0, 3)).reshape(cin * kh, cout * kw))
        r = choose_rank(s, rank, energy)
        root = np.sqrt(s[:r])
        vertical_w = (u[:, :r] * root).T.reshape(r, cin, kh, 1).astype(w.dtype)
        horizontal_w = (root[:, None] * vt[:r]).reshape(r, cout, kw).transpose(1, 0, 2).reshape(cout, r, 1, kw).astype(w.dtype)
    else:
        r = min(rank, cin * kh, cout * kw)
    vertical = graph.add("Conv2d", [node.inputs[0]], name=graph.fresh_name(f"{name}_kx1"), attrs={
        "out_channels": r, "kernel_size": [kh, 1], "stride": [sh, 1], "padding": _pads(ph, True), "dilation": [dh, 1], "bias": False}).name
    graph.set_input(name, 0, vertical)
    graph.set_attrs(name, _last_piece_attrs(a, out_channels=cout, kernel_size=[1, kw], stride=[1, sw], padding=_pads(pw, False), dilation=[1, dw]))
    if w is not None:
        graph.nodes[vertical].params = {"weight": vertical_w}
        node.params = {"weight": horizontal_w, **({"bias": node.params["bias"]} if "bias" in node.params else {})}
    else:
        node.params = {}
    place_before(graph, [vertical], name)
    return [vertical, name], f"{name}: {kh}x{kw} conv -> {kh}x1 ({vertical}) + 1x{kw} ({name}), rank {r}"


def _rewrite_tucker(graph: Graph, name: str, rank: int, energy: float) -> tuple[list[str], str]:
    node = graph.nodes[name]
    a = node.resolved
    cin, cout = in_shape(graph, name)[0], a["out_channels"]
    w = node.params.get("weight")
    if w is not None:
        w64 = np.asarray(w, dtype=np.float64)
        u_out, s_out, _ = _svd(w64.reshape(cout, -1))
        u_in, s_in, _ = _svd(np.transpose(w64, (1, 0, 2, 3)).reshape(cin, -1))
        r_out, r_in = choose_rank(s_out, rank, energy), choose_rank(s_in, rank, energy)
        u_out, u_in = u_out[:, :r_out], u_in[:, :r_in]
        core = np.einsum("oikl,or,is->rskl", w64, u_out, u_in)
    else:
        r_out, r_in = min(rank, cout), min(rank, cin)
    first = graph.add("Conv2d", [node.inputs[0]], name=graph.fresh_name(f"{name}_in"),
                      attrs={"out_channels": r_in, "kernel_size": 1, "bias": False}).name
    middle = graph.add("Conv2d", [first], name=graph.fresh_name(f"{name}_core"), attrs={
        "out_channels": r_out, "kernel_size": list(a["kernel_size"]), "stride": list(a["stride"]),
        "padding": a["padding"] if isinstance(a["padding"], str) else list(a["padding"]), "dilation": list(a["dilation"]), "bias": False}).name
    graph.set_input(name, 0, middle)
    graph.set_attrs(name, _last_piece_attrs(a, out_channels=cout, kernel_size=1))
    if w is not None:
        graph.nodes[first].params = {"weight": u_in.T.reshape(r_in, cin, 1, 1).astype(w.dtype)}
        graph.nodes[middle].params = {"weight": core.astype(w.dtype)}
        node.params = {"weight": u_out.reshape(cout, r_out, 1, 1).astype(w.dtype), **({"bias": node.params["bias"]} if "bias" in node.params else {})}
    else:
        node.params = {}
    place_before(graph, [first, middle], name)
    kh, kw = a["kernel_size"]
    return [first, middle, name], f"{name}: {kh}x{kw} conv -> 1x1 ({first}, {r_in}) + {kh}x{kw} core ({middle}, {r_out}) + 1x1 ({name})"


def rewrite(graph: Graph, name: str, method: str, rank: int, energy: float) -> tuple[list[str], str]:
    if graph.nodes[name].op == "Linear":
        return _rewrite_linear(graph, name, rank, energy)
    if method == "spatial":
        return _rewrite_spatial(graph, name, rank, energy)
    return _rewrite_tucker(graph, name, rank, energy)


STRATEGY = Strategy(
    "lowrank",
    "a linear as two (truncated SVD), a kxk conv as kx1 + 1xk (spatial) or 1x1-kxk-1x1 (tucker), from the trained weights",
    DEFAULTS,
    applies,
    per_node("lowrank", ("Conv2d", "Linear"), DEFAULTS, applies, rewrite, check),
    keeps_weights=True,
)
