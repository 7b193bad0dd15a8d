"""Bad and hostile ONNX files: one DesignError line, exit 2 from `convstudio import`, nothing read outside the folder."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convstudio.backends.onnx import safety
from convstudio.backends.onnx.importer import import_model
from convstudio.designer.cli.main import main
from convstudio.ir.errors import DesignError


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
    design, _ = import_model(path)
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
