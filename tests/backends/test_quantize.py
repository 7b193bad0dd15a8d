"""INT8 static quantization through ONNX Runtime: `convstudio quantize`, `export --int8`, and bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convstudio.backends.onnx.export import export_file
from convstudio.backends.onnx.quantize import dataset_arrays, quantize_file
from convstudio.backends.onnx.runtime import open_session, run
from convstudio.backends.weights import load_design_weights
from convstudio.designer.cli.main import main
from convstudio.ir.design import load
from tests.backends.distill_fixtures import trained_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(teacher design, its float ONNX export, data)."""
    folder = tmp_path_factory.mktemp("quantize")
    teacher, data = trained_teacher(folder)
    design = load(teacher)
    load_design_weights(design, required=True)
    path = folder / "teacher.onnx"
    export_file(design, path)
    return teacher, path, data


def test_int8_model_runs_is_smaller_and_as_accurate(model, tmp_path):
    _, float_path, data = model
    out = tmp_path / "q.onnx"
    report = quantize_file(float_path, out, str(data), runs=3)
    q = onnx.load(str(out))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    scales = [numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("_scale")]
    assert any(s.ndim == 1 and len(s) > 1 for s in scales)  # per-channel weight scales
    assert report["int8"]["bytes"] == out.stat().st_size < report["float"]["bytes"] == float_path.stat().st_size
    assert abs(report["int8"]["accuracy"] - report["float"]["accuracy"]) <= 0.05
    arrays = dataset_arrays(str(data), (1, 8, 8), 0.25, 0)
    session, _, _ = open_session(out, provider="cpu")
    logits = run(session, {session.get_inputs()[0].name: arrays["x"][:16]})[0]
    assert logits.shape == (16, 10) and np.isfinite(logits).all()


def test_quantize_and_export_int8_cli(model, tmp_path, capsys):
    teacher, float_path, data = model
    original = float_path.read_bytes()
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(float_path), "--data", str(data), "-o", str(out), "--runs", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out) and report["smaller"] > 1 and report["float"]["latency_ms"] > 0 and report["int8"]["latency_ms"] > 0
    assert float_path.read_bytes() == original
    exported = tmp_path / "e.onnx"
    assert main(["export", str(teacher), "-o", str(exported), "--int8", "--calib", str(data), "--runs", "3"]) == 0
    text = capsys.readouterr().out
    assert "int8 is" in text and "x smaller" in text and exported.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx", "q.onnx"]  # the float temporary is gone


@pytest.mark.parametrize("argv, message", [
    (["quantize", "{teacher}", "--data", "{data}", "-o", "{tmp}/q.onnx"],
     "error: quantize reads an ONNX model (.onnx); export a design first, file '{teacher}'"),
    (["quantize", "{onnx}", "--data", "{tmp}/none.npz", "-o", "{tmp}/q.onnx"], "error: no such file or folder, dataset '{tmp}/none.npz'"),
    (["quantize", "{onnx}", "--data", "{data}", "-o", "{onnx}"], "error: would overwrite the model being quantized; write elsewhere, file '{onnx}'"),
    (["quantize", "{onnx}", "--data", "{data}", "-o", "{tmp}/q.onnx", "--runs", "0"], "error: must be at least 1, got 0, --runs"),
    (["quantize", "{onnx}", "--data", "{data}", "-o", "{tmp}/no/q.onnx"], "error: folder '{tmp}/no' does not exist, file '{tmp}/no/q.onnx'"),
    (["export", "{teacher}", "-o", "{tmp}/q.onnx", "--int8"], "error: --int8 and --calib DATA go together, --calib"),
    (["export", "{teacher}", "-o", "{tmp}/q.onnx", "--calib", "{data}"], "error: --int8 and --calib DATA go together, --int8"),
])
def test_bad_input_is_one_line_and_writes_nothing(model, tmp_path, capsys, argv, message):
    teacher, float_path, data = model
    names = {"teacher": teacher, "onnx": float_path, "data": data, "tmp": tmp_path}
    assert main([a.format(**names) for a in argv]) == 2
    assert capsys.readouterr().err.strip() == message.format(**names)
    assert list(tmp_path.iterdir()) == []
