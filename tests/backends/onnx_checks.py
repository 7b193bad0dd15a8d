"""Imports checked the way `convstudio validate` checks a file: every design that import writes must validate."""

from __future__ import annotations

import tempfile
from pathlib import Path

from convstudio.backends.onnx.importer import import_model
from convstudio.backends.weights import save_weights
from convstudio.designer.cli.verb_validate import summary
from convstudio.ir.design import Design, dumps, load, write_atomic
from convstudio.ir.graph import verify


def assert_validates(design: Design) -> dict:
    """Write the design and its weights as import does, then run validate's own checks on the files: the JSON
    fields and attribute schemas, verify, strict shape inference and cost, and the weights (names, shapes, finite values)."""
    verify(design.graph)
    with tempfile.TemporaryDirectory() as folder:
        path, weights = Path(folder) / "design.json", Path(folder) / "design.safetensors"
        save_weights(design.graph, weights)
        write_atomic(path, dumps(design))
        return summary(load(path), str(weights))


def import_checked(*args, **kwargs):
    """`import_model(...)`, asserting that the design it returns validates."""
    design, report = import_model(*args, **kwargs)
    assert_validates(design)
    return design, report
