"""Restore the design an ONNX file was exported from, when the file still is exactly that export.

The exporter writes the design JSON as the `convstudio.design` metadata entry; it carries what ONNX
cannot express (BatchNorm momentum and affine=False, dropout p, stochastic depth, Upsample size,
batch statistics, node names, share groups, the training section). Rules:
- the design is taken from the metadata and its parameters from the initializers ``<owner>.<param>``;
- it is used only when exporting it again at the file's opset gives the very nodes, inputs, outputs and
  initializers the file holds (an edited file, or one whose metadata describes another graph, is
  imported node by node instead).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from convstudio.backends.onnx.export import _emit_graph
from convstudio.backends.weights import param_shapes, share_params
from convstudio.ir.design import Design, loads
from convstudio.ir.errors import DesignError
from convstudio.ir.shapes import infer_shapes

METADATA_KEY = "convstudio.design"


def _params_from_initializers(design: Design, initializers: dict[str, onnx.TensorProto]) -> set[str] | None:
    """Fill every owner's parameters from the initializers; their names, or None when one is missing or of another shape."""
    graph = design.graph
    used = set()
    for name, shapes in param_shapes(graph).items():
        params = {}
        for key, shape in shapes.items():
            tensor = initializers.get(f"{name}.{key}")
            if tensor is None or tuple(tensor.dims) != tuple(shape) or tensor.data_type != onnx.TensorProto.FLOAT:
                return None
            params[key] = np.array(numpy_helper.to_array(tensor), dtype=np.float32, order="C")
            used.add(tensor.name)
        graph.nodes[name].params = params
    share_params(graph)
    return used


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.SerializeToString() == y.SerializeToString() for x, y in zip(a, b))


def _same_initializers(emitted, stored, params: set[str]) -> bool:
    """Constants equal byte for byte; parameters (read from `stored` itself) equal in name, type and shape."""
    if len(emitted) != len(stored):
        return False
    for a, b in zip(emitted, stored):
        if a.name in params:
            if (a.name, a.data_type, list(a.dims)) != (b.name, b.data_type, list(b.dims)):
                return False
        elif a.SerializeToString() != b.SerializeToString():
            return False
    return True


def restore_design(model: onnx.ModelProto) -> Design | None:
    """The design in the model's metadata with the model's weights, if re-exporting it gives this very graph; else None."""
    text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if text is None or opset is None:
        return None
    try:
        design = loads(text, f"metadata {METADATA_KEY}")
        initializers = {t.name: t for t in model.graph.initializer}
        params = _params_from_initializers(design, initializers)
        if params is None:
            return None
        infer_shapes(design.graph, strict=True)
        emitted = onnx.GraphProto()
        _emit_graph(design.graph, opset, emitted)
    except (DesignError, KeyError, ValueError):  # metadata that is not a valid design of this graph
        return None
    g = model.graph
    if not all(_same(getattr(emitted, f), getattr(g, f)) for f in ("node", "input", "output")):
        return None
    if not _same_initializers(emitted.initializer, g.initializer, params):
        return None
    return design
