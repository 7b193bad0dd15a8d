"""Hostile input on the command line: absurd sizes refused before allocation (proved in a memory-limited
subprocess), integer literals past Python's digit limit, control characters in names, and sharing groups
whose members cannot share parameters. Every case is exit 2 and one printable line, with nothing written."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from convstudio.backends.weights import init_params, save_weights
from convstudio.ir.design import load
from tests.designer.cli_calls import cli, one_line

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet_digits.json"
ADDRESS_SPACE = 3 * 2**30  # the verbs run under this limit: a 6 GiB activation or a 120 GiB layer cannot be allocated
LONG = "1" + "0" * 4300  # 4301 digits, past Python's int max str digits


def lenet(folder: Path, side: int, name: str = "lenet") -> Path:
    """The shipped LeNet example on a 1 x side x side input (its fc1 grows with the input), without weights."""
    data = json.loads(EXAMPLE.read_text())
    data.pop("weights", None)
    data["name"] = name
    data["inputs"]["x"] = [1, side, side]
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def convolutional(folder: Path, side: int) -> Path:
    """A conv + ReLU + global pool on 1 x side x side: tiny weights, activations that grow with the input."""
    data = {
        "format": "convstudio.design", "version": 1, "name": "fcn", "inputs": {"x": [1, side, side]},
        "nodes": [{"name": "conv1", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 6, "kernel_size": 3, "padding": 1}},
                  {"name": "relu1", "op": "ReLU", "inputs": ["conv1"]},
                  {"name": "gap", "op": "GlobalAvgPool", "inputs": ["relu1"]},
                  {"name": "flat", "op": "Flatten", "inputs": ["gap"]}],
        "outputs": {"y": "flat"},
    }
    path = folder / "fcn.json"
    path.write_text(json.dumps(data))
    return path


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(folder: Path, *argv) -> subprocess.CompletedProcess:
    """`convstudio ARGV` in a subprocess that cannot map more than ADDRESS_SPACE bytes."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "convstudio.designer", *map(str, argv)], cwd=folder, env=env,
                          capture_output=True, text=True, preexec_fn=limit_address_space, timeout=600)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# ---- absurd sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["export", "lenet.json", "-o", "out.onnx"],
    ["codegen", "lenet.json", "-o", "out.py"],
    ["fuse", "lenet.json", "-o", "fused.json", "--verify"],
    ["train", "lenet.json", "--epochs", "1", "--no-progress"],
], ids=lambda argv: argv[0])
def test_an_absurd_input_is_refused_before_allocation(tmp_path, argv):
    lenet(tmp_path, 16384)
    before = snapshot(tmp_path)
    proc = run_limited(tmp_path, *argv)
    line = one_line(proc.returncode, proc.stderr, "the design needs", "node 'fc1' parameters 120 GiB", "--max-memory", "file 'lenet.json'")
    assert "above the" in line and "limit" in line
    assert snapshot(tmp_path) == before


def test_infer_refuses_activations_above_the_limit_before_running(tmp_path, capsys):
    design = convolutional(tmp_path, 16384)
    code, _, err = cli(capsys, "export", design, "-o", tmp_path / "fcn.onnx")
    one_line(code, err, "node 'conv1' activations 6 GiB at batch 1", "file '")
    assert cli(capsys, "export", design, "-o", tmp_path / "fcn.onnx", "--max-memory", "16G")[0] == 0  # the weights are tiny
    proc = run_limited(tmp_path, "infer", "fcn.onnx", "--random", "--provider", "cpu")
    one_line(proc.returncode, proc.stderr, "the model needs 12 GiB", "node 'conv1' activations 6 GiB at batch 1", "above the", "file 'fcn.onnx'")
    proc = run_limited(tmp_path, "infer", "fcn.onnx", "--random", "--provider", "cpu", "--max-memory", "1G", "--batch", "3")
    one_line(proc.returncode, proc.stderr, "at batch 3", "above the 1 GiB limit")
    code, _, err = cli(capsys, "import", tmp_path / "fcn.onnx", "-o", tmp_path / "imported.json")
    one_line(code, err, "the design needs 12 GiB", "node 'conv1' activations 6 GiB at batch 1", "fcn.onnx")
    assert not (tmp_path / "imported.json").exists() and not (tmp_path / "imported.safetensors").exists()


