"""Adaptive average pooling written out by exporters: linear regions recognised by what they compute.

torch's dynamo exporter writes AdaptiveAvgPool2d with windows of uneven size as Transpose, GatherND of
the windows, Where masks and an unrolled sum of Gathers divided by the window sizes (or a ReduceMean
when the windows are equal); our own export writes Slice, ReduceMean and Concat per axis. Rules:
- a data-movement or linear node (LINEAR) the mapping table declines, reading one computed 4-d value x
  and constants, opens a region of x; a LINEAR node reading region values of one x (or x itself) and
  constants extends it. Where needs a constant condition and zeros as its constant branch, Div a
  constant divisor of more than one value (x / sqrt(2) is left to open a GELU), Add, Sub, Sum and
  Concat region values only: so a region is a linear map of x;
- region values are deferred: every value carries that map applied to a fixed random probe of x's
  shape at the first batch size tried, evaluated node by node by `fold` (float32, at most PROBE_LIMIT
  elements per value); a consumer outside the region has the nodes mapped by the table, as without
  this module (the importer's `materialize`);
- a region value of shape (N, C, oh, ow) whose probe equals torch's adaptive average pooling of the
  probe (windows [floor(i·H/oh), ceil((i+1)·H/oh))) is AdaptiveAvgPool2d(oh, ow) of x; one equal to
  the probe itself is x. A linear map equal to another on a random input is that map;
- a recognised value stays in its region, so a larger region containing it (our export's pool over H
  then over W; a window that is the whole height) is recognised as one pool; after the walk, pools
  that nothing reads are dropped (`drop_unread_pools`).
"""

from __future__ import annotations

import numpy as np
import onnx

from convstudio.backends.onnx import fold
from convstudio.backends.onnx.importer_core import FLOAT, Importer, Value, base_name
from convstudio.backends.onnx.ops import adaptive_bounds

LINEAR = frozenset({
    "Transpose", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "GatherND", "GatherElements",
    "Where", "Add", "Sub", "Sum", "Concat", "Div", "Neg", "ReduceSum", "ReduceMean",
})
ALL_REGION = frozenset({"Add", "Sub", "Sum", "Concat"})
PROBE_LIMIT = 2**24
PROBE_SEED = 20240611
RTOL, ATOL = 1e-4, 1e-5


def _const(imp: Importer, name: str) -> np.ndarray | None:
    """A batch-independent constant input, else None."""
    v = imp.values[name]
    return v.consts[0] if v.is_const and len(v.consts) == 1 else None


def _source_probe(imp: Importer, name: str) -> tuple[str, np.ndarray] | None:
    """(IR reference, probe) of a computed 4-d float value (one probe per IR value, however many ONNX names it has), else None."""
    v = imp.values[name]
    if v.is_const or v.deferred is not None or v.elem != FLOAT or v.shape is None or len(v.shape) != 3:
        return None
    probes = imp.region_state.setdefault("probes", {})
    if v.ref not in probes:
        shape = (imp.batches[0], *v.shape)
        if np.prod(shape, dtype=np.float64) > PROBE_LIMIT:
            return None
        probes[v.ref] = np.random.default_rng((PROBE_SEED, len(probes))).standard_normal(shape).astype(np.float32)
    return v.ref, probes[v.ref]


def _region_input(imp: Importer, name: str) -> tuple[str, np.ndarray] | None:
    """(source reference, probe) of a region value, or of a value that can be a region's source."""
    v = imp.values[name]
    return v.info["region"] if "region" in v.info else _source_probe(imp, name)


