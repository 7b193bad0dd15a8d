"""ONNX Runtime sessions (provider choice, quiet fallback, safe loading) and the `infer` verb."""

from __future__ import annotations

import json
import os
from argparse import Namespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from convstudio.backends.onnx.export import export_model
from convstudio.backends.onnx.runtime import CPU, CUDA, open_session, run
from convstudio.designer.cli.main import main
from convstudio.designer.cli.verb_infer import TIME_LIMIT, run_args
from convstudio.ir.errors import DesignError
from convstudio.ir.templates import build_template


def _cuda_usable() -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    try:
        open_session(export_model(build_template("lenet")), "cuda")
    except DesignError:
        return False
    return True


CUDA_USABLE = _cuda_usable()


@pytest.fixture(scope="module")
def lenet_model() -> onnx.ModelProto:
    return export_model(build_template("lenet"))


@pytest.fixture
def model_file(tmp_path, lenet_model):
    path = tmp_path / "lenet.onnx"
    path.write_bytes(lenet_model.SerializeToString())
    return path


def test_open_session_accepts_path_str_bytes_and_proto(model_file, lenet_model):
    x = np.ones((2, 1, 28, 28), np.float32)
    results = []
    for source in (model_file, str(model_file), model_file.read_bytes(), lenet_model):
        session, provider, _ = open_session(source, "cpu")
        assert provider == CPU
        results.append(run(session, {"x": x})[0])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_auto_takes_cuda_when_usable_else_cpu_with_one_line_note(lenet_model, capfd):
    session, provider, note = open_session(lenet_model, "auto")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    if CUDA_USABLE:
        assert provider == CUDA and note is None
    else:
        assert provider == CPU and session.get_providers()[0] == CPU
        assert note.startswith("CUDA is not usable") and "\n" not in note


def test_explicit_cuda_without_a_gpu_is_a_design_error(lenet_model, capfd):
    if CUDA_USABLE:
        _, provider, _ = open_session(lenet_model, "cuda")
        assert provider == CUDA
        return
    with pytest.raises(DesignError, match="CUDA is not usable"):
        open_session(lenet_model, "cuda")
    assert capfd.readouterr().err == ""


def test_optimizations_off_gives_the_same_result(lenet_model):
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    on = run(open_session(lenet_model, "cpu", optimize=True)[0], {"x": x})[0]
    off = run(open_session(lenet_model, "cpu", optimize=False)[0], {"x": x})[0]
    assert np.abs(on - off).max() <= 1e-5  # tolerance: reordered float sums only


def test_unknown_provider_and_wrong_input_are_design_errors(lenet_model):
    with pytest.raises(DesignError, match="provider"):
        open_session(lenet_model, "tpu")
    session, _, _ = open_session(lenet_model, "cpu")
    with pytest.raises(DesignError, match="inference failed"):
        run(session, {"x": np.ones((1, 1, 27, 28), np.float32)})


def test_corrupt_truncated_missing_and_folder_are_design_errors(tmp_path, model_file):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_file.read_bytes()[:500])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(256))
    for path in (truncated, garbage, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(DesignError):
            open_session(path, "cpu")


def _external_model(folder, location: str) -> object:
    """A one-node model whose weight lives in an external file at `location`."""
    weight = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[4])
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    weight.external_data.add(key="length", value="16")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_runs(tmp_path):
    np.arange(4, dtype=np.float32).tofile(tmp_path / "w.bin")
    session, _, _ = open_session(_external_model(tmp_path, "w.bin"), "cpu")
    np.testing.assert_array_equal(run(session, {"x": np.ones(4, np.float32)})[0], [1, 2, 3, 4])


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "missing"])
def test_external_data_outside_the_folder_is_refused(tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    np.arange(4, dtype=np.float32).tofile(secret)
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"absolute": str(secret), "dotdot": "../outside/secret.bin", "symlink": "link.bin", "missing": "none.bin"}[kind]
    if kind == "symlink":
        (folder / "link.bin").symlink_to(secret)
    with pytest.raises(DesignError):
        open_session(_external_model(folder, location), "cpu")


# ---- the `infer` verb ------------------------------------------------------------------------------


