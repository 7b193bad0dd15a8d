"""Helpers shared by the ONNX -> IR mapping functions."""

from __future__ import annotations

import numpy as np
import onnx

from convstudio.backends.onnx.importer_core import Importer, Unmappable, Value


def text(value):
    """A string attribute as str (onnx gives bytes); other values as they are."""
    return value.decode() if isinstance(value, bytes) else value


def one_value(array) -> float:
    """The value of a one-element constant of any shape (exporters write scalars as [1] tensors too)."""
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise Unmappable(f"expected one value, got shape {list(np.shape(array))}")
    return flat[0].item()


def first_input(imp: Importer, node: onnx.NodeProto, rank: int | None = None) -> Value:
    """The computed input 0, optionally of a given per-sample rank."""
    v = imp.runtime(node.input[0])
    if rank is not None and len(v.shape) != rank:
        raise Unmappable(f"input is {len(v.shape) + 1}-d; the IR op needs {rank + 1}-d")
    return v


def _used(imp: Importer, node: onnx.NodeProto, index: int) -> bool:
    return len(node.output) > index and bool(node.output[index]) and imp.uses[node.output[index]] > 0


def only_first_output(imp: Importer, node: onnx.NodeProto) -> None:
    """Decline nodes whose extra outputs (masks, indices, statistics) are used."""
    for k in range(1, len(node.output)):
        if _used(imp, node, k):
            raise Unmappable(f"output {k} ('{node.output[k]}') is used")


def pair(values, what: str) -> tuple[int, int]:
    """Two spatial values (H, W), else the node is not 2-d."""
    values = [int(v) for v in values]
    if len(values) != 2:
        raise Unmappable(f"{what} has {len(values)} spatial dimensions; the IR op is 2-d")
    return values[0], values[1]
