"""Parameters of a design as numpy arrays: default initialization and safetensors files.

Keys are ``"<node>.<param>"``; nodes in a sharing group store their parameters once, under the
group's first node. Both the torch and the ONNX backends read ``node.params`` filled from here.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from convstudio.backends.weights_file import Header, encode, read_header, read_tensors
from convstudio.ir.design import Design, dumps, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref, verify
from convstudio.ir.shapes import infer_shapes


def param_shapes(graph: Graph) -> dict[str, dict[str, tuple]]:
    """node -> {param or buffer name -> shape} for the nodes that own parameters."""
    infer_shapes(graph, strict=True)
    out: dict[str, dict[str, tuple]] = {}
    for name, node in graph.nodes.items():
        if graph.param_owner(name) != name:
            continue
        ins = [graph.nodes[parse_ref(r)[0]].meta["shapes"][parse_ref(r)[1]] for r in node.inputs]
        a = node.resolved
        shapes = {**node.opdef.params(a, ins), **node.opdef.buffers(a, ins)}
        if shapes:
            out[name] = {k: tuple(v) for k, v in shapes.items()}
    return out


def _fan_in(op: str, shape: tuple) -> int:
    if op == "ConvTranspose2d":
        return shape[1] * math.prod(shape[2:])
    return math.prod(shape[1:]) if len(shape) > 1 else shape[0]


def init_params(graph: Graph, seed: int = 0, only_missing: bool = True) -> list[str]:
    """Fill node.params with PyTorch's default initialization; returns the nodes initialized."""
    rng = np.random.default_rng(seed)
    done = []
    for name, shapes in param_shapes(graph).items():
        node = graph.nodes[name]
        if only_missing and node.params and set(node.params) >= set(shapes):
            continue
        a = node.resolved
        params: dict[str, np.ndarray] = {}
        weight_shape = shapes.get("weight")
        for key, shape in shapes.items():
            if node.op in ("BatchNorm2d", "BatchNorm1d", "LayerNorm"):
                value = np.ones(shape) if key in ("weight", "running_var") else np.zeros(shape)
            elif node.op in ("PReLU", "Scale"):
                value = np.full(shape, a["init"])
            else:
                fan_in = _fan_in(node.op, weight_shape)
                bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
                value = rng.random(shape, dtype=np.float32)  # U(-bound, bound) drawn in float32: no float64 copy of large layers
                value *= np.float32(2 * bound)
                value -= np.float32(bound)
            params[key] = value.astype(np.float32, copy=False)
        node.params = params
        done.append(name)
    share_params(graph)
    return done


def share_params(graph: Graph) -> None:
    """Point every member of a sharing group at its owner's arrays."""
    for members in graph.share_groups().values():
        owner = graph.nodes[members[0]]
        for m in members[1:]:
            graph.nodes[m].params = owner.params


def check_params(graph: Graph) -> None:
    """Every owner has exactly the parameters its op and input shapes need."""
    for name, shapes in param_shapes(graph).items():
        params = graph.nodes[name].params
        for key, shape in shapes.items():
            if key not in params:
                raise DesignError(f"weights lack '{name}.{key}'", f"node '{name}'")
            if tuple(params[key].shape) != shape:
                raise DesignError(f"weight '{name}.{key}' has shape {list(params[key].shape)}, the design needs {list(shape)}", f"node '{name}'")


def has_params(graph: Graph) -> bool:
    shapes = param_shapes(graph)
    return all(graph.nodes[n].params and set(graph.nodes[n].params) >= set(s) for n, s in shapes.items())


def weights_to_dict(graph: Graph) -> dict[str, np.ndarray]:
    out = {}
    for name, shapes in param_shapes(graph).items():
        for key in shapes:
            if key in graph.nodes[name].params:
                out[f"{name}.{key}"] = np.ascontiguousarray(graph.nodes[name].params[key], dtype=np.float32)
    return out


