"""Conformance over the models the `onnx` package ships in onnx/backend/test/data.

Every model either imports or is refused with one DesignError line. Every model whose ops the
registry covers (no Opaque node) runs through import -> torch lowering and import -> export ->
onnxruntime and matches the stored outputs (or, for the `light/` models, which store no inputs,
onnxruntime's outputs of the original model on a fixed random input). Models with opaque nodes
run the export -> onnxruntime round trip. Tolerance: |a - b| <= 1e-4 + 1e-3·|b|.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from backends.onnx.importer import import_model
from ir.errors import DesignError

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
ATOL, RTOL = 1e-4, 1e-3
MAX_QUICK_PARAMS = 30_000_000


def all_models() -> list[Path]:
    found = sorted(Path(p) for p in glob.glob(str(DATA / "*" / "*" / "model.onnx")))
    return found + sorted(DATA.glob("light/*.onnx"))


def _label(path: Path) -> str:
    return str(path.relative_to(DATA).parent if path.name == "model.onnx" else path.relative_to(DATA))


def _cases(path: Path, model: onnx.ModelProto) -> list[tuple[list[np.ndarray], list[np.ndarray] | None]]:
    """(inputs, expected outputs) per stored test data set; expected None for light models."""
    if path.name != "model.onnx":
        inits = {t.name for t in model.graph.initializer}
        rng = np.random.default_rng(0)
        inputs = []
        for vi in model.graph.input:
            if vi.name not in inits:
                shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
                inputs.append(rng.standard_normal(shape).astype(np.float32))
        return [(inputs, None)]
    cases = []
    for folder in sorted(path.parent.glob("test_data_set_*")):
        load = lambda f: numpy_helper.to_array(onnx.load_tensor(str(f)))  # noqa: E731
        ins = [load(f) for f in sorted(folder.glob("input_*.pb"), key=lambda f: int(f.stem.split("_")[1]))]
        outs = [load(f) for f in sorted(folder.glob("output_*.pb"), key=lambda f: int(f.stem.split("_")[1]))]
        cases.append((ins, outs))
    return cases


def _session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _run_onnx(model_bytes: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = _session(model_bytes)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _run_torch(graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from backends.torch.lower import lower

    module = lower(graph).eval()
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.array(x, copy=True)) for x in inputs])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.numpy() for o in outs]


def _mismatch(got: list[np.ndarray], want: list[np.ndarray]) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"output {k} has shape {list(g.shape)}, expected {list(w.shape)}"
        if not np.allclose(g, w, atol=ATOL, rtol=RTOL, equal_nan=True):
            return f"output {k} differs by {float(np.max(np.abs(g.astype(np.float64) - w))):.3g}"
    return None


def _export_opset(graph) -> int | None:
    opsets = [n.attrs.get("opset", 11) for n in graph if n.op == "Opaque" and n.attrs.get("batched", True)]
    return max(opsets) if opsets else None


def _param_count(model: onnx.ModelProto) -> int:
    total = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in {t.name for t in model.graph.initializer}:
            shape = next(t for t in model.graph.initializer if t.name == node.input[0])
            total += int(np.prod(numpy_helper.to_array(shape)))
    return total


def check_model(path: Path) -> tuple[str, str]:
    """('passed' | 'failed' | 'skipped', detail) for one model."""
    from backends.onnx.export import export_model

    model = onnx.load(str(path))
    params = _param_count(model)
    if params > MAX_QUICK_PARAMS:
        return "skipped", f"too large for the quick suite ({params:,} weights)"
    try:
        design, report = import_model(path)
    except DesignError as e:
        return "skipped", f"unsupported: {e.what}"
    graph = design.graph
    opaque = sorted({entry["op"] for entry in report["opaque"]})
    cases = _cases(path, model)
    exported = export_model(graph, opset=_export_opset(graph)).SerializeToString()
    checked = []
    for inputs, expected in cases:
        if expected is None:
            expected = _run_onnx(model.SerializeToString(), inputs)
        problem = _mismatch(_run_onnx(exported, inputs), expected)
        if problem:
            return "failed", f"export -> onnxruntime: {problem}"
        checked.append("onnxruntime")
        if not opaque:
            problem = _mismatch(_run_torch(graph, inputs), expected)
            if problem:
                return "failed", f"torch lowering: {problem}"
            checked.append("torch")
    if opaque:
        return "passed", f"export round trip only (opaque {', '.join(opaque)})"
    return "passed", f"{len(cases)} data set(s) through torch and onnxruntime"


def test_every_shipped_model_imports_or_is_refused_with_one_line():
    models = all_models()
    assert len(models) > 100
    refused = 0
    for path in models:
        try:
            design, report = import_model(path)
        except DesignError as e:
            refused += 1
            assert "\n" not in e.line() and e.what
            continue
        assert set(report["counts"]) == {"mapped", "folded", "opaque"}
        assert design.graph.inputs and design.graph.outputs
    print(f"\n{len(models)} models: {len(models) - refused} imported, {refused} refused with a reason")


@pytest.mark.skipif(not os.path.isdir(DATA), reason="onnx test data not installed")
def test_conformance_of_covered_models():
    results = {"passed": [], "failed": [], "skipped": []}
    covered = 0
    for path in all_models():
        status, detail = check_model(path)
        results[status].append((_label(path), detail))
        covered += status != "skipped" and "opaque" not in detail
    print(
        f"\nconformance: {len(results['passed']) + len(results['failed'])} ran, {len(results['passed'])} passed "
        f"({covered} fully covered: torch and onnxruntime), {len(results['failed'])} failed, "
        f"{len(results['skipped'])} skipped as unsupported"
    )
    for status in ("failed", "skipped"):
        for label, detail in results[status]:
            print(f"  {status}: {label}: {detail}")
    assert not results["failed"], results["failed"]
    assert covered >= 40
