"""Run ONNX models in ONNX Runtime: CUDA when onnxruntime can use a GPU, CPU otherwise.

Models are read through `backends.onnx.safety` (corrupt files, external data outside the model's
folder and invalid graphs are refused) and handed to onnxruntime as self-contained bytes.

onnxruntime prints provider load failures from C++ straight to stderr; session creation runs with
its log severity at 3 and file descriptor 2 redirected, and the first useful line of what it printed
becomes the one-line note that says why CUDA was not used.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from convstudio.backends.onnx.safety import load_external_data, read_model
from convstudio.ir.errors import DesignError

PROVIDERS = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MAX_INPUT_ELEMENTS = 2**31  # larger inputs are refused rather than allocated


@contextlib.contextmanager
def captured_stderr():
    """Redirect file descriptor 2 into a temporary file; yields a list that receives its text."""
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = os.dup(2)
        except OSError:
            yield text
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def _reason(log: str) -> str:
    """The most telling line of onnxruntime's CUDA failure output."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in log.splitlines()]
    for ln in lines:
        if "with error:" in ln:
            return ln.rsplit("with error:", 1)[1].strip()[:200]
    for ln in lines:
        if "Require" in ln or "CUDA" in ln:
            return ln.split("] ", 1)[-1].split(" Please ")[0].strip()[:200]
    return "onnxruntime could not start its CUDA provider"


def _model_bytes(model: str | bytes | Path | onnx.ModelProto) -> tuple[bytes, str]:
    """The model as self-contained bytes (external data checked and read in) and its name for errors."""
    if isinstance(model, onnx.ModelProto):
        load_external_data(model, None, "model")  # refuses tensors kept in external files
        return model.SerializeToString(), "model"
    if isinstance(model, str):
        model = Path(model)
    if isinstance(model, Path) and model.is_dir():
        raise DesignError("is a folder, not an ONNX model", f"file '{model}'")
    proto, where = read_model(model)
    return proto.SerializeToString(), where


def _session(source: bytes, providers: list[str], optimize: bool, threads: int):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def open_session(model: str | bytes | Path | onnx.ModelProto, provider: str = "auto", optimize: bool = True, threads: int = 0):
    """(session, provider used, note): `note` says in one line why CUDA was not used, else None.

    `threads` sets onnxruntime's intra-op threads (0: its default, one per core).
    """
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise DesignError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}", "--provider")
    source, where = _model_bytes(model)
    wants_cuda = provider in ("auto", "cuda") and CUDA in ort.get_available_providers()
    providers = [CUDA, CPU] if wants_cuda else [CPU]
    try:
        with captured_stderr() as log:
            session = _session(source, providers, optimize, threads)
    except Exception as err:  # onnxruntime raises its own exception types for invalid graphs
        detail = " ".join(str(err).split())
        detail = detail.split(" : ")[-1] if " : " in detail else detail
        raise DesignError(f"onnxruntime cannot load the model: {detail[:240]}", where) from None
    used = session.get_providers()[0]
    if provider == "cpu":
        return session, CPU, None
    if used == CUDA:
        return session, CUDA, None
    reason = _reason("".join(log)) if wants_cuda else "this onnxruntime build has no CUDA provider"
    if provider == "cuda":
        raise DesignError(f"CUDA is not usable: {reason}", "--provider cuda")
    return session, CPU, f"CUDA is not usable ({reason}); running on CPU"


def run(session, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the session on named inputs; returns the outputs in the model's order."""
    try:
        return session.run(None, inputs)
    except Exception as err:  # onnxruntime's InvalidArgument / Fail
        detail = " ".join(str(err).split())
        raise DesignError(f"inference failed: {detail.split(' : ')[-1][:240]}", "inputs") from None