def test_without_the_check_the_same_export_runs_out_of_memory_in_one_line(tmp_path):
    lenet(tmp_path, 16384)
    proc = run_limited(tmp_path, "export", "lenet.json", "-o", "out.onnx", "--max-memory", "1000G")
    one_line(proc.returncode, proc.stderr, "ran out of memory", "command 'convstudio export'")
    assert not (tmp_path / "out.onnx").exists()


def test_a_raised_limit_lets_a_moderately_big_input_through(tmp_path, capsys):
    design = lenet(tmp_path, 128)  # fc1 has 2 M parameters: 7.5 MiB
    for argv in (["export", design, "-o", tmp_path / "m.onnx"], ["codegen", design, "-o", tmp_path / "m.py"],
                 ["fuse", design, "-o", tmp_path / "f.json", "--verify"]):
        code, _, err = cli(capsys, *argv, "--max-memory", "4M")
        one_line(code, err, "the design needs ", "node 'fc1' parameters 7.5 MiB", "above the 4 MiB limit")
        code, out, err = cli(capsys, *argv, "--max-memory", "512MiB")
        assert code == 0, err
        assert "wrote" in out
    code, out, err = cli(capsys, "infer", tmp_path / "m.onnx", "--random", "--provider", "cpu", "--runs", "1", "--max-memory", "4M")
    one_line(code, err, "the model needs ", "initializer 'fc1.weight' parameters 7.5 MiB", "above the 4 MiB limit")
    code, out, err = cli(capsys, "infer", tmp_path / "m.onnx", "--random", "--provider", "cpu", "--runs", "1", "--max-memory", "64M")
    assert code == 0 and "shape 1x10" in out, err


def test_compress_checks_the_rewritten_design_before_initializing_its_weights(tmp_path, capsys):
    design = lenet(tmp_path, 128)
    graph = load(design).graph
    init_params(graph)
    save_weights(graph, tmp_path / "lenet.safetensors")  # paired with lenet.json: the rewritten layers get fresh weights
    argv = ["compress", design, "--strategy", "width", "--param", "alpha=4", "-o", tmp_path / "wide.json"]
    code, _, err = cli(capsys, *argv, "--max-memory", "16M")
    one_line(code, err, "the design needs ", "node 'fc1' parameters 120 MiB", "above the 16 MiB limit", "lenet.json")
    assert not (tmp_path / "wide.json").exists()
    code, out, err = cli(capsys, *argv, "--max-memory", "1G")
    assert code == 0 and (tmp_path / "wide.safetensors").is_file(), err


@pytest.mark.usefixtures("one_thread")
def test_train_checks_what_training_needs_and_a_raised_limit_trains(tmp_path, capsys):
    design = lenet(tmp_path, 32)
    code, _, err = cli(capsys, "train", design, "--epochs", "1", "--no-progress", "--max-memory", "1M")
    one_line(code, err, "the design needs", "to train at batch", "above the 1 MiB limit", "file '")
    assert not (tmp_path / "lenet.safetensors").exists()
    code, out, err = cli(capsys, "train", design, "--epochs", "1", "--no-progress", "--max-memory", "256M")
    assert code == 0, err
    assert "epoch 1/1" in out and (tmp_path / "lenet.safetensors").is_file()


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "lots", "8 PB", "-1G", "1e9", "2G\n"])
def test_max_memory_takes_sizes_only(tmp_path, capsys, value):
    design = lenet(tmp_path, 8)
    code, _, err = cli(capsys, "export", design, "-o", tmp_path / "m.onnx", "--max-memory", value)
    one_line(code, err, "argument --max-memory", "command 'convstudio export'")
    assert not (tmp_path / "m.onnx").exists()


# ---- numbers past the digit limit -------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["validate", "cost", "export", "design"])
def test_a_4301_digit_literal_is_one_line_naming_the_field(tmp_path, capsys, verb):
    text = EXAMPLE.read_text().replace('"out_features": 120', f'"out_features": {LONG}')
    path = tmp_path / "long.json"
    path.write_text(text)
    argv = {"validate": [path], "cost": [path], "export": [path, "-o", tmp_path / "m.onnx"],
            "design": [path, "--screenshot", tmp_path / "s.png"]}[verb]
    code, _, err = cli(capsys, verb, *argv)
    one_line(code, err, "out_features must be an integer, got a 4,301-digit number", "node 'fc1'", "attrs.out_features", "long.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.json"]


