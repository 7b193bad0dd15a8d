"""INT8 through ONNX Runtime's static quantization, and float and int8 measured side by side.

`quantize_model` runs `quant_pre_process` (shape inference and graph cleanup) and then `quantize_static` in
QDQ format with per-channel weights, calibrated (min-max) on batches of real samples. `compare_models` runs
both models on the same batches: size, accuracy against the data's labels, and latency from interleaved
runs (median per model), so that load on the machine hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from convstudio.backends.onnx.runtime import open_session, run
from convstudio.backends.onnx.safety import read_model
from convstudio.ir.design import Design, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph

CALIB_SAMPLES = 256
QDQ_OPSET = 13  # per-channel DequantizeLinear (its axis attribute) needs opset 13
BATCH = 32


def model_input(model: onnx.ModelProto, where: str) -> tuple[str, tuple[int, ...]]:
    """(name, per-sample shape) of the model's only input; the batch dimension may be symbolic."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise DesignError(f"quantization with data needs a model with one input, this one has {len(inputs)}", where)
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    if not dims or any(d < 1 for d in shape):
        raise DesignError(f"input '{inputs[0].name}' needs fixed dimensions after the batch", where)
    return inputs[0].name, shape


def dataset_arrays(spec: str, shape: tuple[int, ...], val_split: float = 0.2, seed: int = 0) -> dict:
    """The data set fitted to `shape`: {x, labels, calib (training rows), eval (validation rows), source}.

    The split is the one `train` makes with the same `val_split` and `seed`, so the accuracy is on held-out samples.
    """
    from convstudio.backends.torch.data import class_labels, fit_inputs, read_raw, split_indices

    x, y, source, resizable = read_raw(spec, Design(Graph("data")), shape)
    if len(x) == 0:
        raise DesignError("the dataset is empty", f"dataset '{source}'")
    x = np.ascontiguousarray(fit_inputs(x.astype(np.float32), shape, resizable, source, "input"), dtype=np.float32)
    labels = class_labels(y, source)
    if labels is None:
        raise DesignError("accuracy needs integer class labels in y (1-d)", f"dataset '{source}'")
    train, val = split_indices(len(x), val_split, seed)
    return {"x": x, "labels": labels, "calib": train, "eval": val if len(val) else train, "source": source}


class BatchReader(CalibrationDataReader):
    """A CalibrationDataReader over fixed batches of one input."""

    def __init__(self, name: str, x: np.ndarray, batch: int):
        self.batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantize_model(model: bytes | Path | str, calib: np.ndarray, batch: int = BATCH) -> bytes:
    """The int8 (QDQ, per-channel weights) version of a float model, calibrated on the samples `calib`."""
    proto, where = read_model(model)
    name, _ = model_input(proto, where)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if opset < QDQ_OPSET:
        from onnx import version_converter

        proto = version_converter.convert_version(proto, QDQ_OPSET)
    reader = BatchReader(name, calib, batch)
    with tempfile.TemporaryDirectory() as folder:
        src, pre, out = (Path(folder) / f for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(proto.SerializeToString())
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as err:  # onnxruntime's quantizer raises plain exceptions for models it cannot handle
            raise DesignError(f"onnxruntime cannot quantize the model: {' '.join(str(err).split())[:240]}", where) from None
        return out.read_bytes()


def accuracy(session, name: str, x: np.ndarray, labels: np.ndarray, batch: int = BATCH) -> float:
    """Share of samples whose largest output is their label."""
    hits = 0
    for i in range(0, len(x), batch):
        logits = run(session, {name: x[i:i + batch]})[0]
        hits += int((logits.reshape(len(logits), -1).argmax(1) == labels[i:i + batch]).sum())
    return hits / len(x)


def compare_models(models: dict[str, bytes], data: dict, batch: int = BATCH, runs: int = 30, threads: int = 1) -> dict:
    """{label: {bytes, accuracy, latency_ms}} for each model on the same samples; latencies are medians of interleaved runs."""
    sessions = {}
    for label, blob in models.items():
        session, _, _ = open_session(blob, provider="cpu", threads=threads)
        sessions[label] = session
    name = sessions[next(iter(sessions))].get_inputs()[0].name
    x, labels = data["x"][data["eval"]], data["labels"][data["eval"]]
    probe = {name: x[:batch]}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for i in range(runs + 3):
        for label, session in sessions.items():
            start = time.perf_counter()
            run(session, probe)
            if i >= 3:  # the first runs warm caches and allocators
                times[label].append((time.perf_counter() - start) * 1000)
    return {label: {"bytes": len(models[label]), "accuracy": accuracy(session, name, x, labels, batch),
                    "latency_ms": statistics.median(times[label]), "batch": len(probe[name])} for label, session in sessions.items()}


def quantize_file(src: Path | str, dst: Path | str, data_spec: str, calib_samples: int = CALIB_SAMPLES, val_split: float = 0.2, seed: int = 0,
                  runs: int = 30, threads: int = 1) -> dict:
    """Quantize the model in `src` to `dst` with calibration samples from the data; report float against int8."""
    src, dst = Path(src), Path(dst)
    if calib_samples < 1:
        raise DesignError(f"must be at least 1, got {calib_samples}", "--calib-samples")
    if dst.resolve() == src.resolve():
        raise DesignError("would overwrite the model being quantized; write elsewhere", f"file '{dst}'")
    proto, where = read_model(src)
    _, shape = model_input(proto, where)
    data = dataset_arrays(data_spec, shape, val_split, seed)
    float_bytes = proto.SerializeToString()
    calib = data["x"][data["calib"][:calib_samples]]
    int8 = quantize_model(float_bytes, calib)
    report = compare_models({"float": float_bytes, "int8": int8}, data, runs=runs, threads=threads)
    write_atomic(dst, int8)
    return {"input": str(src), "output": str(dst), "source": data["source"], "calibration_samples": len(calib),
            "eval_samples": len(data["eval"]), **report, "smaller": report["float"]["bytes"] / report["int8"]["bytes"]}
