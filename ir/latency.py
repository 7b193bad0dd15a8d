"""Predicted latency from a calibrated table: the read side of `backends.latency_model`.

The table is JSON written by `convstudio profile --calibrate`: per op family, latency_ms =
a + b * GMACs + c * MB of activations moved + d * MB of weights read (a, b, c, d >= 0), fitted on this machine
and runtime; a is the kernel's fixed cost (dispatch, output allocation), weights stream once per call while
activations are read and written per sample. Families split ops by what runs differently: depthwise (3x3 and
larger), pointwise, grouped (1x1 and larger), dense and large-kernel convs; BN, activations and adds that follow
a conv (runtimes fuse them into the conv's kernel: a conv's BN, its activation when one kernel computes it, not
SiLU or GELU, and a residual add with the activation after it) apart from standalone ones; standalone
activations that evaluate an exponential (SiLU, GELU, Sigmoid...) apart from piecewise-linear ones; concat,
channel shuffle and other memory-bound ops. A fused tail costs nothing of its own unless the table lists its
family: calibration counts its time in its head's. Views (Input, Output, Flatten, Identity, Dropout) cost
nothing. This module only reads the table; it never runs a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, parse_ref
from convstudio.ir.ops.registry import CATEGORIES, numel

FORMAT = 2  # 2: four coefficients per family (weights apart from activations)
BYTES_PER_ELEMENT = 4
VIEWS = frozenset({"Input", "Output", "Flatten", "Identity", "Dropout", "StochasticDepth", "Permute", "ChannelSplit"})
FUSING_HEADS = frozenset({"Conv2d", "ConvTranspose2d", "Linear"})  # ops runtimes fuse a following BN / activation / add into
FUSABLE_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "Hardsigmoid", "Hardswish"})  # one kernel a conv can absorb
EXP_ACTIVATIONS = frozenset({"SiLU", "GELU", "ELU", "SELU", "Sigmoid", "Tanh", "Softmax"})  # evaluate an exponential per element
FEATURES_MEMO = 65536  # distinct node signatures a table remembers the features of before it starts over
_PLAIN_OPS: dict[str, bool] = {}  # op -> whether it has no JSON attributes
TAIL_DEPTH = 4  # producers a fused tail looks back through
TAIL_OPS = CATEGORIES["normalization"] | CATEGORIES["activation"] | {"Add"}  # what a fused tail walks back through to its head
# op -> the family kind of a BN, activation or elementwise op (normalization first, then activation, as `family` reads them)
TAIL_KIND = {**dict.fromkeys(CATEGORIES["elementwise"], "elementwise"), **dict.fromkeys(CATEGORIES["activation"], "activation"),
             **dict.fromkeys(CATEGORIES["normalization"], "norm")}
FUSABLE_TAILS = frozenset(op for op, kind in TAIL_KIND.items() if kind != "activation" or op in FUSABLE_ACTIVATIONS)  # may run fused into a head
# families a table may lack -> the nearest one it has (older tables; convs calibration does not cover)
FALLBACK = {"conv_depthwise_large": "conv_depthwise", "conv_grouped_pointwise": "conv_grouped", "concat": "memory", "shuffle": "memory",
            "conv_transpose": "conv_dense", "conv_deform": "conv_dense", "activation_exp": "activation"}


def fused_head(graph: Graph, node: Node) -> str | None:
    """The conv or linear `node` directly follows (through BN, activations and a residual add) and whose output only it
    reads, else None."""
    seen = 0
    nodes, user_count = graph.nodes, graph.user_count
    while node.inputs and seen < TAIL_DEPTH:
        if node.op != "Add":
            src = node.inputs[0]
            if ":" in src:
                src = parse_ref(src)[0]
        else:
            src = _main_input(graph, node)[0]
        producer = nodes[src]
        if user_count(src) != 1:
            return None
        if producer.op in FUSING_HEADS:
            return src
        if producer.op not in TAIL_OPS:
            return None
        node, seen = producer, seen + 1
    return None


def dependents(graph: Graph, name: str) -> set[str]:
    """The nodes whose family can change when the consumers or the inputs of `name` change: those whose fused-tail
    walk passes through it (its consumers, and theirs through normalization, activations and adds, TAIL_DEPTH deep)."""
    out: set[str] = set()
    frontier = [name]
    for _ in range(TAIL_DEPTH):
        reached = []
        for src in frontier:
            for user, _ in graph.users(src):
                if user not in out:
                    out.add(user)
                    if graph.nodes[user].op in TAIL_OPS:
                        reached.append(user)
        frontier = reached
    return out


def _main_input(graph: Graph, node: Node) -> tuple[str, int]:
    """The input of an Add that only it reads (the branch a runtime fuses the add into), else its first."""
    refs = [parse_ref(r) for r in node.inputs]
    single = [r for r in refs if graph.user_count(r[0]) == 1]
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
            return "conv_depthwise" if max(kh, kw) <= 3 else "conv_depthwise_large"
        if groups > 1:
            return "conv_grouped_pointwise" if kh * kw == 1 else "conv_grouped"
        if kh * kw == 1:
            return "conv_pointwise"
        return "conv_dense" if max(kh, kw) <= 3 else "conv_large"
    if op in ("ConvTranspose2d", "DeformConv2d", "Linear"):
        return {"ConvTranspose2d": "conv_transpose", "DeformConv2d": "conv_deform", "Linear": "linear"}[op]
    kind = TAIL_KIND.get(op)
    if kind is not None:
        if fused(graph, node):
            return f"{kind}_fused"
        return "activation_exp" if op in EXP_ACTIVATIONS else kind
    if op in ("GlobalAvgPool", "GlobalMaxPool", "AdaptiveAvgPool2d"):
        return "global_pool"
    if op in ("MaxPool2d", "AvgPool2d"):
        return "pool"
    if op in ("Concat", "ChannelShuffle"):
        return {"Concat": "concat", "ChannelShuffle": "shuffle"}[op]
    return "memory"  # Upsample and the rest: bound by the bytes they move


def fused(graph: Graph, node: Node) -> bool:
    """Whether `node` runs fused into the conv or linear before it: all that `family` reads of a node besides its op,
    attributes and input shapes, so `node_ms` is a function of those, the batch and this."""
    return node.op in FUSABLE_TAILS and fused_head(graph, node) is not None


def features(graph: Graph, node: Node, ins: list, outs: list, batch: int) -> tuple[float, float, float]:
    """(GMACs, MB of activations moved: inputs and outputs, MB of weights) of one node at `batch`."""
    a = node.resolved
    macs = node.opdef.cost(a, ins, outs).macs * batch
    weights = sum(map(numel, node.opdef.params(a, ins).values()))
    moved = (sum(map(numel, ins)) + sum(map(numel, outs))) * batch
    return macs / 1e9, moved * BYTES_PER_ELEMENT / 1e6, weights * BYTES_PER_ELEMENT / 1e6


@dataclass
class LatencyTable:
    """A calibrated latency model: coefficients per family and the MACs-proportional baseline."""

    runtime: str
    provider: str
    threads: int
    machine: str
    families: dict[str, list[float]]  # family -> [a ms, b ms per GMAC, c ms per MB of activations, d ms per MB of weights]
    overhead_ms: float = 0.0  # per run, outside any node
    baseline_ms_per_gmac: float = 0.0
    meta: dict = field(default_factory=dict)
    _seen: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # memo of `features`, see `_features`

    def coefficients(self, name: str) -> list[float]:
        """[a, b, c, d] of a family; a fused tail the table does not list costs nothing (its time is its head's); another
        family the table lacks falls back to its nearest (`FALLBACK`), then to memory."""
        if name == "view" or (name.endswith("_fused") and name not in self.families):
            return [0.0, 0.0, 0.0, 0.0]
        found = self.families.get(name) or self.families.get(FALLBACK.get(name, "memory")) or self.families.get("memory")
        return found or [0.0, 0.0, 0.0, 0.0]

    def node_ms(self, graph: Graph, node: Node, ins: list, outs: list, batch: int) -> float:
        a, b, c, d = self.coefficients(family(graph, node, ins))
        gmacs, mb, weights_mb = self._features(graph, node, ins, outs, batch)
        return a + b * gmacs + c * mb + d * weights_mb

    def _features(self, graph: Graph, node: Node, ins: list, outs: list, batch: int) -> tuple[float, float, float]:
        """`features`, remembered by op, attributes, input shapes and batch, which decide it: a large design repeats a
        few blocks. Ops with JSON attributes are computed every time (their values are no reliable key)."""
        plain = _PLAIN_OPS.get(node.op)
        if plain is None:
            plain = _PLAIN_OPS[node.op] = all(a.kind != "json" for a in node.opdef.attrs)
        if not plain:
            return features(graph, node, ins, outs, batch)
        key = (node.op, *node.resolved.values(), *ins, batch)
        found = self._seen.get(key)
        if found is None:
            if len(self._seen) >= FEATURES_MEMO:
                self._seen.clear()
            found = self._seen[key] = features(graph, node, ins, outs, batch)
        return found

    def to_dict(self) -> dict:
        return {"format": FORMAT, "runtime": self.runtime, "provider": self.provider, "threads": self.threads, "machine": self.machine,
                "families": self.families, "overhead_ms": self.overhead_ms, "baseline_ms_per_gmac": self.baseline_ms_per_gmac, "meta": self.meta}

    @classmethod
    def from_dict(cls, data, where: str) -> LatencyTable:
        """A table from its JSON form; one DesignError line naming the bad field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DesignError(f"not a latency model of format {FORMAT} (calibrate again: `convstudio profile --calibrate`)", where)
        try:
            families = {str(k): [float(x) for x in v] for k, v in data["families"].items()}
            if any(len(v) != 4 or min(v) < 0 or not all(map(math.isfinite, v)) for v in families.values()):  # NaN or inf predicts nothing
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
    return per_node, math.fsum(per_node.values()) + table.overhead_ms  # the exact node sum, as the incremental analyzer keeps it
