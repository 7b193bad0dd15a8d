"""The safetensors format, read and written here rather than by the safetensors package.

Reading is bounded: the file must be a regular file (checked on the open descriptor, opened with
O_NONBLOCK so a FIFO cannot hang), its 8-byte little-endian header length and JSON header are read
and checked (dtypes, shapes, offsets that tile the data exactly, the file's size equal to what the
header promises) before any tensor data is read. F32, F16, BF16 and F64 tensors become float32;
other dtypes are refused. Writing is deterministic: tensors and metadata in sorted order, the header
padded with spaces to 8 bytes, so the same tensors and metadata always give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convstudio.ir.errors import DesignError

MAX_HEADER_BYTES = 100_000_000  # the safetensors package's own limit
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"), "BF16": np.dtype("<u2")}


@dataclass(frozen=True)
class Entry:
    """One tensor's header entry: dtype name, shape and its byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int  # file offset of the data section


def _where(path: Path) -> str:
    return f"file '{path}'"


def _open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file; a FIFO or device is refused without blocking."""
    where = _where(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DesignError("weights file not found", where) from None
    except (OSError, ValueError) as e:
        raise DesignError(f"cannot read the weights file: {getattr(e, 'strerror', None) or e}", where) from None
    if not stat.S_ISREG(info.st_mode):
        raise DesignError("weights must be a regular file (this is a folder, device, FIFO or socket)", where)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DesignError(f"cannot read the weights file: {e.strerror or e}", where) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the stat and the open
        os.close(fd)
        raise DesignError("weights must be a regular file (this is a folder, device, FIFO or socket)", where)
    return fd


def _read_exactly(fd: int, offset: int, size: int, path: Path) -> bytes:
    """`size` bytes at `offset`; a file that ends sooner (truncated meanwhile) is an error."""
    chunks, done = [], 0
    while done < size:
        chunk = os.pread(fd, min(size - done, 1 << 24), offset + done)
        if not chunk:
            raise DesignError(f"file ended after {offset + done:,} bytes, its header promises {offset + size:,}", _where(path))
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' appears twice")
        out[key] = value
    return out


def _entry(name: str, raw, where: str) -> Entry:
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data_offsets"}:
        raise DesignError(f"not a readable safetensors file (tensor '{name}' needs exactly dtype, shape and data_offsets)", where)
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if dtype not in DTYPES:
        raise DesignError(f"tensor '{name}' has dtype {dtype!r}; weights must be F32, F16, BF16 or F64", where)
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise DesignError(f"not a readable safetensors file (tensor '{name}' has shape {shape!r})", where)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
        raise DesignError(f"not a readable safetensors file (tensor '{name}' has data_offsets {offsets!r})", where)
    need = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != need:
        raise DesignError(f"tensor '{name}' spans {offsets[1] - offsets[0]:,} bytes, its shape {shape} and dtype {dtype} need {need:,}", where)
    return Entry(dtype, tuple(shape), offsets[0], offsets[1])


def _parse_header(fd: int, path: Path) -> Header:
    where = _where(path)
    size = os.fstat(fd).st_size
    if size < 8:
        raise DesignError(f"not a readable safetensors file ({size} bytes, shorter than its 8-byte header length)", where)
    (length,) = struct.unpack("<Q", _read_exactly(fd, 0, 8, path))
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise DesignError(f"not a readable safetensors file (header of {length:,} bytes in a file of {size:,})", where)
    try:
        raw = json.loads(_read_exactly(fd, 8, length, path).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DesignError(f"not a readable safetensors file (header is not JSON: {str(e).splitlines()[0][:120]})", where) from None
    if not isinstance(raw, dict):
        raise DesignError("not a readable safetensors file (header is not a JSON object)", where)
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise DesignError("not a readable safetensors file (__metadata__ must map strings to strings)", where)
    tensors = {name: _entry(name, value, where) for name, value in raw.items()}
    data = size - 8 - length
    position = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            raise DesignError(f"not a readable safetensors file (tensor '{name}' starts at byte {entry.begin:,} of the data, expected {position:,})", where)
        position = entry.end
    if position != data:
        raise DesignError(f"the header promises {position:,} bytes of tensor data, the file holds {data:,}", where)
    return Header(tensors, metadata, 8 + length)


def read_header(path: Path | str) -> Header:
    """The checked header of a safetensors file (no tensor data is read)."""
    path = Path(path)
    fd = _open_regular(path)
    try:
        return _parse_header(fd, path)
    finally:
        os.close(fd)


def _to_float32(raw: bytes, entry: Entry) -> np.ndarray:
    array = np.frombuffer(raw, dtype=DTYPES[entry.dtype])
    if entry.dtype == "BF16":  # bfloat16 is the upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32).reshape(entry.shape)


def read_tensors(path: Path | str, check=None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> float32 array, metadata) of a safetensors file.

    `check(header)` runs after the header is validated and before any tensor data is read (e.g. to
    compare names and shapes with what a design needs); it raises to refuse the file.
    """
    path = Path(path)
    fd = _open_regular(path)
    try:
        header = _parse_header(fd, path)
        if check is not None:
            check(header)
        tensors = {}
        for name, entry in header.tensors.items():
            raw = _read_exactly(fd, header.data_start + entry.begin, entry.end - entry.begin, path)
            tensors[name] = _to_float32(raw, entry)
    finally:
        os.close(fd)
    return tensors, header.metadata


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """Safetensors bytes of float32 `tensors`: same tensors and metadata, same bytes."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    blobs, position = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        blob = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [position, position + len(blob)]}
        blobs.append(blob)
        position += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned, as the safetensors package writes it
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)
