"""Conformance over the models the `onnx` package ships in onnx/backend/test/data.

Every model either imports or is refused with one DesignError line. Every model whose ops the
registry covers (no Opaque node) runs through import -> torch lowering and import -> export ->
onnxruntime and matches the stored outputs (or, for the `light/` models, which store no inputs,
onnxruntime's outputs of the original model on a fixed random input). Models with opaque nodes
run the export -> onnxruntime round trip, against the stored outputs or, where onnxruntime itself
differs from those, against onnxruntime on the original. Tolerance: |a - b| <= 1e-4 + 1e-3·|b|.

This onnx build ships no `node/` folder; the node tests it would hold are generated from
`onnx.backend.test.case.node` (the source of that folder) and run the same way. The three `light/`
models with over 30 M weights (alexnet, zfnet512, vgg19) are imported and counted in the quick run;
CONVSTUDIO_FULL_CONFORMANCE=1 runs their numerics too (about a minute more).
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.importer import import_model
from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from tests.backends.onnx_checks import assert_validates

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
ATOL, RTOL = 1e-4, 1e-3
MAX_QUICK_PARAMS = 30_000_000
FULL = os.environ.get("CONVSTUDIO_FULL_CONFORMANCE") == "1"


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


def _runs(model_bytes: bytes, inputs: list[np.ndarray]) -> bool:
    try:
        _run_onnx(model_bytes, inputs)
    except Exception:  # onnxruntime's own exception types
        return False
    return True


def _run_torch(graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from convstudio.backends.torch.lower import lower

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


def _param_count(model: onnx.ModelProto) -> int:
    """Weights the model uses: float initializers read by a node plus ConstantOfShape-initialized tensors."""
    inits = {t.name: t for t in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    total = sum(int(np.prod(t.dims)) for t in inits.values() if t.data_type == onnx.TensorProto.FLOAT and t.name in used)
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            total += int(np.prod(numpy_helper.to_array(inits[node.input[0]])))
    return total


def check(source, model: onnx.ModelProto, cases, label: str, numerics: bool = True) -> tuple[str, str]:
    """('passed' | 'failed' | 'skipped' | 'counted', detail) for one model (`source`: its file or proto) and its data sets.

    `cases` are (inputs, expected outputs or None: onnxruntime's outputs of the original model).
    A refused import must be one DesignError line; an imported design must validate. Models with opaque nodes are checked by the
    round trip: onnxruntime on the original and on the re-exported model agree.
    """
    try:
        design, _ = import_model(source, name=label.replace("/", "_"))
    except DesignError as e:
        assert "\n" not in e.line() and e.what, label
        return "skipped", f"unsupported: {e.what}"
    try:
        assert_validates(design)
    except DesignError as e:
        return "failed", f"the imported design does not validate: {e.line()}"
    graph = design.graph
    opaque = sorted({n.attrs["onnx_op"] for n in graph if n.op == "Opaque"})
    if not numerics:
        params, stored = analyze(graph, "torchvision").total.params, _param_count(model)
        if opaque or params != stored:
            return "failed", f"opaque {opaque} or {params:,} params, the model stores {stored:,}"
        return "counted", f"imported without opaque nodes, {params:,} params as stored (numerics: CONVSTUDIO_FULL_CONFORMANCE=1)"
    try:
        exported = export_model(graph).SerializeToString()
    except DesignError as e:
        return "skipped", f"unsupported by the exporter: {e.line()}"
    original = model.SerializeToString()
    round_trip = []
    for inputs, expected in cases:
        try:
            expected = _run_onnx(original, inputs) if expected is None else expected
            got = _run_onnx(exported, inputs)
        except Exception as e:  # onnxruntime's own exception types
            if not _runs(original, inputs):
                return "skipped", f"onnxruntime cannot run the original ({type(e).__name__})"
            return "failed", f"onnxruntime cannot run the export ({type(e).__name__}: {str(e)[:120]})"
        problem = _mismatch(got, expected)
        if problem and opaque and _runs(original, inputs):
            # the kept ONNX nodes run in onnxruntime, which may differ from the stored outputs itself
            problem = _mismatch(got, _run_onnx(original, inputs))
            round_trip.append(True)
        if problem:
            return "failed", f"export -> onnxruntime: {problem}"
        if not opaque:
            problem = _mismatch(_run_torch(graph, inputs), expected)
            if problem:
                return "failed", f"torch lowering: {problem}"
    if opaque:
        note = "; onnxruntime itself differs from the stored outputs" if any(round_trip) else ""
        return "passed", f"export round trip (opaque {', '.join(opaque)}){note}"
    return "passed", f"{len(cases)} data set(s) through torch and onnxruntime"


def _summary(results: dict, what: str) -> int:
    """Print the counts and the failed/skipped models; returns how many ran fully covered."""
    ran = len(results["passed"]) + len(results["failed"])
    covered = sum("torch and onnxruntime" in detail for _, detail in results["passed"])
    print(
        f"\n{what}: {ran} ran, {len(results['passed'])} passed ({covered} fully covered: torch and onnxruntime, "
        f"{len(results['passed']) - covered} with opaque nodes: round trip), {len(results['failed'])} failed, "
        f"{len(results['skipped'])} skipped as unsupported, {len(results['counted'])} too large: imported and counted only"
    )
    for status in ("failed", "counted", "skipped"):
        for label, detail in results[status]:
            print(f"  {status}: {label}: {detail}")
    return covered


@pytest.mark.skipif(not os.path.isdir(DATA), reason="onnx test data not installed")
def test_conformance_of_shipped_models():
    models = all_models()
    assert len(models) > 100
    results = {"passed": [], "failed": [], "skipped": [], "counted": []}
    for path in models:
        model = onnx.load(str(path))
        label = _label(path)
        numerics = FULL or _param_count(model) <= MAX_QUICK_PARAMS
        status, detail = check(path, model, _cases(path, model), label, numerics)
        results[status].append((label, detail))
    covered = _summary(results, f"conformance over {len(models)} shipped models")
    assert not results["failed"], results["failed"]
    assert covered >= 40


def test_conformance_of_generated_node_tests():
    if (DATA / "node").is_dir():
        pytest.skip("node/ is shipped: the shipped-model test runs it")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases() if c.model is not None]
    results = {"passed": [], "failed": [], "skipped": [], "counted": []}
    for case in cases:
        data = [(list(ins), list(outs)) for ins, outs in case.data_sets]
        status, detail = check(case.model, case.model, data, case.name)
        results[status].append((case.name, detail))
    covered = _summary(results, f"conformance over {len(cases)} generated node tests")
    assert not results["failed"], results["failed"]
    assert covered >= 50