def save_weights(graph: Graph, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write the parameters as a safetensors file, atomically; the same weights give the same bytes."""
    write_atomic(path, encode(weights_to_dict(graph), {"format": "convstudio.weights", "design": graph.name, **(metadata or {})}))


def load_weights(graph: Graph, path: Path | str) -> dict[str, str]:
    """Read a safetensors file into node.params and return its metadata.

    Names and shapes are checked against the design from the header, before any tensor data is read;
    every needed tensor must be there, and NaN or infinite values are refused.
    """
    path = Path(path)
    where = f"file '{path}'"
    shapes = param_shapes(graph)

    def fits_design(header: Header) -> None:
        for key in header.tensors:
            node, _, param = key.partition(".")
            if node not in shapes or param not in shapes[node]:
                raise DesignError(f"tensor '{key}' matches no parameter of the design", where)
        for name, needed in shapes.items():
            for param, shape in needed.items():
                entry = header.tensors.get(f"{name}.{param}")
                if entry is None:
                    raise DesignError(f"weights lack '{name}.{param}'", f"node '{name}' {where}")
                if entry.shape != shape:
                    raise DesignError(f"weight '{name}.{param}' has shape {list(entry.shape)}, the design needs {list(shape)}", f"node '{name}' {where}")

    tensors, metadata = read_tensors(path, fits_design)
    for key, array in tensors.items():
        if not np.isfinite(array).all():
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            raise DesignError(f"weight '{key}' holds {nan:,} NaN and {inf:,} infinite values (of {array.size:,})", where)
    for name, needed in shapes.items():
        graph.nodes[name].params = {k: tensors[f"{name}.{k}"] for k in needed}
    share_params(graph)
    return metadata


def trained_epochs(path: Path) -> int | None:
    """How many epochs `convstudio train` had run when it wrote the weights in `path` (None: not written by train)."""
    text = read_header(path).metadata.get("epochs", "")
    return int(text) if text.isdigit() and len(text) < 12 else None


def pending_path(weights: Path) -> Path:
    """Where `save_design_and_weights` puts new weights until their design is in place."""
    return weights.with_name(weights.name + ".pending")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _written_with(pending: Path, design_file: Path) -> bool:
    """Whether `pending` was written together with the design file as it is now."""
    try:
        recorded = read_header(pending).metadata.get("design_sha256")
        return recorded is not None and design_file.is_file() and recorded == _digest(design_file.read_bytes())
    except (DesignError, OSError):
        return False


def paired_weights(design: Design) -> Path | None:
    """The weights file that goes with `design`, or None when it has none.

    A design that names its weights gets that file (inside its folder, see Design.weights_path). Otherwise
    it is `<stem>.safetensors` beside the design file, unless an interrupted `save_design_and_weights`
    left a pending file written with this very design text, which is then the design's true pair.
    """
    path = design.weights_path()
    if path is None or design.weights:
        return path
    pending = pending_path(path)
    if os.path.lexists(pending) and _written_with(pending, design.path):
        return pending
    return path if os.path.lexists(path) else None


def load_design_weights(design: Design, weights: Path | str | None = None, required: bool = False) -> Path | None:
    """Load `weights` (a file given on the command line) or the design's paired weights; returns the file read.

    With `required`, a design without weights is an error; without it, None means there were none.
    """
    path = Path(weights) if weights is not None else paired_weights(design)
    if path is None:
        if required:
            raise DesignError("the design has no weights (train it or give --weights)", f"design '{design.name}'")
        return None
    load_weights(design.graph, path)
    return path


def save_design_and_weights(design: Design, path: Path | str, weights: Graph | None = None, metadata: dict[str, str] | None = None) -> Path | None:
    """Write `design` to `path` and the parameters of `weights` (a graph) to `<stem>.safetensors` beside it.

    A crash between the writes never leaves a mismatched pair. The design is written without a `weights`
    field (it pairs by stem) and the steps are: (1) the weights go to `<stem>.safetensors.pending`, their
    metadata holding the sha256 of the new design text; (2) the design replaces `path`; (3) the pending
    file is renamed over `<stem>.safetensors`. Each write is atomic. Stopped before (2), the old design is
    still beside its old weights, and the pending file, whose digest does not match it, is ignored; stopped
    between (2) and (3), `paired_weights` finds the pending file's digest equal to the design's and takes
    it (a pending file that matches the old design is first renamed into place, so step (1) cannot orphan
    the old design). Without `weights`, old weights beside `path` are removed before the design is written,
    so a new design never meets the weights of the one it replaces. Returns the weights file written, if any.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        raise DesignError("the design file needs another suffix: its weights are written as .safetensors beside it", f"file '{path}'")
    verify(design.graph)
    design.weights = None
    text = dumps(design).encode("utf-8")
    stem = path.with_suffix(".safetensors")
    pending = pending_path(stem)
    if os.path.lexists(pending) and _written_with(pending, path):
        os.replace(pending, stem)  # finish the interrupted write first, so the old design keeps its own weights
    if weights is None:
        for stale in (stem, pending):
            if os.path.lexists(stale):
                os.unlink(stale)
        write_atomic(path, text)
        design.path = path
        return None
    save_weights(weights, pending, {**(metadata or {}), "design_sha256": _digest(text)})
    write_atomic(path, text)
    design.path = path
    os.replace(pending, stem)
    return stem


def retire_pending(weights: Path) -> None:
    """After new weights are written at a design's paired path, an older pending file there no longer counts."""
    pending = pending_path(weights)
    if os.path.lexists(pending):
        os.unlink(pending)
