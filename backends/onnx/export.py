"""Export a design to an ONNX ModelProto built with onnx.helper.

The batch dimension is symbolic ("N"); node and value names come from the design (value k of node
X is ``X`` or ``X:k``, parameters are initializers ``<node>.<param>``, one per sharing group). The
opset is the lowest that covers every node (see `backends.onnx.ops`) unless one is asked for; the IR
version is the oldest that opset needs, which onnxruntime accepts. `metadata_props` carry the cost
totals and the design JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from convstudio.backends.onnx.emitter import Emitter, Site
from convstudio.backends.onnx.ops import FLOOR_OPSET, LOWERINGS
from convstudio.backends.weights import check_params, init_params
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, make_ref, parse_ref, verify
from convstudio.ir.passes.fuse import fuse as fuse_pass
from convstudio.ir.shapes import infer_shapes

MAX_OPSET = 26  # the newest opset the installed onnxruntime (1.31) runs
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for one serialized message


def opset_needs(graph: Graph) -> list[tuple[str, str, int]]:
    """(node, op, oldest opset its lowering needs) for every node; shapes must be inferred."""
    out = []
    for name in graph.topo_order():
        node = graph.nodes[name]
        if node.op in ("Input", "Output"):
            continue
        lowering = LOWERINGS.get(node.op)
        if lowering is None:
            raise DesignError(f"op {node.op} has no ONNX lowering", f"node '{name}'")
        out.append((name, node.op, lowering.min_opset(node.resolved, _in_shapes(graph, node))))
    return out


def required_opset(graph: Graph) -> tuple[int, str | None]:
    """The lowest opset covering every node (shapes inferred), and the node that sets it (None: the floor)."""
    best, by = FLOOR_OPSET, None
    for name, _, need in opset_needs(graph):
        if need > best:
            best, by = need, name
    return best, by


def _in_shapes(graph: Graph, node: Node) -> list[tuple]:
    out = []
    for ref in node.inputs:
        src, idx = parse_ref(ref)
        out.append(tuple(graph.nodes[src].meta["shapes"][idx]))
    return out


def _choose_opset(graph: Graph, opset: int | None) -> int:
    if opset is None:
        return required_opset(graph)[0]
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise DesignError(f"opset must be an integer, got {opset!r}", "--opset")
    if opset < FLOOR_OPSET:
        raise DesignError(f"opset {opset} is older than {FLOOR_OPSET}, the oldest this exporter writes", "--opset")
    if opset > MAX_OPSET:
        raise DesignError(f"opset {opset} is newer than {MAX_OPSET}, the newest onnxruntime here runs", "--opset")
    for name, op, need in opset_needs(graph):
        if opset < need:
            raise DesignError(f"opset {opset} is too low: {op} needs opset {need}", f"node '{name}'")
    return opset


def _prepare(graph: Graph, fuse: bool, seed: int) -> tuple[Graph, list[str], list[str]]:
    """A copy of the graph with weights (initialized where missing), fused if asked, shapes inferred."""
    g = graph.copy()
    verify(g)
    initialized = init_params(g, seed)
    check_params(g)
    fused: list[str] = []
    if fuse:
        result = fuse_pass(g)
        g, fused = result.graph, list(result.report)
    infer_shapes(g, strict=True)
    return g, initialized, fused


def _value_info(name: str, shape: tuple) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])


def _output_info(g: Graph, name: str, ref: str) -> onnx.ValueInfoProto:
    """The graph output `name` reading `ref`: float32 with a batch, unless an opaque node says otherwise."""
    src, idx = parse_ref(ref)
    node = g.nodes[src]
    shape = tuple(node.meta["shapes"][idx])
    if node.op != "Opaque":
        return _value_info(name, shape)
    a = node.resolved
    elem = a["output_dtypes"][idx] if a["output_dtypes"] else TensorProto.FLOAT
    return helper.make_tensor_value_info(name, elem, ["N", *shape] if a["batched"] else list(shape))


def _emit_graph(g: Graph, opset: int, target: onnx.GraphProto) -> dict[str, int]:
    """Fill `target` with the graph's nodes, initializers, inputs and outputs; returns other domains' opsets."""
    e = Emitter(g, opset, target)
    inputs = [_value_info(name, tuple(g.nodes[name].meta["shapes"][0])) for name in g.inputs]
    for name in g.topo_order():
        node = g.nodes[name]
        if node.op in ("Input", "Output"):
            continue
        shapes = node.meta["shapes"]
        site = Site(node, node.resolved, list(node.inputs), [make_ref(name, k) for k in range(len(shapes))],
                    _in_shapes(g, node), [tuple(s) for s in shapes])
        LOWERINGS[node.op].emit(e, site)
    produced = {out for n in e.nodes for out in n.output}
    graph_inputs = set(g.inputs)
    claimed: dict[str, str] = {}
    outputs = []
    for name in g.outputs:
        ref = g.nodes[name].inputs[0]
        value = claimed.get(ref, ref)
        if value in produced and value not in graph_inputs and ref not in claimed:
            _rename_value(e.nodes, value, name)
            claimed[ref] = name
        else:
            e.node("Identity", [value], [name], name)
        outputs.append(_output_info(g, name, ref))
    target.name = g.name
    target.node.extend(e.nodes)
    target.input.extend(inputs)
    target.output.extend(outputs)
    return e.extra_domains


def _rename_value(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for n in nodes:
        for i, v in enumerate(n.input):
            if v == old:
                n.input[i] = new
        for i, v in enumerate(n.output):
            if v == old:
                n.output[i] = new


def build(
    graph: Graph, opset: int | None = None, fuse: bool = False, seed: int = 0, training: dict | None = None
) -> tuple[onnx.ModelProto, dict, bytes]:
    """The model, a report (opset, IR version, weights initialized, fusion) and the serialized model."""
    g, initialized, fused = _prepare(graph, fuse, seed)
    chosen = _choose_opset(g, opset)
    model = onnx.ModelProto(producer_name="convstudio", producer_version="1")
    domains = _emit_graph(g, chosen, model.graph)
    imports = [helper.make_opsetid("", chosen)] + [helper.make_opsetid(d, v) for d, v in sorted(domains.items())]
    model.opset_import.extend(imports)
    model.ir_version = helper.find_min_ir_version_for(imports[:1])
    totals = analyze(g, "flops").total.as_dict()
    weights = f"initialized (seed {seed}) for {', '.join(initialized)}" if initialized else "from the design"
    helper.set_model_props(model, {
        "convstudio.cost": json.dumps({"convention": "flops", **totals}),
        "convstudio.design": dumps(Design(g, dict(training or {}))),
        "convstudio.weights": weights,
    })
    size = model.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise DesignError(f"the model would take {size / 2**30:.2f} GiB; one ONNX protobuf file holds at most 2 GiB", f"design '{graph.name}'")
    data = model.SerializeToString()
    try:
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DesignError(f"the exported model fails the ONNX checker: {first}", f"design '{graph.name}'") from None
    report = {
        "opset": chosen,
        "ir_version": model.ir_version,
        "weights_initialized": bool(initialized),
        "initialized_nodes": initialized,
        "fused": fused,
        "onnx_nodes": len(model.graph.node),
        "initializers": len(model.graph.initializer),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "cost": totals,
        "bytes": len(data),
    }
    return model, report, data


def export_model(graph: Graph, opset: int | None = None, fuse: bool = False, seed: int = 0) -> onnx.ModelProto:
    """The ONNX model of `graph`; missing weights are initialized with `seed` (metadata says so)."""
    return build(graph, opset, fuse, seed)[0]


def export_file(design_or_graph: Design | Graph, path: Path | str, opset: int | None = None, fuse: bool = False) -> dict:
    """Write the ONNX model atomically; returns the report with the path and size written."""
    if isinstance(design_or_graph, Design):
        graph, training = design_or_graph.graph, design_or_graph.training
    else:
        graph, training = design_or_graph, None
    _, report, data = build(graph, opset, fuse, training=training)
    write_atomic(path, data)
    return {"path": str(path), **report}
