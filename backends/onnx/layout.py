"""Layout ops: reshape-like ops, transposes, channel splits and zero pads.

Rules:
- a reshape keeping the batch first becomes nothing (same shape) or Flatten (one dimension per sample);
- a Reshape of the whole batch into one vector waits for a Gather of consecutive positions giving the
  samples back (torch's as_strided), and the pair is that reshape per sample;
- Reshape to (g, C/g, H, W), Transpose (0, 2, 1, 3, 4), Reshape back to (C, H, W) is ChannelShuffle(g);
  the first two wait (deferred) for the third and become Opaque if it never comes;
- Split, one-range Slice and SplitToSequence (read by SequenceAt) along channels are ChannelSplit;
- a zero Pad on H and W waits for a Conv or count-including AvgPool to absorb it;
- any other Transpose keeping the batch first is Permute; Transpose to channels-last, LayerNorm over
  the last dimension, Transpose back (each read only by the next) is one channels-first LayerNorm.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from convstudio.backends.onnx.fold import attrs_of
from convstudio.backends.onnx.importer_core import FLOAT, Importer, Unmappable, Value, base_name
from convstudio.backends.onnx.map_common import first_input, one_value, text
from convstudio.ir.graph import make_ref


def _reshaped(imp: Importer, node: onnx.NodeProto, x: Value, out_shapes: list[tuple]) -> list[Value]:
    """A reshape of x to full shapes `out_shapes` (one per batch size tried)."""
    for b, shape in zip(imp.batches, out_shapes):
        if len(shape) < 1 or shape[0] != b:
            raise Unmappable(f"the result {list(shape)} does not keep the batch first")
    per_sample = tuple(out_shapes[0][1:])
    if any(tuple(s[1:]) != per_sample for s in out_shapes):
        raise Unmappable("the per-sample shape changes with the batch size")
    if per_sample == x.shape:
        return [Value(FLOAT, ref=x.ref, shape=x.shape)]
    if len(per_sample) == 1 and len(x.shape) > 1:
        return [imp.out(imp.add("Flatten", [x.ref], base_name(node)))]
    if x.deferred is not None and "shuffled" in x.info:
        src, groups = x.info["shuffled"][0], x.info["groups"]
        return [imp.out(imp.add("ChannelShuffle", [imp.runtime(src).ref], base_name(node), {"groups": groups}))]
    if len(x.shape) == 3 and len(per_sample) == 4 and per_sample[0] * per_sample[1] == x.shape[0] and per_sample[2:] == x.shape[1:]:
        return [
            Value(
                FLOAT,
                shape=per_sample,
                deferred=node,
                info={"view_of": node.input[0], "groups": per_sample[0], "reason": "Reshape not part of a channel shuffle"},
            )
        ]
    raise Unmappable(f"reshape {list(x.shape)} -> {list(per_sample)} is not a flatten or a channel shuffle")


def _full(imp: Importer, v: Value) -> list[tuple]:
    return [(b, *v.shape) for b in imp.batches]


def reshape(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = imp.peek(node.input[0])
    if x.deferred is not None and "shuffled" not in x.info:
        x = imp.runtime(node.input[0])
    a = attrs_of(node)
    if imp.opset < 5:
        targets = [np.array(a["shape"])] * len(imp.batches)
    else:
        v = imp.value(node.input[1])
        if not v.is_const:
            raise Unmappable("the target shape is computed at run time")
        targets = [v.consts[min(k, len(v.consts) - 1)] for k in range(len(imp.batches))]
    outs = []
    for full, target in zip(_full(imp, x), targets):
        target = [int(t) for t in np.asarray(target).reshape(-1)]
        resolved = [full[i] if (t == 0 and not a.get("allowzero", 0) and i < len(full)) else t for i, t in enumerate(target)]
        try:
            outs.append(_reshape_shape(full, resolved))
        except ValueError:
            raise Unmappable(f"cannot reshape {list(full)} to {target}") from None
    if x.deferred is not None and tuple(outs[0][1:]) != x.info["shuffled"][1]:
        x = imp.runtime(node.input[0])
    if all(o == (b * math.prod(x.shape),) for o, b in zip(outs, imp.batches)):
        # the whole batch as one vector (dynamo's as_strided): waits for a Gather that takes the samples back
        info = {"flat_of": node.input[0], "reason": "Reshape merging the batch into one dimension"}
        return [Value(FLOAT, shape=x.shape, deferred=node, info=info)]
    return _reshaped(imp, node, x, outs)


def gather(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """Gather of consecutive positions from a batch-merged vector: a reshape of the vector's source, sample by sample."""
    flat = imp.peek(node.input[0])
    if flat.deferred is None or "flat_of" not in flat.info or int(attrs_of(node).get("axis", 0)) != 0:
        raise Unmappable("Gather other than the samples of a batch-merged vector")
    indices = imp.value(node.input[1])
    if not indices.is_const or np.issubdtype(indices.consts[0].dtype, np.floating):
        raise Unmappable("Gather indices are computed at run time")
    x = imp.runtime(flat.info["flat_of"])
    outs = []
    for k, b in enumerate(imp.batches):
        idx = np.asarray(indices.consts[min(k, len(indices.consts) - 1)])
        if idx.ndim < 1 or idx.shape[0] != b or idx.size != b * math.prod(x.shape) or not np.array_equal(idx.reshape(-1), np.arange(idx.size)):
            raise Unmappable("Gather indices do not take the samples back in order")
        outs.append(idx.shape)
    return _reshaped(imp, node, x, outs)


