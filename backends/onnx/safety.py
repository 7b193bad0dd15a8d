"""Reading an ONNX file safely: corrupt protobuf, external data outside the model's folder, bad models.

External-data locations are validated here (relative, no '..', resolved inside the model's folder,
an existing regular file, offset and length inside it) and read by this module itself, so nothing
outside the folder is ever opened.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError

from convstudio.ir.errors import DesignError

MAX_MODEL_BYTES = 2**31 - 1


def _tensors_with_external_data(graph: onnx.GraphProto):
    """Every TensorProto in the graph (initializers, Constant values, subgraphs) stored externally."""
    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t
    for node in graph.node:
        for attr in node.attribute:
            tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
            for t in tensors:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    yield t
            graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for g in graphs:
                yield from _tensors_with_external_data(g)


def _external_location(tensor: onnx.TensorProto, folder: Path | None, where: str) -> tuple[Path, int, int | None]:
    info = {e.key: e.value for e in tensor.external_data}
    name = f"tensor '{tensor.name}'"
    location = info.get("location", "")
    if not location:
        raise DesignError(f"{name} is stored externally but names no location", where)
    if folder is None:
        raise DesignError(f"{name} keeps its data in '{location}': load the model from its file so its folder is known", where)
    if not location.isprintable():
        raise DesignError(f"{name} names its external data file with a control character ('{location}')", where)
    if (
        PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
    ):
        raise DesignError(f"{name} points at the absolute path '{location}'; external data must lie beside the model", where)
    parts = PureWindowsPath(location).parts
    if ".." in parts:
        raise DesignError(f"{name} points outside the model's folder ('{location}')", where)
    root = folder.resolve()
    path = (folder / location).resolve()
    if path != root and root not in path.parents:
        raise DesignError(f"{name} resolves outside the model's folder ('{location}' -> '{path}')", where)
    if not path.is_file():
        raise DesignError(f"{name} names external data file '{location}', which does not exist", where)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise DesignError(f"{name} has a non-numeric external data offset or length", where) from None
    size = path.stat().st_size
    if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
        raise DesignError(f"{name} asks for bytes {offset}..{offset + (length or 0)} of '{location}', which has {size}", where)
    return path, offset, length


def load_external_data(model: onnx.ModelProto, folder: Path | None, where: str) -> None:
    """Read every external tensor's bytes into the model, after validating its location."""
    for tensor in _tensors_with_external_data(model.graph):
        path, offset, length = _external_location(tensor, folder, where)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def parse_model(data: bytes, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise DesignError(
            f"not a readable ONNX model: the protobuf is truncated or corrupt ({str(e) or type(e).__name__})", where
        ) from None
    if not model.HasField("graph"):
        raise DesignError("not an ONNX model: it has no graph", where)
    return model


def read_model(source, where: str | None = None) -> tuple[onnx.ModelProto, str]:
    """(ModelProto with external data read in, a 'file ...' location for errors) from a path, bytes or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        where = where or "model"
        model = onnx.ModelProto()
        model.CopyFrom(source)
        folder = None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        where = where or "model bytes"
        model = parse_model(bytes(source), where)
        folder = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = where or f"file '{path}'"
        if not path.exists():
            raise DesignError("no such file", where)
        if not path.is_file():
            raise DesignError("not a regular file", where)
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise DesignError("model file is larger than 2 GiB (keep the weights as external data)", where)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DesignError(f"cannot read: {e.strerror or e}", where) from None
        model = parse_model(data, where)
        folder = path.parent
    else:
        raise DesignError(f"cannot import a {type(source).__name__}: give a path, bytes or an onnx.ModelProto", "model")
    load_external_data(model, folder, where)
    check(model, where)
    return model, where


def check(model: onnx.ModelProto, where: str) -> None:
    """onnx.checker plus strict type and shape inference: wrong element types and cycles are errors here."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        raise DesignError(f"invalid ONNX model: {_first_line(e)}", where) from None
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        raise DesignError(f"invalid ONNX model: {_first_line(e)}", where) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("==>")]
    return (lines[0] if lines else type(e).__name__)[:300]
