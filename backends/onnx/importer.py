"""Import real-world ONNX models into the IR, with weights.

The file is read and checked by `backends.onnx.safety`, walked node by node by the `Importer`
(`backends.onnx.importer_core`) with the mapping table (`backends.onnx.mapping`); a model of an old
opset with opaque nodes is walked again after converting it to MIN_OPAQUE_OPSET. A file that is still
exactly a ConvStudio export gives back the design it was exported from (`backends.onnx.restore`).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from convstudio.backends.onnx.adaptive import drop_unread_pools, linear_region
from convstudio.backends.onnx.importer_core import Importer, sanitize
from convstudio.backends.onnx.mapping import MAPPERS
from convstudio.backends.onnx.restore import restore_design
from convstudio.backends.onnx.safety import read_model
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError

MIN_OPAQUE_OPSET = 11


def _run(importer: Importer, where: str) -> Importer:
    try:
        importer.run()
    except RecursionError:
        raise DesignError("the model is nested too deeply to import", where) from None
    return importer


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model converted to MIN_OPAQUE_OPSET, so opaque nodes re-export in a form exporters write."""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPAQUE_OPSET)
        upgraded.ir_version = max(upgraded.ir_version, helper.find_min_ir_version_for(list(upgraded.opset_import)))
        onnx.checker.check_model(upgraded)
    except Exception:  # a model the converter cannot handle keeps its own opset
        return None
    return upgraded


def set_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    """Give runtime inputs fixed dimensions: `shapes` maps an input name ('' for the only input) to
    its per-sample shape or its full shape; the batch dimension keeps what the model says."""
    inits = {t.name for t in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    for key, dims in shapes.items():
        if not key:
            if len(inputs) != 1:
                raise DesignError(f"the model has inputs {', '.join(inputs)}: name the one to reshape (NAME=SHAPE)", "--input")
            key = next(iter(inputs))
        if key not in inputs:
            raise DesignError(f"the model has no input '{key}' (inputs: {', '.join(inputs)})", "--input")
        dim = inputs[key].type.tensor_type.shape.dim
        rank = len(dim)
        if len(dims) not in (rank - 1, rank) or rank < 2:
            raise DesignError(f"input '{key}' is {rank}-d, got shape {'x'.join(map(str, dims))}", "--input")
        for d, value in zip(list(dim)[1:], dims[-(rank - 1):]):
            if d.HasField("dim_value") and d.dim_value != value:
                raise DesignError(f"input '{key}' has fixed dimension {d.dim_value} where {value} was given", "--input")
            d.dim_value = value


def _restored_report(design: Design, proto: onnx.ModelProto, name: str | None) -> dict:
    """The import report of a design restored from its export: every node mapped as it was, opaque ones listed."""
    graph = design.graph
    if name:
        graph.name = sanitize(name)
    nodes = [n for n in graph if n.op not in ("Input", "Output")]
    opaque = [{"onnx": n.name, "op": n.attrs["onnx_op"], "ir": n.name, "reason": n.attrs.get("reason", "")} for n in nodes if n.op == "Opaque"]
    report = {
        "mapped": [{"onnx": n.name, "op": n.op, "ir": [n.name]} for n in nodes if n.op != "Opaque"],
        "folded": [],
        "opaque": opaque,
        "model": graph.name,
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "restored": True,
        "batch": "N",
        "inputs": {n: list(graph.nodes[n].attrs["shape"]) for n in graph.inputs},
    }
    report["counts"] = {k: len(report[k]) for k in ("mapped", "folded", "opaque")}
    return report


def import_model(
    model: str | Path | bytes | onnx.ModelProto, name: str | None = None, input_shapes: dict[str, list[int]] | None = None
) -> tuple[Design, dict]:
    """Read an ONNX model into a Design (weights in node.params) and a report of mapped, folded and opaque nodes.

    `input_shapes` fixes symbolic input dimensions (see `set_input_shapes`).
    """
    proto, where = read_model(model)
    if input_shapes:
        set_input_shapes(proto, input_shapes)
    if name is None and isinstance(model, (str, Path)):
        name = Path(model).stem
    restored = restore_design(proto)
    if restored is not None:
        return restored, _restored_report(restored, proto, name)
    importer = _run(Importer(proto, where, name, MAPPERS, linear_region), where)
    if importer.report["opaque"] and importer.opset < MIN_OPAQUE_OPSET:
        upgraded = _upgrade(proto)
        if upgraded is not None:
            importer = _run(Importer(upgraded, where, name, MAPPERS, linear_region), where)
    drop_unread_pools(importer)
    design = Design(importer.graph)
    report = importer.report
    report.update(
        model=design.graph.name,
        opset=importer.opset,
        restored=False,
        batch="N" if len(importer.batches) > 1 else importer.batches[0],
        inputs={n: list(design.graph.nodes[n].attrs["shape"]) for n in design.graph.inputs},
        counts={k: len(report[k]) for k in ("mapped", "folded", "opaque")},
    )
    return design, report