def _reshape_shape(full: tuple, resolved: list[int]) -> tuple:
    total = math.prod(full)
    known = math.prod(d for d in resolved if d != -1)
    if resolved.count(-1) > 1 or any(d < -1 for d in resolved) or known == 0 or total % known:
        raise ValueError("bad reshape")
    out = tuple(total // known if d == -1 else d for d in resolved)
    if math.prod(out) != total:
        raise ValueError("bad reshape")
    return out


def flatten(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    rank = len(x.shape) + 1
    axis = int(attrs_of(node).get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    outs = [(math.prod(f[:axis]), math.prod(f[axis:])) for f in _full(imp, x)]
    return _reshaped(imp, node, x, outs)


def squeeze_unsqueeze(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    a = attrs_of(node)
    axes = (
        list(a.get("axes", []))
        if imp.opset < 13
        else [int(v) for v in (imp.const_or_none(node, 1) if len(node.input) > 1 and node.input[1] else [])]
    )
    outs = []
    for full in _full(imp, x):
        if node.op_type == "Squeeze":
            rank = len(full)
            drop = {ax % rank for ax in axes} if axes else {i for i, d in enumerate(full) if d == 1}
            if any(full[i] != 1 for i in drop):
                raise Unmappable("squeezing a dimension that is not 1")
            outs.append(tuple(d for i, d in enumerate(full) if i not in drop))
        else:
            rank = len(full) + len(axes)
            shape = list(full)
            for ax in sorted(ax % rank for ax in axes):
                shape.insert(ax, 1)
            outs.append(tuple(shape))
    return _reshaped(imp, node, x, outs)


def transpose(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = imp.peek(node.input[0])
    perm = [int(p) for p in attrs_of(node).get("perm", [])]
    if x.deferred is not None and "groups" in x.info and perm == [0, 2, 1, 3, 4] and imp.uses[node.input[0]] == 1:
        g, c_per_g, h, w = x.shape
        src = x.info["view_of"]
        original = imp.peek(src).shape
        return [
            Value(
                FLOAT,
                shape=(c_per_g, g, h, w),
                deferred=node,
                info={"shuffled": (src, original), "groups": g, "reason": "Transpose not part of a channel shuffle"},
            )
        ]
    x = imp.runtime(node.input[0])
    rank = len(x.shape) + 1
    if perm == list(range(rank)):
        return [Value(FLOAT, ref=x.ref, shape=x.shape)]
    if sorted(perm) != list(range(rank)) or perm[0] != 0:
        raise Unmappable(f"transpose {perm} moves the batch")
    folded = _channels_first_layer_norm(imp, x, perm)
    if folded:
        return folded
    name = imp.add("Permute", [x.ref], base_name(node), {"dims": perm})
    return [imp.out(name, permute=name, source=node.output[0])]


def _channels_first_layer_norm(imp: Importer, x: Value, perm: list[int]) -> list[Value] | None:
    """Permute to channels-last -> LayerNorm(channels_last) -> this transpose back: one LayerNorm over dim 1."""
    rank = len(perm)
    ln_name, before = x.info.get("layer_norm"), x.info.get("after_permute")
    if perm != [0, rank - 1, *range(1, rank - 1)] or not before or imp.uses[x.info["source"]] != 1 or imp.uses[before[1]] != 1:
        return None
    permute = imp.graph.nodes[before[0]]
    if list(permute.attrs["dims"]) != [0, *range(2, rank), 1]:
        return None
    ln = imp.graph.nodes[ln_name]
    attrs = {k: v for k, v in ln.attrs.items() if k != "channels_last"}
    source, params = permute.inputs[0], ln.params
    imp.graph.erase(ln_name)
    imp.graph.erase(permute.name)
    imp.taken.discard(ln_name)
    return [imp.out(imp.add("LayerNorm", [source], ln_name, attrs, params))]


def _channel_split_input(imp: Importer, node: onnx.NodeProto) -> tuple[Value, dict]:
    """The computed input and the attributes of a split along channels (axis 1), else Unmappable."""
    x = first_input(imp, node)
    a = attrs_of(node)
    rank = len(x.shape) + 1
    axis = int(a.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        raise Unmappable(f"{node.op_type} along a dimension other than channels")
    return x, a


def _split_attrs(sizes, channels: int) -> dict:
    """ChannelSplit attributes for part sizes that must cover the channels exactly."""
    sizes = [int(v) for v in sizes]
    if not sizes or any(v < 1 for v in sizes) or sum(sizes) != channels:
        raise Unmappable(f"split sizes {sizes} do not fit {channels} channels")
    return {"sections": sizes} if len(set(sizes)) > 1 else {"parts": len(sizes)}


def split(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x, a = _channel_split_input(imp, node)
    sizes = imp.const_or_none(node, 1) if imp.opset >= 13 else a.get("split")
    c = x.shape[0]
    n = len(node.output)
    if sizes is None or len(sizes) == 0:
        part = -(-c // n)
        sizes = [min(part, c - k * part) for k in range(n)]
    name = imp.add("ChannelSplit", [x.ref], base_name(node), _split_attrs(sizes, c))
    return [imp.out(make_ref(name, k)) for k, o in enumerate(node.output) if o]


def split_to_sequence(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """A channel split into a sequence: deferred until SequenceAt reads its parts."""
    x, a = _channel_split_input(imp, node)
    c, sizes = x.shape[0], imp.const_or_none(node, 1)
    if sizes is None:
        if not a.get("keepdims", 1):
            raise Unmappable("SplitToSequence with keepdims=0 drops the channel dimension")
        sizes = [1] * c
    elif np.ndim(sizes) == 0:
        part = int(sizes)
        sizes = [part] * (c // part) + ([c % part] if c % part else []) if part > 0 else []
    sizes = np.reshape(sizes, -1)
    info = {"sequence": (x.ref, _split_attrs(sizes, c), len(sizes)), "reason": "sequence not read by SequenceAt alone"}
    return [Value(FLOAT, shape=x.shape, deferred=node, info=info)]


def sequence_at(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    """Part k of a channel split sequence: one shared ChannelSplit node, its output k."""
    seq = imp.peek(node.input[0])
    if seq.deferred is None or "sequence" not in seq.info:
        raise Unmappable("the sequence is not a channel split")
    source, attrs, parts = seq.info["sequence"]
    index = int(one_value(imp.const(node.input[1])))
    index = index + parts if index < 0 else index
    if not 0 <= index < parts:
        raise Unmappable(f"position {index} is outside the {parts} parts")
    name = seq.info.get("split_node")
    if name is None:
        name = seq.info["split_node"] = imp.add("ChannelSplit", [source], base_name(node), attrs)
    return [imp.out(make_ref(name, index))]


def slice_(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node)
    a = attrs_of(node)
    if imp.opset >= 10:
        starts, ends = imp.const(node.input[1]), imp.const(node.input[2])
        axes = imp.const_or_none(node, 3)
        steps = imp.const_or_none(node, 4)
    else:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    full = (imp.batches[0], *x.shape)
    axes = list(range(len(starts))) if axes is None else [int(v) % len(full) for v in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    kept = None
    for s, e, ax, st in zip(starts, ends, axes, steps):
        r = range(full[ax])[slice(int(s), int(e), st)]
        if len(r) == full[ax] and st == 1:
            continue
        if ax != 1 or st != 1 or kept is not None or len(r) == 0:
            raise Unmappable("Slice other than one contiguous channel range")
        kept = (r.start, r.stop)
    if kept is None:
        return [Value(FLOAT, ref=x.ref, shape=x.shape)]
    c = x.shape[0]
    sections = [s for s in (kept[0], kept[1] - kept[0], c - kept[1]) if s > 0]
    index = 1 if kept[0] > 0 else 0
    name = imp.add("ChannelSplit", [x.ref], base_name(node), {"sections": sections})
    return [imp.out(make_ref(name, index))]


def pad(imp: Importer, node: onnx.NodeProto) -> list[Value]:
    x = first_input(imp, node, 3)
    a = attrs_of(node)
    mode = text(a.get("mode", "constant"))
    if imp.opset < 11:
        pads, value = list(a.get("pads", a.get("paddings", []))), float(a.get("value", 0.0))
    else:
        pads = [int(p) for p in imp.const(node.input[1])]
        cv = imp.const_or_none(node, 2)
        value = float(one_value(cv)) if cv is not None and cv.size else 0.0
        if len(node.input) > 3 and node.input[3]:
            raise Unmappable("Pad with axes")
    if mode != "constant" or value != 0.0:
        raise Unmappable(f"{mode} padding with value {value}")
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or any(p < 0 for p in pads):
        raise Unmappable(f"pads {pads} touch more than H and W")
    t, left, b, r = pads[2], pads[3], pads[6], pads[7]
    c, h, w = x.shape
    shape = (c, h + t + b, w + left + r)
    return [
        Value(
            FLOAT,
            shape=shape,
            deferred=node,
            info={"pad": (node.input[0], (t, left, b, r)), "reason": "zero Pad that no convolution or average pool absorbs exactly"},
        )
    ]


LAYOUT_MAPPERS = {
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze_unsqueeze,
    "Unsqueeze": squeeze_unsqueeze,
    "Transpose": transpose,
    "Split": split,
    "SplitToSequence": split_to_sequence,
    "SequenceAt": sequence_at,
    "Slice": slice_,
    "Gather": gather,
    "Pad": pad,
}
