"""Bad and hostile ONNX files: one DesignError line, exit 2 from `convstudio import`, nothing read outside the folder."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convstudio.backends.onnx import fold, safety
from convstudio.backends.onnx.importer import import_model
from convstudio.designer.cli.main import main
from convstudio.ir.errors import DesignError
from tests.backends.onnx_checks import import_checked


def conv_model(weight_location: str | None = None, x_type=TensorProto.FLOAT, dims=("N", 3, 8, 8)) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.full((2, 3, 3, 3), 0.5, np.float32), "w")
    if weight_location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", weight_location), ("offset", "0"), ("length", str(2 * 3 * 3 * 3 * 4))):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", x_type, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, None, None])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def refuse(path: Path, capsys, tmp_path: Path, expect: str) -> str:
    """Both the API and the CLI refuse `path` with one line; the CLI exits 2 and writes nothing."""
    with pytest.raises(DesignError) as err:
        import_model(path)
    line = err.value.line()
    assert "\n" not in line and expect in line, line
    out = tmp_path / "out" / "design.json"
    out.parent.mkdir(exist_ok=True)
    assert main(["import", str(path), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert not any(out.parent.iterdir())
    return line


@pytest.fixture
def opened(monkeypatch):
    """Every path the safety module opens (external data is read only there)."""
    paths: list[Path] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        paths.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(safety, "open", recording_open, raising=False)
    return paths


def test_truncated_protobuf(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    data = conv_model().SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    refuse(path, capsys, tmp_path, "m.onnx")


def test_corrupt_protobuf(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    refuse(path, capsys, tmp_path, "not")


def test_int64_input_to_conv(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(x_type=TensorProto.INT64).SerializeToString())
    refuse(path, capsys, tmp_path, "unsupported type: tensor(int64)")


def test_string_tensors(tmp_path, capsys):
    model = conv_model()
    model.graph.initializer[0].CopyFrom(helper.make_tensor("w", TensorProto.STRING, [2, 3, 3, 3], [b"a"] * 54))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    refuse(path, capsys, tmp_path, "tensor(string)")


def test_graph_with_a_cycle(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
        "cycle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    refuse(path, capsys, tmp_path, "topologically sorted")


def test_absurd_input_dimensions(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(dims=("N", 3, 2**31, 2**31)).SerializeToString())
    refuse(path, capsys, tmp_path, "absurdly large")


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand"])
def test_absurd_folded_constant_is_not_materialized(tmp_path, capsys, op):
    inputs = ["shape"] if op == "ConstantOfShape" else ["one", "shape"]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 4])],
        [numpy_helper.from_array(np.array([2**20, 2**20, 4], np.int64), "shape"), numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    line = refuse(path, capsys, tmp_path, op)
    assert "1048576" in line


def test_external_data_inside_the_folder_loads(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.full((2, 3, 3, 3), 0.5, np.float32).tobytes())
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model("weights.bin").SerializeToString())
    design, _ = import_checked(path)
    conv = next(n for n in design.graph if n.op == "Conv2d")
    assert np.all(conv.params["weight"] == 0.5)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "missing"])
def test_external_data_outside_the_folder_or_missing(tmp_path, capsys, opened, kind):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 512)
    location = {"absolute": str(secret), "dotdot": "../secret.bin", "symlink": "link.bin", "missing": "nothere.bin"}[kind]
    if kind == "symlink":
        os.symlink(secret, folder / "link.bin")
    path = folder / "m.onnx"
    path.write_bytes(conv_model(location).SerializeToString())
    line = refuse(path, capsys, tmp_path, "tensor 'w'")
    assert ("does not exist" in line) == (kind == "missing")
    assert secret.resolve() not in opened
    assert all(folder.resolve() in p.parents for p in opened)


def test_external_data_range_past_the_end_of_its_file(tmp_path, capsys, opened):
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 100)
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model("weights.bin").SerializeToString())
    line = refuse(path, capsys, tmp_path, "bytes 0..216")
    assert "which has 100" in line and opened == []


def test_infer_refuses_hostile_files_with_one_line(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    path.write_bytes(conv_model("../secret.bin").SerializeToString())
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 512)
    assert main(["infer", str(path), "--random"]) == 2
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(conv_model().SerializeToString()[:40])
    assert main(["infer", str(truncated), "--random"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "outside the model's folder" in lines[0] and "truncated or corrupt" in lines[1]


# ---- nothing from the file runs without a bound ----------------------------------------------------


def endless_loop_model(declare: bool = True, scan: bool = False) -> onnx.ModelProto:
    """x -> Loop (2**62 trips of v + 1, a valid model) -> Relu; `declare` states the Loop output's shape in value_info."""
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)]
    body_nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])]
    if scan:
        body_nodes.append(helper.make_node("Identity", ["v_in"], ["each"]))
        body_outputs.append(helper.make_tensor_value_info("each", TensorProto.FLOAT, None))
    body = helper.make_graph(
        body_nodes,
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        body_outputs,
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "go", "x"], ["v", "all"] if scan else ["v"], body=body), helper.make_node("Relu", ["v"], ["y"])],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(2**62, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go")],
    )
    if declare:
        graph.value_info.append(helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", 4]))
        if scan:
            graph.value_info.append(helper.make_tensor_value_info("all", TensorProto.FLOAT, [None, "N", 4]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`convstudio ARGS` in a child process: a regression that hangs fails here instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "convstudio.designer", *args], capture_output=True, text=True, timeout=timeout)


def test_endless_loop_with_declared_shapes_imports_as_opaque_without_running(tmp_path):
    path = tmp_path / "loop.onnx"
    path.write_bytes(endless_loop_model().SerializeToString())
    out = tmp_path / "d.json"
    done = cli("import", str(path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "opaque" in done.stdout and "(Loop)" in done.stdout
    design, report = import_checked(path)
    (loop,) = [n for n in design.graph if n.op == "Opaque" and n.attrs["onnx_op"] == "Loop"]
    assert loop.attrs["output_shapes"] == [[4]] and report["counts"]["opaque"] >= 1


@pytest.mark.parametrize("scan", [False, True], ids=["undeclared", "per-iteration-output"])
def test_endless_loop_whose_shapes_only_a_run_tells_is_refused_in_one_line(tmp_path, capsys, scan):
    path = tmp_path / "loop.onnx"
    path.write_bytes(endless_loop_model(declare=scan, scan=scan).SerializeToString())
    done = cli("import", str(path), "-o", str(tmp_path / "d.json"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "known only by running" in done.stderr and ("output 'all'" if scan else "output 'v'") in done.stderr
    refuse(path, capsys, tmp_path, "Loop")


def test_custom_op_takes_the_shapes_the_file_declares(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["m"], domain="com.example"), helper.make_node("Relu", ["m"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    refuse(path, capsys, tmp_path, "declare the shape in the model's value_info")
    model.graph.value_info.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 6]))
    path.write_bytes(model.SerializeToString())
    design, _ = import_checked(path)
    (mystery,) = [n for n in design.graph if n.op == "Opaque"]
    assert mystery.attrs["output_shapes"] == [[6]] and mystery.attrs["domain"] == "com.example"


def _node_with(op: str, inputs: list[np.ndarray], **attrs) -> tuple[onnx.NodeProto, list[np.ndarray]]:
    return helper.make_node(op, [f"i{k}" for k in range(len(inputs))], ["o"], **attrs), inputs


def test_folding_never_runs_control_flow_or_ops_of_unbounded_cost():
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c2"])], "b",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c2", TensorProto.BOOL, [])])
    loop = helper.make_node("Loop", ["n", "c"], [], body=body)
    branch = helper.make_node("If", ["c"], ["o"], then_branch=body, else_branch=body)
    matmul = helper.make_node("MatMul", ["a", "b"], ["o"])
    regex = helper.make_node("RegexFullMatch", ["s"], ["o"], pattern="(a+)+$")
    for node in (loop, branch, matmul, regex):
        assert not fold.foldable(node), node.op_type
    with pytest.raises(fold.CannotFold, match="not evaluated at import"):
        fold.evaluate(loop, [np.array(2**62, np.int64), np.array(True)], 13)


def test_folding_checks_sizes_before_allocating():
    tracemalloc.start()
    try:
        cases = [
            _node_with("Add", [np.ones((2**15, 1), np.float32), np.ones((1, 2**15), np.float32)]),  # a 4 GiB broadcast
            _node_with("Gather", [np.ones((2**4, 2**14), np.float32), np.zeros((2**15,), np.int64)]),  # 2**29 elements
            _node_with("Tile", [np.ones((4, 4), np.float32), np.array([2**20, 2**20], np.int64)]),
            _node_with("Range", [np.array(0, np.int64), np.array(2**62, np.int64), np.array(1, np.int64)]),
            _node_with("Tile", [np.ones((4, 4), np.float32), np.array([2**9, 2**9], np.int64)]),  # 2**22 elements: past the reference bound
        ]
        for node, inputs in cases:
            with pytest.raises(fold.CannotFold):
                fold.evaluate(node, inputs, 13)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, peak
    small, inputs = _node_with("Tile", [np.arange(4, dtype=np.float32).reshape(2, 2), np.array([2, 3], np.int64)])
    (tiled,) = fold.evaluate(small, inputs, 13)
    np.testing.assert_array_equal(tiled, np.tile(inputs[0], (2, 3)))


def test_infer_stops_an_endless_run_at_its_time_limit(tmp_path, capfd):
    path = tmp_path / "loop.onnx"
    path.write_bytes(endless_loop_model().SerializeToString())
    start = time.monotonic()
    assert main(["infer", str(path), "--random", "--provider", "cpu", "--time-limit", "2"]) == 2
    assert time.monotonic() - start < 60
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: running the model in ONNX Runtime exceeded the time limit of 2 s")
    assert "loop.onnx" in err


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "inf"])
def test_infer_time_limit_must_be_a_positive_number(tmp_path, capsys, limit):
    path = tmp_path / "loop.onnx"
    path.write_bytes(endless_loop_model().SerializeToString())
    assert main(["infer", str(path), "--random", f"--time-limit={limit}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "time limit must be a positive number of seconds" in err and "--time-limit" in err


# ---- what import writes validates; every error line is printable -------------------------------------


@pytest.mark.parametrize("op, bias", [("Conv", np.zeros(0, np.float32)), ("Conv", np.zeros(3, np.float32)), ("ConvTranspose", np.zeros(0, np.float32))])
def test_conv_bias_of_the_wrong_size_is_refused(tmp_path, capsys, op, bias):
    model = conv_model()
    model.graph.node[0].op_type = op
    if op == "ConvTranspose":  # its weight is (in, out, kh, kw)
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((3, 2, 3, 3), 0.5, np.float32), "w"))
    model.graph.node[0].input.append("b")
    model.graph.initializer.append(numpy_helper.from_array(bias, "b"))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    line = refuse(path, capsys, tmp_path, f"{op} bias has shape {list(bias.shape)}")
    assert "node 'y'" in line


@pytest.mark.parametrize("location", ["w\x00.bin", "w\n.bin", "w\x1b[31m.bin"])
def test_external_data_location_with_a_control_character_is_printed_escaped(tmp_path, capsys, opened, location):
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model(location).SerializeToString())
    line = refuse(path, capsys, tmp_path, "control character")
    assert line.isprintable() and repr(location)[1:-1] in line and opened == []
    assert main(["infer", str(path), "--random"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err[:-1].isprintable() and "control character" in err
