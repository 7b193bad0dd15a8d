"""Predicted latency from a calibrated table: the read side of `backends.latency_model`.

The table is JSON written by `convstudio profile --calibrate`: per op family, latency_ms =
a + b * GMACs + c * MB moved (a, b, c >= 0), fitted on this machine and runtime. Families split ops by
what runs differently: depthwise, pointwise, grouped, dense and large-kernel convs; BN, activations and
adds that follow a conv (runtimes fuse them; activations only those one kernel computes, not SiLU or GELU)
apart from standalone ones. Views (Input, Output, Flatten,
Identity, Dropout) cost nothing. This module only reads the table; it never runs a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, parse_ref
from convstudio.ir.ops.registry import CATEGORIES, numel

FORMAT = 1
BYTES_PER_ELEMENT = 4
VIEWS = frozenset({"Input", "Output", "Flatten", "Identity", "Dropout", "StochasticDepth", "Permute", "ChannelSplit"})
FUSING_HEADS = frozenset({"Conv2d", "ConvTranspose2d", "Linear"})  # ops runtimes fuse a following BN / activation / add into
FUSABLE_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "Hardsigmoid", "Hardswish"})  # one kernel a conv can absorb


def _fused_tail(graph: Graph, node: Node) -> bool:
    """Whether `node` directly follows a conv or linear (through BN / activations) whose output only it reads."""
    seen = 0
    while node.inputs and seen < 4:
        src, _ = parse_ref(node.inputs[0]) if node.op != "Add" else _main_input(graph, node)
        producer = graph.nodes[src]
        if len(graph.users(src)) != 1:
            return False
        if producer.op in FUSING_HEADS:
            return True
        if producer.op not in CATEGORIES["normalization"] | CATEGORIES["activation"]:
            return False
        node, seen = producer, seen + 1
    return False


def _main_input(graph: Graph, node: Node) -> tuple[str, int]:
    """The input of an Add that only it reads (the branch a runtime fuses the add into), else its first."""
    refs = [parse_ref(r) for r in node.inputs]
    single = [r for r in refs if len(graph.users(r[0])) == 1]
    return (single or refs)[0]


def family(graph: Graph, node: Node, ins: list) -> str:
    """The op family whose coefficients predict `node` (shapes known)."""
    op = node.op
    if op in VIEWS:
        return "view"
    if op == "Conv2d":
        a = node.resolved
        kh, kw = a["kernel_size"]
        groups = a["groups"]
        if groups > 1 and groups == ins[0][0]:
            return "conv_depthwise"
        if groups > 1:
            return "conv_grouped"
        if kh * kw == 1:
            return "conv_pointwise"
        return "conv_dense" if max(kh, kw) <= 3 else "conv_large"
    if op in ("ConvTranspose2d", "DeformConv2d", "Linear"):
        return {"ConvTranspose2d": "conv_transpose", "DeformConv2d": "conv_deform", "Linear": "linear"}[op]
    if op in CATEGORIES["normalization"] | CATEGORIES["activation"] | CATEGORIES["elementwise"]:
        kind = "norm" if op in CATEGORIES["normalization"] else "activation" if op in CATEGORIES["activation"] else "elementwise"
        fusable = kind != "activation" or op in FUSABLE_ACTIVATIONS
        return f"{kind}_fused" if fusable and _fused_tail(graph, node) else kind
    if op in ("GlobalAvgPool", "GlobalMaxPool", "AdaptiveAvgPool2d"):
        return "global_pool"
    if op in ("MaxPool2d", "AvgPool2d"):
        return "pool"
    return "memory"  # Concat, ChannelShuffle, Upsample and the rest: bound by the bytes they move


def features(graph: Graph, node: Node, ins: list, outs: list, batch: int) -> tuple[float, float]:
    """(GMACs, MB moved) of one node at `batch`: inputs, outputs and weights."""
    a = node.resolved
    macs = node.opdef.cost(a, ins, outs).macs * batch
    weights = sum(map(numel, node.opdef.params(a, ins).values()))
    moved = (sum(map(numel, ins)) + sum(map(numel, outs))) * batch + weights
    return macs / 1e9, moved * BYTES_PER_ELEMENT / 1e6


@dataclass
class LatencyTable:
    """A calibrated latency model: coefficients per family and the MACs-proportional baseline."""

    runtime: str
    provider: str
    threads: int
    machine: str
    families: dict[str, list[float]]  # family -> [a ms, b ms per GMAC, c ms per MB]
    overhead_ms: float = 0.0  # per run, outside any node
    baseline_ms_per_gmac: float = 0.0
    meta: dict = field(default_factory=dict)

    def coefficients(self, name: str) -> list[float]:
        if name == "view":
            return [0.0, 0.0, 0.0]
        found = self.families.get(name) or self.families.get(name.removesuffix("_fused")) or self.families.get("memory")
        return found or [0.0, 0.0, 0.0]

    def node_ms(self, graph: Graph, node: Node, ins: list, outs: list, batch: int) -> float:
        a, b, c = self.coefficients(family(graph, node, ins))
        gmacs, mb = features(graph, node, ins, outs, batch)
        return a + b * gmacs + c * mb

    def to_dict(self) -> dict:
        return {"format": FORMAT, "runtime": self.runtime, "provider": self.provider, "threads": self.threads, "machine": self.machine,
                "families": self.families, "overhead_ms": self.overhead_ms, "baseline_ms_per_gmac": self.baseline_ms_per_gmac, "meta": self.meta}

    @classmethod
    def from_dict(cls, data, where: str) -> LatencyTable:
        """A table from its JSON form; one DesignError line naming the bad field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DesignError(f"not a latency model of format {FORMAT}", where)
        try:
            families = {str(k): [float(x) for x in v] for k, v in data["families"].items()}
            if any(len(v) != 3 or min(v) < 0 for v in families.values()):
                raise ValueError("families")
            return cls(str(data["runtime"]), str(data["provider"]), int(data["threads"]), str(data["machine"]), families,
                       float(data["overhead_ms"]), float(data["baseline_ms_per_gmac"]), dict(data.get("meta") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DesignError(f"latency model has a bad or missing field ({err})", where) from None


def read_table(path: Path | str) -> LatencyTable:
    """Read a latency model file written by `convstudio profile --calibrate`."""
    path = Path(path)
    where = f"file '{path}'"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DesignError("no latency model here (run `convstudio profile --calibrate`)", where) from None
    except OSError as err:
        raise DesignError(f"cannot read the latency model: {err.strerror}", where) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise DesignError("latency model is not valid JSON", where) from None
    return LatencyTable.from_dict(data, where)


def predict(graph: Graph, table: LatencyTable, batch: int = 1) -> tuple[dict[str, float], float]:
    """Predicted milliseconds per node and end to end (node sum plus the table's per-run overhead); shapes inferred."""
    per_node = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        outs = node.meta.get("shapes")
        if outs is None:
            raise DesignError("has no inferred shape", f"node '{name}'")
        ins = [graph.nodes[src].meta["shapes"][k] for src, k in map(parse_ref, node.inputs)]
        per_node[name] = table.node_ms(graph, node, ins, outs, batch)
    return per_node, sum(per_node.values()) + table.overhead_ms
