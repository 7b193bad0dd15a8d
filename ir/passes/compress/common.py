"""What every compression strategy shares: the Strategy record, parameter checks and the per-node driver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref, verify
from convstudio.ir.groups import adopt, group_of
from convstudio.ir.ops.activation import FUSED_ACTIVATION_CHOICES
from convstudio.ir.passes.base import PassResult
from convstudio.ir.shapes import infer_shapes


@dataclass(frozen=True)
class Strategy:
    """A compression strategy: `applies(graph, node, **params)` gives None or the reason it does not apply;
    `apply(graph, nodes=None, **params)` returns a new graph (None = everywhere it applies); `keeps_weights`: the
    rewritten layers start from the trained weights (sliced or decomposed), not from a fresh init."""

    name: str
    summary: str
    params: dict
    applies: Callable[..., str | None]
    apply: Callable[..., PassResult]
    keeps_weights: bool = False


def check_params(strategy: str, defaults: dict, given: dict) -> dict:
    """Defaults overridden by `given`; unknown names and mistyped values are DesignErrors."""
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise DesignError(f"strategy '{strategy}' has no parameter '{key}' (known: {known})", f"--param {key}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise DesignError(f"parameter '{key}' must be a {type(default).__name__}, got {value!r}", f"--param {key}")
        out[key] = value
    return out


def parse_param_text(defaults: dict, key: str, text: str):
    """Convert the text of `--param key=text` to the type of the parameter's default."""
    if key not in defaults:
        return text
    default = defaults[key]
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise DesignError(f"parameter '{key}' must be a {type(default).__name__}, got '{text}'", f"--param {key}") from None
    return text


def shapes_of(graph: Graph, ref: str) -> tuple:
    """Per-sample shape of a value, inferring shapes when they are not there yet."""
    name, idx = parse_ref(ref)
    node = graph.nodes[name]
    if node.meta.get("shapes") is None:
        infer_shapes(graph, strict=False)
    shapes = node.meta.get("shapes")
    if shapes is None:
        raise DesignError("shape is unknown (fix the design's shape errors first)", f"node '{name}'")
    return tuple(shapes[idx])


def in_shape(graph: Graph, name: str, index: int = 0) -> tuple:
    return shapes_of(graph, graph.nodes[name].inputs[index])


def place_before(graph: Graph, names: list[str], anchor: str) -> None:
    """Move `names` (new nodes) just before `anchor` in the graph's node order, so files read in order."""
    moving = set(names)
    order = []
    for key in graph.nodes:
        if key == anchor:
            order.extend(names)
        if key not in moving:
            order.append(key)
    graph.reorder(order)


def place_after(graph: Graph, names: list[str], anchor: str) -> None:
    """Move `names` just after `anchor` in the graph's node order."""
    moving = set(names)
    order = []
    for key in graph.nodes:
        if key not in moving:
            order.append(key)
        if key == anchor:
            order.extend(names)
    graph.reorder(order)


def params_fit(graph: Graph, name: str, params: dict) -> bool:
    """Whether `params` have every parameter and buffer node `name` needs, in the shapes it needs."""
    node = graph.nodes[name]
    ins = [shapes_of(graph, r) for r in node.inputs]
    needed = {**node.opdef.params(node.resolved, ins), **node.opdef.buffers(node.resolved, ins)}
    return all(k in params and tuple(params[k].shape) == tuple(s) for k, s in needed.items())


def drop_stale_params(graph: Graph) -> list[str]:
    """Drop parameters whose shapes no longer match their node (they get a fresh init later)."""
    dropped = []
    for name, node in graph.nodes.items():
        if not node.params or node.meta.get("shapes") is None:
            continue
        if not params_fit(graph, name, node.params):
            node.params = {}
            dropped.append(name)
    return dropped


def finish(graph: Graph, changed: list[str], declined: list[dict], report: list[str]) -> PassResult:
    """Verify the rewritten graph, whose shapes the caller has just inferred strictly, and package the result."""
    verify(graph)
    dropped = drop_stale_params(graph)
    if dropped:
        report.append(f"fresh weights needed for {', '.join(dropped)}")
    return PassResult(graph, bool(changed), report, {"changed": changed, "declined": declined})


def per_node(name: str, ops: tuple[str, ...], defaults: dict, applies, rewrite, check=None) -> Callable[..., PassResult]:
    """Build `apply(graph, nodes=None, **params)` from `applies` and `rewrite(graph, node, **params) -> (names, line)`;
    `check(**params)` rejects bad parameter values before any node is tried."""

    def apply(graph: Graph, nodes: list[str] | None = None, **given) -> PassResult:
        params = check_params(name, defaults, given)
        if check:
            check(**params)
        g = graph.copy()
        infer_shapes(g, strict=True)
        if nodes is None:
            targets = [n for n in g.topo_order() if g.nodes[n].op in ops]
        else:
            targets = list(dict.fromkeys(nodes))
            for n in targets:
                g[n]  # an unknown name is a DesignError
        changed, declined, report = [], [], []
        for target in targets:
            reason = applies(g, target, **params)
            if reason:
                declined.append({"node": target, "reason": reason})
                report.append(f"declined {target}: {reason}")
                continue
            home = group_of(g.groups, target) if g.groups else None
            names, line = rewrite(g, target, **params)
            adopt(g.groups, names, home)
            changed.extend(n for n in names if n not in changed)
            report.append(line)
            infer_shapes(g, strict=True)
        return finish(g, changed, declined, report)

    return apply


def conv_strategy(name: str, summary: str, defaults: dict, applies, rewrite, check=None, keeps_weights: bool = False) -> Strategy:
    """A strategy that rewrites Conv2d nodes one at a time (see `per_node`)."""
    return Strategy(name, summary, defaults, applies, per_node(name, ("Conv2d",), defaults, applies, rewrite, check), keeps_weights)


def spatial_attrs(a: dict) -> dict:
    """A conv's kernel, stride, padding and dilation, as attributes for a new conv with the same geometry."""
    return {
        "kernel_size": list(a["kernel_size"]),
        "stride": list(a["stride"]),
        "padding": a["padding"] if isinstance(a["padding"], str) else list(a["padding"]),
        "dilation": list(a["dilation"]),
    }


def check_activation(activation: str) -> None:
    """A fused-activation name (or none), else a DesignError on --param activation."""
    if activation not in FUSED_ACTIVATION_CHOICES:
        raise DesignError(f"activation must be one of {', '.join(FUSED_ACTIVATION_CHOICES)}, got '{activation}'", "--param activation")
