"""The importer's state and its walk over the ONNX nodes: `Importer`, `Value`, `Unmappable`.

The mapping table (`backends.onnx.mapping`) is given to the Importer, so this module imports none of
the mapping modules. Rules, applied to each ONNX node in order:
- a deterministic node whose inputs are all constants is folded (Shape of a value with a static
  per-sample shape counts as constant; a symbolic batch is tried at two sizes to tell which folded
  values depend on it), and so is CastLike of a constant to a computed value's element type;
- folded values remember whether the graph computed them (a conv bias of computed zeros, as
  torch's dynamo exporter writes for bias-free convs, is no bias) or the file stores them;
- a node the mapping table covers becomes IR nodes with its weights;
  patterns across nodes (Pad into Conv/AvgPool, MatMul+Add as Linear, Mul(x, Sigmoid(x)) as SiLU,
  Reshape-Transpose-Reshape as ChannelShuffle, with an Identity in between passing the open
  pattern on) are resolved as the later node is mapped;
- a node reading values of a linear region, and a linear node the table declines, go to the region
  function first (`backends.onnx.adaptive`: adaptive average pooling spelled out), which defers them
  or recognises what the region computes;
- anything else becomes an `Opaque` node keeping its ONNX output shapes (from shape inference, else
  as the file declares them: nothing is run to learn a shape); its constant inputs become Opaque
  Constant nodes whose finite float32 values are parameters; a Resize's sizes read from its input's
  shape (batch first) become sizes of H and W with axes (opset 18), so it stays a design node;
- initializers read by several nodes of one op and attributes become one share group;
- every parameter a mapped node gets has the shape its op needs and finite values, else the node
  stays Opaque; a conv bias of the wrong size is invalid ONNX and refused.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convstudio.backends.onnx import fold
from convstudio.backends.onnx.opaque import constant_proto, declared_types, encode_proto, output_types
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, make_ref, parse_ref, verify
from convstudio.ir.ops.registry import MAX_NUMEL
from convstudio.ir.shapes import infer_node, param_shapes_of

FLOAT = onnx.TensorProto.FLOAT
SYMBOLIC_BATCHES = (2, 3)


class Unmappable(Exception):
    """The mapping table declines a node; the message says why (the node becomes Opaque)."""


class InvalidModel(DesignError):
    """A node breaks the ONNX specification in a way no runtime runs (a conv bias of the wrong size): the import is refused."""


@dataclass
class Value:
    """What the importer knows about one ONNX value."""

    elem: int
    ref: str | None = None
    shape: tuple | None = None
    consts: tuple | None = None
    deferred: onnx.NodeProto | None = None
    info: dict = field(default_factory=dict)

    @property
    def is_const(self) -> bool:
        return self.consts is not None


def _root(array):
    """The object an array's memory belongs to (an initializer's array or buffer for views of it)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