def _inputs(imp: Importer, node: onnx.NodeProto, may_open: bool) -> tuple[str, list] | None:
    """(source, arrays for evaluation) when `node` is a linear function of one region's values and constants."""
    present = [(k, i) for k, i in enumerate(node.input) if i]
    region_at = {k for k, i in present if not imp.values[i].is_const}
    if not region_at or (not may_open and not any("region" in imp.values[node.input[k]].info for k in region_at)):
        return None
    if node.op_type in ALL_REGION:
        allowed = region_at == {k for k, _ in present}
    elif node.op_type == "Where":
        allowed = 0 not in region_at and len(present) == 3
    else:
        allowed = region_at == {0}
    if not allowed:
        return None
    source, arrays = None, [None] * len(node.input)
    for k, name in present:
        if k in region_at:
            found = _region_input(imp, name)
            if found is None or found[0] != (source or found[0]):
                return None  # not a region value, or one of another region
            source, arrays[k] = found
        else:
            arrays[k] = _const(imp, name)
            if arrays[k] is None:
                return None
    if node.op_type == "Where" and any(k not in region_at and np.any(arrays[k]) for k in (1, 2)):
        return None  # a nonzero constant branch is not linear
    if node.op_type == "Div" and (arrays[1].size < 2 or not np.issubdtype(arrays[1].dtype, np.floating)):
        return None
    return source, arrays


def adaptive_pool(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """torch's adaptive average pooling of an (N, C, H, W) array, in float64 (window sums from an integral image)."""
    h, w = x.shape[2:]
    total = np.zeros((*x.shape[:2], h + 1, w + 1))
    total[:, :, 1:, 1:] = x.astype(np.float64).cumsum(2).cumsum(3)
    (hb, he), (wb, we) = (np.array(b) for b in adaptive_bounds(h, out_hw[0])), (np.array(b) for b in adaptive_bounds(w, out_hw[1]))
    sums = total[:, :, he][:, :, :, we] - total[:, :, hb][:, :, :, we] - total[:, :, he][:, :, :, wb] + total[:, :, hb][:, :, :, wb]
    return sums / np.outer(he - hb, we - wb)


def _recognised(imp: Importer, node: onnx.NodeProto, source: str, probe: np.ndarray) -> Value | None:
    """x itself or AdaptiveAvgPool2d of x, still in the region, when the region value computes that, else None."""
    base = imp.region_state["probes"][source]
    if probe.ndim != 4 or probe.shape[:2] != base.shape[:2]:
        return None
    out_hw = tuple(int(d) for d in probe.shape[2:])
    if not np.allclose(probe, adaptive_pool(base, out_hw), rtol=RTOL, atol=ATOL):
        return None
    if probe.shape == base.shape:
        return Value(FLOAT, ref=source, shape=tuple(base.shape[1:]), info={"region": (source, probe)})
    name = imp.add("AdaptiveAvgPool2d", [source], base_name(node), {"output_size": list(out_hw)})
    imp.region_state.setdefault("pools", []).append(name)
    return imp.out(name, region=(source, probe))


def linear_region(imp: Importer, node: onnx.NodeProto, reason: str | None) -> list[Value] | None:
    """Extend a region (reason None: before the mapping table) or also open one (reason: why the table declined the node).

    Returns the node's values (deferred, or recognised), or None to leave the node to the table or to Opaque.
    """
    if node.op_type not in LINEAR or node.domain not in ("", "ai.onnx") or len([o for o in node.output if o]) != 1:
        return None
    found = _inputs(imp, node, may_open=reason is not None)
    if found is None:
        return None
    source, arrays = found
    try:
        (out,) = fold.evaluate(node, arrays, imp.opset)
    except fold.CannotFold:
        return None
    if out.dtype != np.float32 or out.size > PROBE_LIMIT or out.ndim < 1:
        return None
    recognised = _recognised(imp, node, source, out)
    if recognised is not None:
        return [recognised]
    return [Value(FLOAT, shape=tuple(out.shape[1:]), deferred=node, info={"region": (source, out)})]


def drop_unread_pools(imp: Importer) -> None:
    """Erase the recognised pools that nothing reads (a larger region containing them was read instead)."""
    g = imp.graph
    for name in imp.region_state.get("pools", []):
        if not g.users(name):
            g.erase(name)
    for entry in imp.report["mapped"]:
        entry["ir"] = [n for n in entry["ir"] if n in g]
    imp.report["folded"] += [e for e in imp.report["mapped"] if not e["ir"]]
    imp.report["mapped"] = [e for e in imp.report["mapped"] if e["ir"]]
