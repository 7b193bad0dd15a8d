"""pool: insert a MaxPool2d or AvgPool2d (kernel = stride = `kernel`) after the chosen node.

Nothing else is adjusted: the insertion is declined when shapes no longer line up downstream
(e.g. at a residual Add) or a graph output would change shape. Layers whose weight shapes change (a Linear after Flatten) get fresh weights.
"""

from __future__ import annotations

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compress.common import conv_strategy, place_after
from convstudio.ir.shapes import infer_shapes

DEFAULTS = {"kind": "max", "kernel": 2}
KINDS = {"max": "MaxPool2d", "avg": "AvgPool2d"}


def check(kind: str, kernel: int) -> None:
    if kind not in KINDS:
        raise DesignError(f"kind must be max or avg, got '{kind}'", "--param kind")
    if kernel < 2:
        raise DesignError(f"kernel must be at least 2, got {kernel}", "--param kernel")


def _insert(graph: Graph, name: str, kind: str, kernel: int) -> str:
    check(kind, kernel)
    pool = graph.add(KINDS[kind], [name], name=graph.fresh_name(f"{name}_pool"), attrs={"kernel_size": kernel}).name
    graph.replace_all_uses(name, pool, exclude=[pool])
    place_after(graph, [pool], name)
    return pool


def applies(graph: Graph, name: str, kind: str = DEFAULTS["kind"], kernel: int = DEFAULTS["kernel"], **params) -> str | None:
    node = graph[name]
    if node.op == "Output":
        return f"{name} is a graph output"
    if node.opdef.num_outputs(node.resolved) != 1:
        return f"{name} has several outputs"
    shapes = node.meta.get("shapes")
    if not shapes or len(shapes[0]) != 3:
        return f"{name} output is not an image (N, C, H, W)"
    trial = graph.copy()
    pool = _insert(trial, name, kind, kernel)
    try:
        infer_shapes(trial, strict=True)
    except DesignError as e:
        where = e.where.split(" ")[1] if e.where.startswith("node ") else e.where
        return f"shapes no longer line up after {pool} ({e.what} at {where})"
    for out in graph.outputs:
        before, after = graph.nodes[out].meta.get("shapes"), trial.nodes[out].meta["shapes"]
        if before != after:
            return f"output {out} would change from {['N', *before[0]]} to {['N', *after[0]]}"
    return None


def rewrite(graph: Graph, name: str, kind: str, kernel: int) -> tuple[list[str], str]:
    pool = _insert(graph, name, kind, kernel)
    return [pool], f"{name}: {KINDS[kind]} {kernel}x{kernel} inserted after it ({pool})"


STRATEGY = conv_strategy(
    "pool",
    "insert a max or average pool after a node where the shapes downstream still line up",
    DEFAULTS,
    applies,
    rewrite,
    check,
)
