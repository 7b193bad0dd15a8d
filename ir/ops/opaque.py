"""Opaque: an imported ONNX node kept as it is, with the output shapes ONNX gave it.

The model still opens, displays and counts what is known around it; its own cost is unknown (0).
`proto` holds the base64 of the serialized ONNX NodeProto (attributes included); float32 constant
inputs are kept as parameters (`param_shapes` names them) so the weights survive a round trip.
"""

from __future__ import annotations

from convstudio.ir.errors import AttrError, ShapeError
from convstudio.ir.ops.registry import Attr, OpCost, OpDef, register


def _check(a: dict) -> None:
    shapes = a["output_shapes"]
    ok = (
        isinstance(shapes, list)
        and shapes
        and all(isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s) for s in shapes)
    )
    if not ok:
        raise AttrError("output_shapes must be a non-empty list of shapes (lists of integers >= 0)", "attrs.output_shapes")
    params = a["param_shapes"]
    if params is not None and not (
        isinstance(params, dict) and all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in params.values())
    ):
        raise AttrError("param_shapes must map parameter names to shapes", "attrs.param_shapes")


def _infer(a: dict, ins: list) -> list:
    if len(ins) != a["num_inputs"]:
        raise ShapeError(f"opaque {a['onnx_op']} was imported with {a['num_inputs']} inputs, has {len(ins)}", "inputs")
    return [tuple(s) for s in a["output_shapes"]]


def _cost(a: dict, ins: list, outs: list) -> OpCost:
    text = f"unknown: opaque ONNX op {a['onnx_op']}"
    return OpCost(0, 0, 0, {"macs": text, "flops": text, "fvcore": text})


def _params(a: dict, ins: list) -> dict:
    return {k: tuple(v) for k, v in (a["param_shapes"] or {}).items()}


register(
    OpDef(
        "Opaque",
        "opaque",
        (
            Attr("onnx_op", "str", doc="the ONNX op type"),
            Attr("domain", "str", "", doc="the ONNX op domain ('' is the default domain)"),
            Attr("opset", "int", 11, min=1, doc="the opset version of the node's domain it was written for"),
            Attr("proto", "str", doc="base64 of the serialized ONNX NodeProto"),
            Attr("num_inputs", "int", min=0, doc="graph values it reads (constant inputs are parameters)"),
            Attr("output_shapes", "json", doc="per-sample output shapes (full shapes when batched is false)"),
            Attr("output_dtypes", "ints", None, min=0, optional=True, doc="ONNX element types of the outputs"),
            Attr("batched", "bool", True, doc="false for values without a batch dimension (constants)"),
            Attr("param_shapes", "json", None, optional=True, doc="float32 constant inputs kept as parameters"),
            Attr("reason", "str", "", doc="why the importer kept it opaque"),
        ),
        (0, None),
        _infer,
        _cost,
        params=_params,
        num_outputs=lambda a: len(a["output_shapes"]),
        check=_check,
        doc="an ONNX node kept as is: shapes known, cost unknown",
    )
)
