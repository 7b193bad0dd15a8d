"""Memory budget: the bytes running or training a design needs, checked before anything is allocated.

Parameters and buffers (BatchNorm statistics) are float32 and count once per sharing group.
- inference: parameters + the peak of live activations over the schedule (`ir.cost`'s peak memory).
- training: parameters + their gradients + the optimizer's state per parameter, every activation kept
  for the backward pass, and the gradients flowing back through the largest one (twice its size).
These are the tensors the runtimes allocate; their workspaces and the process itself come on top,
which is why the default limit is at most half of the physical memory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from convstudio.ir.cost import BYTES_PER_ELEMENT, analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.ops.registry import numel
from convstudio.ir.shapes import input_shapes_of, param_shapes_of

GiB = 2**30
# 8 GiB runs every example and template at the batch sizes the verbs use, and is the same on every machine
# with 16 GiB or more, so a design that passes on one passes on the next; smaller machines get half their memory.
DEFAULT_CAP = 8 * GiB
HINT = "raise it with --max-memory"

# optimizer -> state tensors kept per parameter (the most it keeps: sgd's momentum buffer, rmsprop's square average and momentum)
OPTIMIZER_STATES = {"sgd": 1, "adagrad": 1, "adadelta": 2, "rmsprop": 2, "adam": 2, "adamw": 2}

UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
    "t": 2**40, "tib": 2**40, "tb": 10**12,
}
SIZE_RE = re.compile(r" *(\d{1,20}(?:\.\d{1,20})?) *([a-z]{0,3}) *")


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run needs, in bytes, and the single tensor or layer that needs the most."""

    batch: int
    params_bytes: int  # parameters and buffers
    activation_bytes: int  # peak live activations (inference); kept activations and their gradients (training)
    training_bytes: int  # gradients and optimizer state of the parameters; 0 for inference
    largest: str  # what needs the most, e.g. "node 'conv1'"
    largest_kind: str  # "parameters" or "activations"
    largest_bytes: int
    training: bool = False

    @property
    def total(self) -> int:
        return self.params_bytes + self.activation_bytes + self.training_bytes


def size_text(n: int) -> str:
    """1.5 * 2**30 -> '1.5 GiB', 8 * 2**30 -> '8 GiB' (one decimal, none when it is 0)."""
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{f'{n / div:.1f}'.removesuffix('.0')} {suffix}"
    return f"{n} B"


def parse_size(text: str, where: str = "--max-memory") -> int:
    """'512M', '16G', '2GiB', '1.5g', '4000000000' -> bytes. K, M, G, T and KiB... are powers of 1024; KB, MB, GB, TB of 1000."""
    match = SIZE_RE.fullmatch(text.lower()) if isinstance(text, str) else None
    if match is None or match.group(2) not in UNITS:
        raise DesignError(f"size must look like 512M, 16G, 2GiB or a number of bytes, got {text[:40]!r}", where)
    size = int(float(match.group(1)) * UNITS[match.group(2)]) if "." in match.group(1) else int(match.group(1)) * UNITS[match.group(2)]
    if size < 1:
        raise DesignError(f"size must be at least 1 byte, got {text[:40]!r}", where)
    return size


def physical_memory() -> int | None:
    """Bytes of physical memory, when the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_limit() -> int:
    """8 GiB, or half the physical memory on a machine with less than 16 GiB."""
    physical = physical_memory()
    return min(DEFAULT_CAP, physical // 2) if physical else DEFAULT_CAP


def estimate_memory(graph: Graph, batch: int = 1, training: bool = False, optimizer: str = "adam") -> MemoryEstimate:
    """Bytes to run (or train, with `optimizer`) `graph` at `batch`; shape errors are raised as the strict analysis raises them."""
    report = analyze(graph, "flops", batch, strict=True)
    shapes = {name: node.meta.get("shapes") for name, node in graph.nodes.items()}
    owners = {members[0] for members in graph.share_groups().values()}
    largest = ("", "activations", 0)
    params = learnable = 0
    biggest_activation = 0
    for cost in report.nodes:
        node = graph.nodes[cost.name]
        learnable += cost.params * BYTES_PER_ELEMENT
        owned = 0
        if not node.share or cost.name in owners:  # a sharing group's parameters belong to its first node
            ins = input_shapes_of(graph, node, shapes)
            owned = sum(numel(s) for s in param_shapes_of(node, ins).values()) * BYTES_PER_ELEMENT if ins is not None else 0
        params += owned
        biggest_activation = max(biggest_activation, cost.activation_bytes)
        for kind, size in (("parameters", owned), ("activations", cost.activation_bytes)):
            if size > largest[2]:
                largest = (f"node '{cost.name}'", kind, size)
    if training:
        if optimizer not in OPTIMIZER_STATES:
            raise DesignError(f"unknown optimizer '{optimizer}' (known: {', '.join(OPTIMIZER_STATES)})", "training.optimizer.name")
        activations = report.total.activation_bytes + 2 * biggest_activation
        extra = learnable * (1 + OPTIMIZER_STATES[optimizer])
    else:
        activations, extra = report.total.peak_activation_bytes, 0
    return MemoryEstimate(batch, params, activations, extra, largest[0], largest[1], largest[2], training)


def check_estimate(estimate: MemoryEstimate, limit: int | None = None, where: str = "", hint: str = HINT,
                   subject: str = "the design") -> MemoryEstimate:
    """Raise a DesignError naming the total and the largest node when `estimate` needs more than `limit` (default: `default_limit()`)."""
    limit = default_limit() if limit is None else limit
    if estimate.total <= limit:
        return estimate
    doing = f" to train at batch {estimate.batch}" if estimate.training else ""
    at_batch = f" at batch {estimate.batch}" if estimate.largest_kind == "activations" else ""
    biggest = f" ({estimate.largest} {estimate.largest_kind} {size_text(estimate.largest_bytes)}{at_batch})" if estimate.largest else ""
    tail = f" ({hint})" if hint else ""
    raise DesignError(f"{subject} needs {size_text(estimate.total)}{doing}{biggest}, above the {size_text(limit)} limit{tail}", where)


def check_memory(graph: Graph, batch: int = 1, limit: int | None = None, training: bool = False, optimizer: str = "adam",
                 where: str = "", hint: str = HINT) -> MemoryEstimate:
    """Estimate what running (or training) `graph` at `batch` needs and refuse it above `limit`; returns the estimate."""
    return check_estimate(estimate_memory(graph, batch, training, optimizer), limit, where, hint)