def sanitize(text: str) -> str:
    """An IR-safe name for an ONNX name: invalid characters become '_', never starting with a digit."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "node"
    return name if re.match(r"[A-Za-z_]", name) else f"n_{name}"


def base_name(node: onnx.NodeProto) -> str:
    """The ONNX node's name, or its first output's, as a base for IR names."""
    return node.name or (node.output[0] if node.output else node.op_type)


class Importer:
    """State of one import: the ONNX model, the IR graph being built, and the value table."""

    def __init__(self, model: onnx.ModelProto, where: str, name: str | None, mappers: dict, region=None):
        self.model = model
        self.mappers = mappers
        self.region = region  # (importer, node, reason or None) -> values or None: patterns recognised by what they compute
        self.region_state: dict = {}  # what the region function keeps during one import
        self.where = where
        self.opsets = {(o.domain or ""): o.version for o in model.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.graph = Graph(sanitize(name or model.graph.name or "imported"))
        self.values: dict[str, Value] = {}
        self.shapes: dict[str, list] = {}
        self.uses: Counter = Counter()
        self.taken: set[str] = set()
        self.report = {"mapped": [], "folded": [], "opaque": []}
        self._added: list[str] = []
        self._constant_nodes: dict[tuple, str] = {}
        self.batches: tuple[int, ...] = SYMBOLIC_BATCHES
        self._output_names: list[str] = []
        self._declared: dict | None = None
        self._stored: dict[int, str] = {}
        self._param_sources: dict[str, dict[str, tuple]] = {}

    # ---- names -------------------------------------------------------------------------
    def fresh(self, text: str) -> str:
        base = sanitize(text)
        name, i = base, 1
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name

    # ---- value access for the mapping table --------------------------------------------
    def value(self, name: str) -> Value:
        if name not in self.values:
            raise DesignError(f"value '{name}' is used before it is produced (the graph is not in order or has a cycle)", self.where)
        return self.values[name]

    def const(self, name: str) -> np.ndarray:
        """A batch-independent constant input."""
        v = self.value(name)
        if not v.is_const:
            raise Unmappable(f"input '{name}' is not a constant")
        if len(v.consts) != 1:
            raise Unmappable(f"input '{name}' depends on the batch size")
        return v.consts[0]

    def const_or_none(self, node: onnx.NodeProto, index: int):
        if len(node.input) > index and node.input[index]:
            return self.const(node.input[index])
        return None

    def runtime(self, name: str, float_only: bool = True) -> Value:
        """A computed (non-constant) input, materializing a deferred pattern if needed."""
        v = self.value(name)
        if v.is_const:
            raise Unmappable(f"input '{name}' is a constant")
        if v.deferred is not None:
            self.materialize(name)
            v = self.values[name]
        if float_only and v.elem != FLOAT:
            raise Unmappable(f"input '{name}' has element type {onnx.TensorProto.DataType.Name(v.elem)}")
        return v

    def peek(self, name: str) -> Value:
        """A computed input as it is (possibly deferred), for pattern matching."""
        v = self.value(name)
        if v.is_const:
            raise Unmappable(f"input '{name}' is a constant")
        return v

    def add(self, op: str, inputs: list[str], base: str, attrs: dict | None = None, params: dict | None = None) -> str:
        """Add one IR node and infer its shapes; returns its name."""
        name = self.fresh(base)
        for key, value in (params or {}).items():
            self.note_source(name, key, value)
        params = {k: np.array(v, dtype=np.float32, order="C") for k, v in (params or {}).items()}
        node = self.graph.add(op, inputs, name=name, attrs=attrs, params=params)
        self._added.append(name)
        ins = [self._shape_of_ref(r) for r in inputs]
        self.shapes[name] = infer_node(node, ins)
        needed = param_shapes_of(node, ins)
        for key in sorted(set(needed) | set(params)):
            # a design that import writes must validate: every parameter has the shape its op needs
            if key not in params or key not in needed or params[key].shape != needed[key]:
                have = list(params[key].shape) if key in params else "none"
                raise Unmappable(f"{op} parameter '{key}' would have shape {have}, the op needs {list(needed.get(key, ())) or 'none'}")
            if not np.isfinite(params[key]).all():
                raise Unmappable(f"{op} parameter '{key}' holds NaN or infinite values, which design weights may not")
        return name

    def note_source(self, name: str, key: str, value: np.ndarray) -> None:
        """Remember which initializer (if any) parameter `key` of IR node `name` is read from, for share groups."""
        self._param_sources.setdefault(name, {})[key] = (self._stored.get(id(_root(value))), np.shape(value))

    def out(self, ref: str, **info) -> Value:
        name, idx = parse_ref(ref)
        return Value(FLOAT, ref=ref, shape=tuple(self.shapes[name][idx]), info=info)

    # ---- the walk ----------------------------------------------------------------------
    def run(self) -> None:
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        for node in g.node:
            for name in node.input:
                if name:
                    self.uses[name] += 1
        for o in g.output:
            self.uses[o.name] += 1
        for t in g.initializer:
            self.values[t.name] = Value(t.data_type, consts=(self._array(t),))
            self._stored[id(_root(self.values[t.name].consts[0]))] = t.name
        self._inputs([vi for vi in g.input if vi.name not in inits])
        self._output_names = [self.fresh(o.name) for o in g.output]
        for node in g.node:
            self.node(node)
        self._outputs(g.output)
        for entry in list(self.report["mapped"]):
            entry["ir"] = [n for n in entry["ir"] if n in self.graph]
            if not entry["ir"]:
                self.report["mapped"].remove(entry)
                self.report["folded"].append(entry)
        self._share_stored_params()
        verify(self.graph)

    def _share_stored_params(self) -> None:
        """Nodes of one op and attributes whose parameters all come from the same initializers form a share group.

        Parameters that each repeat one value (ones, zeros) are not sharing: exporters merge equal constants.
        """
        groups: dict[tuple, list[str]] = {}
        for name, sources in self._param_sources.items():
            node = self.graph.nodes.get(name)
            if node is None or set(sources) != set(node.params) or not all(s for s, _ in sources.values()):
                continue
            if all(np.all(v == v.reshape(-1)[0]) for v in node.params.values() if v.size):
                continue
            key = (node.op, repr(sorted(node.resolved.items())), tuple(sorted(sources.items())))
            groups.setdefault(key, []).append(name)
        for members in groups.values():
            if len(members) > 1:
                owner = self.graph.nodes[members[0]]
                for m in members:
                    self.graph.set_share(m, owner.name)
                    self.graph.nodes[m].params = owner.params

    def _array(self, tensor: onnx.TensorProto) -> np.ndarray:
        try:
            if any(d < 0 for d in tensor.dims) or int(np.prod(tensor.dims, dtype=np.float64)) > MAX_NUMEL:
                raise ValueError(f"dims {list(tensor.dims)}")
            return numpy_helper.to_array(tensor)
        except Exception as e:
            raise DesignError(
                f"tensor '{tensor.name}' cannot be read ({str(e).splitlines()[0][:150] if str(e) else type(e).__name__})", self.where
            ) from None

    def _inputs(self, inputs) -> None:
        if not inputs:
            raise DesignError("the model has no runtime inputs (every input is a constant)", self.where)
        fixed = set()
        for vi in inputs:
            where = f"{self.where} input '{vi.name}'"
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise DesignError("input is not a tensor (sequences, maps and optionals are not supported)", where)
            if tt.elem_type != FLOAT:
                raise DesignError(
                    f"input has element type {onnx.TensorProto.DataType.Name(tt.elem_type)}; designs take float32 inputs", where
                )
            dims = list(tt.shape.dim)
            if not tt.HasField("shape") or len(dims) < 2:
                raise DesignError(
                    f"input must have a batch dimension and at least one more, got rank {len(dims) if tt.HasField('shape') else 'unknown'}",
                    where,
                )
            if dims[0].HasField("dim_value"):
                fixed.add(dims[0].dim_value)
            rest = []
            for k, d in enumerate(dims[1:], 1):
                if not d.HasField("dim_value") or d.dim_value < 1:
                    label = d.dim_param or "?"
                    raise DesignError(f"dimension {k} is '{label}'; only the batch (dimension 0) may be symbolic (fix it with --input)", where)
                rest.append(d.dim_value)
            if int(np.prod(rest, dtype=np.float64)) > MAX_NUMEL:
                raise DesignError(f"input shape {rest} is absurdly large", where)
            name = self.fresh(vi.name)
            node = self.graph.add("Input", name=name, attrs={"shape": rest})
            self.shapes[name] = infer_node(node, [])
            self.values[vi.name] = Value(FLOAT, ref=name, shape=tuple(rest))
        if len(fixed) > 1:
            raise DesignError(f"inputs disagree on the batch size ({sorted(fixed)})", self.where)
        if fixed:
            self.batches = (fixed.pop(),)
        if 0 in self.batches:
            raise DesignError("the batch dimension is 0", self.where)

    def _outputs(self, outputs) -> None:
        for name, vi in zip(self._output_names, outputs):
            v = self.value(vi.name)
            if v.is_const:
                ref = self._constant_node(vi.name, self._batch_free(onnx.NodeProto(), vi.name, v, f"{self.where} output '{vi.name}'"))
            else:
                ref = self.runtime(vi.name, float_only=False).ref
            self.graph.add("Output", [ref], name=name)

    # ---- one node ----------------------------------------------------------------------
    def node(self, node: onnx.NodeProto) -> None:
        label = base_name(node)
        for name in node.input:
            if name:
                self.value(name)
        if self._try_fold(node, label):
            return
        self._map(node, label, self.region)

    def _map(self, node: onnx.NodeProto, label: str, region) -> None:
        """Map `node` by the region function (when given), else by the mapping table, else keep it Opaque."""
        self._added = []
        if region is not None and self._taken(node, label, region(self, node, None)):
            return
        mapper = self.mappers.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        reason = f"no mapping for {node.domain + '.' if node.domain else ''}{node.op_type}"
        if mapper is not None:
            self._added = []
            try:
                outs = mapper(self, node)
            except InvalidModel as e:
                raise DesignError(e.what, f"{self.where} node '{label}'") from None
            except (Unmappable, DesignError, ValueError, KeyError, IndexError, TypeError) as e:
                # attributes or inputs outside what the mapping expects: keep the node as it is
                for name in reversed(self._added):
                    self.graph.erase(name)
                    self.taken.discard(name)
                reason = e.line() if isinstance(e, DesignError) else str(e) if isinstance(e, Unmappable) else f"{type(e).__name__}: {e}"
            else:
                self._taken(node, label, outs)
                return
        self._added = []
        if region is not None and self._taken(node, label, region(self, node, reason)):
            return
        self.opaque(node, reason)

    def _taken(self, node: onnx.NodeProto, label: str, outs: list[Value] | None) -> bool:
        """Record the values a mapping gave `node` (None: it gave none) and report the IR nodes it added."""
        if outs is None:
            return False
        present = [o for o in node.output if o]
        for o, v in zip(present, outs):
            self.values[o] = v
        entry = {"onnx": label, "op": node.op_type, "ir": list(self._added)}
        self.report["folded" if not self._added else "mapped"].append(entry)
        return True

    def _try_fold(self, node: onnx.NodeProto, label: str) -> bool:
        present = [i for i in node.input if i]
        if node.op_type == "CastLike" and node.domain in ("", "ai.onnx") and len(present) == 2:
            v, like = self.value(present[0]), self.value(present[1])
            if v.is_const and not like.is_const:
                # only the element type of the computed input matters
                dtype = helper.tensor_dtype_to_np_dtype(like.elem)
                self.values[node.output[0]] = Value(like.elem, consts=tuple(c.astype(dtype) for c in v.consts), info={"computed": True})
                self.report["folded"].append({"onnx": label, "op": node.op_type})
                return True
        if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx") and present:
            v = self.value(present[0])
            if not v.is_const:
                consts = tuple(self._shape_of(node, v, b) for b in self.batches)
                same = all(np.array_equal(c, consts[0]) for c in consts)
                self.values[node.output[0]] = Value(onnx.TensorProto.INT64, consts=consts[:1] if same else consts)
                self.report["folded"].append({"onnx": label, "op": node.op_type})
                return True
        if not fold.foldable(node) or not all(self.values[i].is_const for i in present):
            return False
        if not present and node.op_type not in ("Constant",):
            return False
        variants = max((len(self.values[i].consts) for i in present), default=1)
        results = []
        try:
            for k in range(variants):
                ins = [self.values[i].consts[min(k, len(self.values[i].consts) - 1)] if i else None for i in node.input]
                results.append(fold.evaluate(node, ins, self.opset))
        except fold.CannotFold:
            return False
        for j, o in enumerate(node.output):
            if not o:
                continue
            arrays = tuple(r[j] for r in results)
            same = len(arrays) == 1 or all(a.shape == arrays[0].shape and np.array_equal(a, arrays[0]) for a in arrays)
            self.values[o] = Value(helper.np_dtype_to_tensor_dtype(arrays[0].dtype), consts=arrays[:1] if same else arrays,
                                   info={"computed": self._computed(node)})
        self.report["folded"].append({"onnx": label, "op": node.op_type})
        return True

    def _computed(self, node: onnx.NodeProto) -> bool:
        """Whether a folded value is computed by the graph rather than stored in the file (as weights are)."""
        if node.op_type == "Identity":
            return self.values[node.input[0]].info.get("computed", False)
        return node.op_type not in ("Constant", "ConstantOfShape")

    def _shape_of(self, node: onnx.NodeProto, v: Value, batch: int) -> np.ndarray:
        full = np.array([batch, *v.shape], dtype=np.int64)
        if node.op_type == "Size":
            return np.array(int(np.prod(full)), dtype=np.int64)
        a = fold.attrs_of(node)
        start, end = a.get("start", 0), a.get("end", None)
        return full[start:end]

    # ---- opaque nodes ------------------------------------------------------------------
    def opaque(self, node: onnx.NodeProto, reason: str) -> None:
        """Keep `node` as an Opaque IR node with its ONNX output shapes."""
        label = base_name(node)
        where = f"{self.where} node '{label}'"
        self._check_subgraphs(node, where)
        node, opsets = self._resize_over_hw(node)
        refs, per_batch = [], {b: [] for b in self.batches}
        for name in node.input:
            if not name:
                for b in self.batches:
                    per_batch[b].append(None)
                continue
            v = self.value(name)
            if v.is_const:
                const = self._batch_free(node, name, v, where)
                refs.append(self._constant_node(name, const))
                for b in self.batches:
                    per_batch[b].append(const)
            else:
                v = self.runtime(name, float_only=False)
                refs.append(v.ref)
                for b in self.batches:
                    per_batch[b].append(((b, *v.shape), v.elem))
        shapes = None
        for b in self.batches:
            found = output_types(node, per_batch[b], opsets, self._declared_at(node, b))
            for (shape, _elem), o in zip(found, [o for o in node.output if o]):
                if len(shape) < 1 or shape[0] != b:
                    raise DesignError(
                        f"{node.op_type} output '{o}' has shape {list(shape)} without the batch dimension first; designs keep the batch",
                        where,
                    )
            per_sample = [list(s[1:]) for s, _ in found]
            if any(int(np.prod(s, dtype=np.float64)) > MAX_NUMEL for s in per_sample):
                raise DesignError(f"{node.op_type} output shapes {per_sample} are absurdly large", where)
            if shapes is not None and per_sample != shapes:
                raise DesignError(f"{node.op_type} output shapes change with the batch size beyond the batch dimension", where)
            shapes = per_sample
            elems = [e for _, e in found]
        stored = onnx.NodeProto()
        stored.CopyFrom(node)
        attrs = {
            "onnx_op": node.op_type,
            "proto": encode_proto(stored),
            "num_inputs": len(refs),
            "output_shapes": shapes,
            "output_dtypes": elems,
            "reason": reason,
        }
        if node.domain:
            attrs["domain"] = node.domain
        attrs["opset"] = opsets.get(node.domain, opsets.get("ai.onnx", 1)) if node.domain else opsets[""]
        name = self.fresh(node.name or f"{node.op_type}_{node.output[0] if node.output else ''}")
        ir_node = self.graph.add("Opaque", refs, name=name, attrs=attrs)
        self.shapes[name] = infer_node(ir_node, [self._shape_of_ref(r) for r in refs])
        for k, o in enumerate(o for o in node.output if o):
            self.values[o] = Value(elems[k], ref=make_ref(name, k), shape=tuple(shapes[k]))
        self.report["opaque"].append({"onnx": label, "op": node.op_type, "ir": name, "reason": reason})

    def _resize_over_hw(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto, dict[str, int]]:
        """A Resize whose sizes lead with the batch size (read from the input's shape) as a Resize of axes H and W
        (opset 18), so it stays an opaque node; any other node as it is, with the model's opsets."""
        opsets = {**self.opsets, "": self.opset}
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or len(node.input) < 4 or not node.input[3]:
            return node, opsets
        v = self.value(node.input[3])
        rows = [np.asarray(c).reshape(-1) for c in v.consts] if v.is_const else []
        led = len(rows) > 1 and all(len(r) == 4 and r[0] == b and np.array_equal(r[1:], rows[0][1:]) for r, b in zip(rows, self.batches))
        if not led or any(a.name == "axes" for a in node.attribute):
            return node, opsets
        hw = f"{node.input[3]}/hw"
        self.values[hw] = Value(onnx.TensorProto.INT64, consts=(rows[0][2:].astype(np.int64),))
        rewritten = onnx.NodeProto()
        rewritten.CopyFrom(node)
        rewritten.input[3] = hw
        rewritten.attribute.append(helper.make_attribute("axes", [2, 3]))
        return rewritten, {**opsets, "": max(self.opset, 18)}

    def _declared_at(self, node: onnx.NodeProto, batch: int) -> list[tuple[tuple[int, ...], int] | None]:
        """The full shapes the file states for the node's present outputs at batch size `batch` (a symbolic first
        dimension is the batch); None where it states no shape with every other dimension known."""
        if self._declared is None:
            self._declared = declared_types(self.model)
        out = []
        for o in (o for o in node.output if o):
            dims, elem = self._declared.get(o, ((), 0))
            known = len(dims) > 0 and all(d is not None for d in dims[1:])
            out.append(((batch if dims[0] is None else dims[0], *dims[1:]), elem) if known else None)
        return out

    def _batch_free(self, node: onnx.NodeProto, name: str, v: Value, where: str) -> np.ndarray:
        """The constant an opaque node reads; a Reshape target led by the batch size becomes 0 (copy the batch)."""
        if len(v.consts) == 1:
            return v.consts[0]
        targets = [np.asarray(c).reshape(-1) for c in v.consts]
        if (
            node.op_type == "Reshape"
            and len(node.input) > 1
            and node.input[1] == name
            and all(len(t) and t[0] == b for t, b in zip(targets, self.batches))
            and all(np.array_equal(t[1:], targets[0][1:]) for t in targets)
            and not fold.attrs_of(node).get("allowzero", 0)
        ):
            return np.concatenate([[0], targets[0][1:]]).astype(targets[0].dtype)
        raise DesignError(f"{node.op_type} reads '{name}', which depends on the batch size in a way a design cannot express", where)

    def _shape_of_ref(self, ref: str) -> tuple:
        src, idx = parse_ref(ref)
        return self.shapes[src][idx]

    def _constant_node(self, value_name: str, array: np.ndarray) -> str:
        """An Opaque Constant node holding a constant value (float32 values as its parameter 'value')."""
        key = (value_name, array.tobytes(), array.shape)
        if key in self._constant_nodes:
            return self._constant_nodes[key]
        as_param = array.dtype == np.float32 and array.ndim > 0 and bool(np.isfinite(array).all())  # a -inf mask is no weight
        attrs = {
            "onnx_op": "Constant",
            "proto": encode_proto(constant_proto(array, keep_value=not as_param)),
            "num_inputs": 0,
            "output_shapes": [list(array.shape)],
            "output_dtypes": [helper.np_dtype_to_tensor_dtype(array.dtype)],
            "batched": False,
            "opset": max(self.opset, 11),
            "reason": "constant input of an opaque node",
        }
        params = {}
        if as_param:
            attrs["param_shapes"] = {"value": list(array.shape)}
            params = {"value": np.array(array, order="C")}
        name = self.fresh(value_name)
        node = self.graph.add("Opaque", [], name=name, attrs=attrs, params=params)
        self.shapes[name] = infer_node(node, [])
        self._constant_nodes[key] = name
        return name

    def materialize(self, name: str) -> None:
        """Give a deferred value its IR form: its ONNX node becomes Opaque (an alias takes its source's form); a node of
        a linear region that computed nothing recognised is mapped by the table as if the region had not been there."""
        v = self.values[name]
        if "alias_of" in v.info:
            source = self.runtime(v.info["alias_of"], float_only=False)
            self.values[name] = Value(source.elem, ref=source.ref, shape=source.shape)
            return
        node, v.deferred = v.deferred, None
        added = self._added
        try:
            if "region" in v.info:
                label = base_name(node)
                entry = {"onnx": label, "op": node.op_type, "ir": []}
                if entry in self.report["folded"]:
                    self.report["folded"].remove(entry)
                self._map(node, label, None)
                if self.values[name].deferred is not None:  # the table opened a pattern its consumer has already declined
                    self.materialize(name)
            else:
                self.opaque(node, v.info.get("reason", f"{node.op_type} not absorbed by its consumer"))
        except DesignError:
            v.deferred = node
            raise
        finally:
            self._added = added

    def _check_subgraphs(self, node: onnx.NodeProto, where: str) -> None:
        for a in node.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                for g in graphs:
                    outer = _outer_names(g)
                    if outer:
                        names = ", ".join(sorted(outer)[:3])
                        raise DesignError(f"{node.op_type} has a subgraph reading outer values ({names}) a design cannot keep", where)


def _outer_names(g: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    used: set[str] = set()
    for n in g.node:
        used.update(i for i in n.input if i and i not in defined)
        for a in n.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []:
                used.update(x for x in _outer_names(sub) if x not in defined)
        defined.update(n.output)
    return used