def test_4301_digit_literals_anywhere_in_the_file(tmp_path, capsys):
    cases = {
        "inputs.x": ('"x": [1, 8, 8]', f'"x": [1, 8, {LONG}]'),
        "training.epochs": ('"epochs": 20', f'"epochs": {LONG}'),
        "training.optimizer.lr": ('"lr": 0.05', f'"lr": {LONG}'),
        "field version": ('"version": 1', f'"version": -{LONG}'),
    }
    for field, (old, new) in cases.items():
        path = tmp_path / "long.json"
        path.write_text(EXAMPLE.read_text().replace(old, new))
        code, _, err = cli(capsys, "validate", path)
        one_line(code, err, "4,301-digit number", field)


# ---- control characters in names ----------------------------------------------------------------------


def edited_example(tmp_path: Path, edit) -> Path:
    data = json.loads(EXAMPLE.read_text())
    data.pop("weights", None)
    edit(data)
    path = tmp_path / "named.json"
    path.write_text(json.dumps(data))
    return path


def rename_first(name: str):
    def edit(data):
        data["nodes"][0]["name"] = name
        data["nodes"][1]["inputs"] = [name]
    return edit


@pytest.mark.parametrize("edit, shown", [
    (rename_first("conv1\n"), "'conv1\\n'"),
    (rename_first("conv1\r\nerror: forged"), "conv1\\r\\nerror: forged"),
    (rename_first("co\x00nv1"), "co\\x00nv1"),
    (lambda d: d["nodes"][0].update(op="\x1b[31mConv2d\x1b[0m"), "unknown op '\\x1b[31mConv2d\\x1b[0m'"),
    (lambda d: [n.update(share="g\nroup") for n in d["nodes"][:2]], "'g\\nroup'"),
    (lambda d: d["outputs"].update({"out\u2028put": "fc3"}), "out\\u2028put"),
], ids=["trailing-newline", "crlf", "nul", "ansi-op", "share-newline", "line-separator"])
def test_control_characters_in_names_give_one_printable_line(tmp_path, capsys, edit, shown):
    path = edited_example(tmp_path, edit)
    code, _, err = cli(capsys, "validate", path)
    one_line(code, err, shown)


def test_control_characters_on_the_command_line_give_one_printable_line(tmp_path, capsys):
    code, _, err = cli(capsys, "validate", tmp_path / "no\nsuch\x1b[2J.json")
    one_line(code, err, "no such file", "no\\nsuch\\x1b[2J.json")
    design = lenet(tmp_path, 8)
    code, _, err = cli(capsys, "cost", design, "--input", "1x8\nx8\x1b")
    one_line(code, err, "1x8\\nx8\\x1b", "--input")
    code, _, err = cli(capsys, "train", design, "--optimizer", "ad\nam")
    one_line(code, err, "'ad\\nam'")


# ---- sharing groups that cannot share -------------------------------------------------------------------


def test_shared_linears_of_different_widths_are_refused_by_every_verb(tmp_path, capsys):
    data = {
        "format": "convstudio.design", "version": 1, "name": "share", "inputs": {"a": [256], "b": [400]},
        "nodes": [{"name": "fa", "op": "Linear", "inputs": ["a"], "attrs": {"out_features": 8}, "share": "fc"},
                  {"name": "fb", "op": "Linear", "inputs": ["b"], "attrs": {"out_features": 8}, "share": "fc"}],
        "outputs": {"ya": "fa", "yb": "fb"},
    }
    path = tmp_path / "share.json"
    path.write_text(json.dumps(data))
    for argv in (["validate", path], ["cost", path], ["export", path, "-o", tmp_path / "s.onnx"], ["codegen", path, "-o", tmp_path / "s.py"]):
        code, _, err = cli(capsys, *argv)
        one_line(code, err, "shares parameters with 'fa'", "weight of shape [8, 400], where 'fa' has shape [8, 256]", "node 'fb' share", "share.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["share.json"]