def test_cli_infer_random_prints_summary_latency_and_provider(model_file, capsys):
    assert main(["infer", str(model_file), "--random", "--batch", "2", "--runs", "3", "--provider", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "logits: shape 2x10 float32" in out and "argmax [" in out
    assert "median" in out and "p90" in out and "CPUExecutionProvider" in out


def test_cli_infer_json_with_npy_input(tmp_path, model_file, lenet_model, capsys):
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["infer", str(model_file), "--input", str(tmp_path / "x.npy"), "--runs", "2", "--json", "--provider", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = run(open_session(lenet_model, "cpu")[0], {"x": x})[0]
    (summary,) = result["outputs"]
    assert summary["shape"] == [1, 10] and summary["argmax"] == [int(expected.argmax())]
    assert abs(summary["max"] - float(expected.max())) <= 1e-6
    assert result["latency_ms"]["median"] > 0 and result["provider"] == CPU


def test_cli_infer_auto_says_in_one_line_when_it_falls_back(model_file, capfd):
    assert main(["infer", str(model_file), "--random", "--runs", "1"]) == 0
    captured = capfd.readouterr()
    assert captured.err == ""
    if not CUDA_USABLE:
        assert captured.out.splitlines()[0].startswith("CUDA is not usable")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((1, 1, 28, 28), np.float64), "must be float32"),
        (np.zeros((1, 1, 28, 27), np.float32), "must have shape Nx1x28x28"),
        (np.zeros((1, 28, 28), np.float32), "must have shape"),
    ],
)
def test_cli_infer_wrong_input_exits_2_with_one_line(tmp_path, model_file, capsys, array, message):
    np.save(tmp_path / "x.npy", array)
    assert main(["infer", str(model_file), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cli_infer_bad_files_exit_2(tmp_path, model_file, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(model_file.read_bytes()[:300])
    not_npy = tmp_path / "x.npy"
    not_npy.write_text("hello")
    cases = [
        [str(tmp_path / "missing.onnx"), "--random"],
        [str(corrupt), "--random"],
        [str(model_file), "--input", str(tmp_path / "absent.npy")],
        [str(model_file), "--input", str(not_npy)],
        [str(model_file), "--input", f"nosuch={not_npy}"],
    ]
    for args in cases:
        assert main(["infer", *args]) == 2, args
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines)


def test_cli_infer_explicit_cuda_without_gpu_exits_2(model_file, capfd):
    if CUDA_USABLE:
        pytest.skip("a GPU is usable here: --provider cuda runs")
    assert main(["infer", str(model_file), "--random", "--provider", "cuda"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: CUDA is not usable") and len(err.strip().splitlines()) == 1


def test_cli_infer_needs_exactly_one_input_source(model_file, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(model_file)])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["infer", str(model_file), "--random", "--input", str(tmp_path / "x.npy")])


def _tiny_model(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path.write_bytes(model.SerializeToString())
    return path


def _vi(name, shape, elem=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def test_cli_infer_hostile_models_exit_2_with_one_line(tmp_path, capsys):
    cycle = _tiny_model(tmp_path / "cycle.onnx", [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                        [_vi("x", ["N", 4])], [_vi("b", ["N", 4])])
    mixed = _tiny_model(tmp_path / "types.onnx", [helper.make_node("Add", ["x", "c"], ["y"])], [_vi("x", ["N", 4])], [_vi("y", ["N", 4])],
                        [onnx.numpy_helper.from_array(np.ones(4, np.int64), "c")])
    huge = _tiny_model(tmp_path / "huge.onnx", [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 100000, 100000, 100000])],
                       [_vi("y", ["N", 100000, 100000, 100000])])
    for path in (cycle, mixed, huge):
        assert main(["infer", str(path), "--random", "--provider", "cpu"]) == 2, path
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "too large" in lines[2]


def test_cli_infer_run_failure_is_our_one_line_without_onnxruntime_log(tmp_path, capfd):
    """A model that fails inside ONNX Runtime's run: its coloured [E:onnxruntime:...] log line must not show."""
    reshape = _tiny_model(tmp_path / "reshape.onnx", [helper.make_node("Reshape", ["x", "s"], ["y"])], [_vi("x", ["N", 3, 4, 4])],
                          [_vi("y", [None, None])], [onnx.numpy_helper.from_array(np.array([1, 48], np.int64), "s")])
    assert main(["infer", str(reshape), "--random", "--batch", "2", "--provider", "cpu"]) == 2
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "onnxruntime:" not in captured.err and "\x1b" not in captured.err
    assert captured.err.startswith("error: inference failed: The input tensor cannot be reshaped") and "Reshape node" in captured.err


def test_run_args_reports_every_run_from_its_child_process(model_file):
    ticks = []
    args = Namespace(model=str(model_file), random=True, input=None, batch=1, seed=0, provider="cpu", runs=3, warmup=2,
                     no_optimize=False, max_memory=None, time_limit=TIME_LIMIT)
    result = run_args(args, lambda: ticks.append(1))
    assert len(ticks) == 5 and result["runs"] == 3 and result["outputs"][0]["shape"] == [1, 10]
    with pytest.raises(DesignError, match="runs must be at least 1") as err:
        run_args(Namespace(**{**vars(args), "runs": 0}))
    assert err.value.where == "--runs/--warmup"
