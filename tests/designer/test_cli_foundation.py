"""The foundation verbs (templates, new, validate, cost) and every bad-input case of a design file.

Bad input must give exit code 2 and exactly one stderr line `error: <what>, <where>` naming the
node and field, with no traceback, and must leave the files in the folder as they were.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from convstudio.backends.weights import init_params, save_weights
from convstudio.designer.cli.common import check_batch, format_shape, human, human_bytes, named_shapes, parse_shape
from convstudio.ir.design import load
from convstudio.ir.errors import DesignError
from tests.designer.cli_calls import cli, one_line

GOOD = {
    "format": "convstudio.design",
    "version": 1,
    "name": "tiny",
    "inputs": {"x": [3, 8, 8]},
    "nodes": [
        {"name": "conv", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 4, "kernel_size": 3}},
        {"name": "relu", "op": "ReLU", "inputs": ["conv"]},
    ],
    "outputs": {"y": "relu"},
}


def snapshot(folder) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


# ---- shared helpers -------------------------------------------------------------------------------


def test_shape_and_number_formatting():
    assert parse_shape("1x3x224x224") == [1, 3, 224, 224] and parse_shape("3,32,32") == [3, 32, 32]
    for text, message in (("3x", "must look like"), ("0x3", "must be positive"), ("-1x3", "must be positive")):
        with pytest.raises(DesignError, match=message):
            parse_shape(text)
    assert format_shape(["N", 3, 8, 8]) == "Nx3x8x8" and format_shape([["N", 2], ["N", 3]]) == "Nx2, Nx3" and format_shape(None) == ""
    assert named_shapes({"a": ["N", 4], "b": [2, 4]}) == "a Nx4, b 2x4"
    assert (human(999), human(12_345_678), human(4_089_184_256), human(1536, "B")) == ("999", "12.35 M", "4.09 G", "1.54 kB")
    assert (human_bytes(1023), human_bytes(1536), human_bytes(3 * 2**20), human_bytes(2**31)) == ("1023 B", "1.50 KiB", "3.00 MiB", "2.00 GiB")
    assert check_batch(8, "--batch") == 8
    with pytest.raises(DesignError, match="absurdly large"):
        check_batch(2**41, "--batch")


# ---- templates ------------------------------------------------------------------------------------


def test_templates_lists_templates_and_blocks(capsys):
    code, out, _ = cli(capsys, "templates")
    assert code == 0
    for name in ("lenet", "resnet50", "mobilenet_v2", "inverted_residual", "Templates", "Blocks"):
        assert name in out
    code, out, _ = cli(capsys, "templates", "--json")
    data = json.loads(out)
    lenet = next(t for t in data["templates"] if t["name"] == "lenet")
    assert lenet == {"name": "lenet", "description": lenet["description"], "input_shape": ["N", 1, 28, 28], "num_classes": 10,
                     "width": False, "reference": lenet["reference"]}
    assert lenet["description"]
    resnet50 = next(t for t in data["templates"] if t["name"] == "resnet50")
    assert resnet50["reference"] == "torchvision.models.resnet50"
    assert any(t["width"] for t in data["templates"])
    assert all(set(b) == {"name", "description", "options"} and isinstance(b["options"], dict) for b in data["blocks"])


# ---- new ------------------------------------------------------------------------------------------


def test_new_writes_a_loadable_design(tmp_path, capsys):
    path = tmp_path / "lenet.json"
    code, out, _ = cli(capsys, "new", "lenet", "-o", path, "--input", "1x1x8x8", "--classes", "5")
    assert code == 0
    assert out == f"wrote {path}: lenet, 12 layers, inputs x Nx1x8x8, outputs logits Nx5\n"
    design = load(path)
    assert design.graph["x"].attrs["shape"] == [1, 8, 8]
    assert design.graph["fc3"].attrs["out_features"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.json"]


def test_new_accepts_a_shape_without_batch_and_a_width(tmp_path, capsys):
    code, _, _ = cli(capsys, "new", "lenet", "-o", tmp_path / "a.json", "--input", "1x16x16")
    assert code == 0 and load(tmp_path / "a.json").graph["x"].attrs["shape"] == [1, 16, 16]
    code, _, _ = cli(capsys, "new", "mobilenet_v1", "-o", tmp_path / "m.json", "--width", "0.5", "--input", "1x3x64x64")
    assert code == 0
    first_conv = next(n for n in load(tmp_path / "m.json").graph if n.op == "Conv2d")
    assert first_conv.attrs["out_channels"] == 16  # 32 at width 1.0


def test_new_refuses_to_overwrite_without_force(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text("keep me")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "new", "lenet", "-o", path)
    one_line(code, err, "file exists", str(path))
    assert snapshot(tmp_path) == before
    code, _, _ = cli(capsys, "new", "lenet", "-o", path, "--force")
    assert code == 0 and load(path).graph.name == "lenet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


def test_new_never_pairs_a_fresh_design_with_weights_left_beside_it(tmp_path, capsys):
    path, stale = tmp_path / "d.json", tmp_path / "d.safetensors"
    stale.write_bytes(b"old trained weights")
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "new", "lenet", "-o", path)
    one_line(code, err, "weights 'd.safetensors' beside it would pair with the new design", str(path))
    assert snapshot(tmp_path) == before
    code, _, _ = cli(capsys, "new", "lenet", "-o", path, "--force")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


@pytest.mark.parametrize(
    "argv,names",
    [
        (["new", "alexnet9"], ["unknown template 'alexnet9'", "template"]),
        (["new", "lenet", "--width", "2"], ["no width multiplier", "--width"]),
        (["new", "lenet", "--classes", "0"], ["positive", "--classes"]),
        (["new", "lenet", "--input", "1x8x8x"], ["shape must look like", "--input"]),
        (["new", "lenet", "--input", "1x2x1x8x8"], ["4-d input", "--input"]),
        (["new", "lenet", "--input", "1x1x2x2"], ["node 'pool2'", "attrs.kernel_size"]),
        (["new", "lenet", "--input", "1x1x2000000x2000000"], ["absurdly large", "node 'x' attrs.shape"]),
        (["new", "lenet", "--classes", "1000000000000"], ["parameter weight [1000000000000, 84] is absurdly large", "node 'fc3' params.weight"]),
        (["new", "mobilenet_v2", "--width", "nan"], ["width multiplier must be positive", "--width"]),
    ],
    ids=["unknown", "width", "classes", "shape_text", "shape_rank", "too_small", "absurd", "absurd_params", "width_nan"],
)
def test_new_bad_input_writes_nothing(tmp_path, capsys, argv, names):
    code, _, err = cli(capsys, *argv, "-o", tmp_path / "out.json")
    one_line(code, err, *names)
    assert list(tmp_path.iterdir()) == []


# ---- validate -------------------------------------------------------------------------------------


def write(tmp_path, data, name="d.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_validate_summarizes(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    code, out, _ = cli(capsys, "validate", path)
    assert code == 0
    assert "valid design 'tiny'" in out and "2 layers" in out and "x Nx3x8x8" in out and "y Nx4x6x6" in out and "112 params" in out
    code, out, _ = cli(capsys, "validate", path, "--json")
    assert json.loads(out) == {"valid": True, "name": "tiny", "nodes": 2, "inputs": {"x": ["N", 3, 8, 8]},
                               "outputs": {"y": ["N", 4, 6, 6]}, "params": 4 * 27 + 4, "weights": None}


def test_validate_checks_the_weights_file(tmp_path, capsys):
    design = load(write(tmp_path, {**GOOD, "weights": "tiny.safetensors"}))
    code, _, err = cli(capsys, "validate", tmp_path / "d.json")
    one_line(code, err, "weights file not found", "tiny.safetensors")
    init_params(design.graph, seed=1)
    save_weights(design.graph, tmp_path / "tiny.safetensors")
    code, out, _ = cli(capsys, "validate", tmp_path / "d.json")
    assert code == 0 and "weights tiny.safetensors ok" in out
    wrong = copy.deepcopy(GOOD) | {"weights": "tiny.safetensors"}
    wrong["nodes"][0]["attrs"]["out_channels"] = 5
    write(tmp_path, wrong)
    code, _, err = cli(capsys, "validate", tmp_path / "d.json")
    one_line(code, err, "node 'conv'", "conv.weight")


# ---- cost -----------------------------------------------------------------------------------------


@pytest.fixture
def lenet_file(tmp_path, capsys):
    path = tmp_path / "lenet.json"
    assert cli(capsys, "new", "lenet", "-o", path)[0] == 0
    return path


def test_cost_table_and_totals(lenet_file, capsys):
    code, out, _ = cli(capsys, "cost", lenet_file)
    assert code == 0
    for text in ("conv1", "Conv2d", "Nx6x28x28", "117,600", "share", "act. memory", "total", "61,706", "416,520", "peak"):
        assert text in out
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    assert len(rows) == 14 + 1  # every node, then the total row
    assert len({len(line) for line in rows}) == 1  # aligned


def test_cost_top_k_lists_the_most_expensive(lenet_file, capsys):
    code, out, _ = cli(capsys, "cost", lenet_file, "--top", "2", "--formulas")
    assert code == 0
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│ ")]
    assert rows == ["conv2", "conv1", "total"]
    assert "Cout·Ho·Wo" not in out and "2·macs + bias" in out


def test_cost_json_is_exact(lenet_file, capsys):
    code, out, _ = cli(capsys, "cost", lenet_file, "--json")
    data = json.loads(out)
    assert list(data) == ["convention", "input_shapes", "total", "nodes"]
    assert data["convention"] == "flops" and data["input_shapes"] == {"x": ["N", 1, 28, 28]}
    assert list(data["total"]) == ["params", "macs", "flops", "activation_bytes", "peak_activation_bytes"]
    assert data["total"]["params"] == 61706 and data["total"]["macs"] == 416520
    for node in data["nodes"]:
        assert list(node) == ["name", "op", "output_shape", "params", "macs", "flops", "activation_bytes", "formula"]
    conv1 = data["nodes"][1]
    assert conv1["output_shape"] == ["N", 6, 28, 28] and conv1["flops"] == 2 * 117600 + 6 * 28 * 28


def test_cost_conventions_batch_and_input_override(lenet_file, capsys):
    tv = json.loads(cli(capsys, "cost", lenet_file, "--json", "--convention", "torchvision")[1])
    assert tv["total"]["flops"] == tv["total"]["macs"] == 416520
    one = json.loads(cli(capsys, "cost", lenet_file, "--json")[1])
    four = json.loads(cli(capsys, "cost", lenet_file, "--json", "--batch", "4")[1])
    assert four["total"]["params"] == one["total"]["params"]
    for key in ("macs", "flops", "activation_bytes", "peak_activation_bytes"):
        assert four["total"][key] == 4 * one["total"][key]
    assert four["input_shapes"] == {"x": [4, 1, 28, 28]}
    bigger = json.loads(cli(capsys, "cost", lenet_file, "--json", "--input", "x=2x1x32x32")[1])
    assert bigger["input_shapes"] == {"x": [2, 1, 32, 32]}
    per_sample = json.loads(cli(capsys, "cost", lenet_file, "--json", "--input", "1x32x32")[1])
    # conv1 6·32·32·25, conv2 16·12·12·150, fc1 (16·6·6)·120, fc2 120·84, fc3 84·10
    assert bigger["total"]["macs"] == 2 * per_sample["total"]["macs"] == 2 * (153600 + 345600 + 69120 + 10080 + 840)
    assert load(lenet_file).graph["x"].attrs["shape"] == [1, 28, 28]


@pytest.mark.parametrize(
    "args,names",
    [
        (["--input", "y=1x1x28x28"], ["no input named 'y'", "--input"]),
        (["--input", "1x8"], ["input 'x' is 4-d", "--input"]),
        (["--batch", "0"], ["batch must be at least 1", "--batch"]),
        (["--batch", "3", "--input", "2x1x28x28"], ["disagrees", "--batch"]),
        (["--top", "0"], ["top must be at least 1", "--top"]),
        (["--input", "1x1x2x2"], ["node 'conv2'", "attrs.kernel_size", "lenet.json"]),
        (["--batch", "1" + "0" * 400], ["batch is absurdly large (1.00e+400)", "--batch"]),
        (["--input", "1" + "0" * 20 + "x1x28x28"], ["batch is absurdly large (1.00e+20)", "--input"]),
        (["--input", "1x1x28x" + "9" * 30], ["shape is absurdly large", "node 'x' attrs.shape"]),
        (["--convention", "macs"], ["invalid choice: 'macs'", "command 'convstudio cost'"]),
        (["--batch", "two"], ["invalid int value: 'two'", "command 'convstudio cost'"]),
        (["--colour"], ["unrecognized arguments: --colour"]),
    ],
    ids=["input_name", "input_rank", "batch", "batch_disagrees", "top", "input_too_small", "batch_absurd", "input_batch_absurd",
         "input_absurd", "convention", "batch_not_int", "unknown_flag"],
)
def test_cost_bad_options(lenet_file, capsys, args, names):
    code, _, err = cli(capsys, "cost", lenet_file, *args)
    one_line(code, err, *names)


def test_cost_with_several_inputs_and_shared_weights(tmp_path, capsys):
    path = tmp_path / "triplet.json"
    assert cli(capsys, "new", "triplet_net", "-o", path)[0] == 0
    code, out, _ = cli(capsys, "cost", path, "--json", "--input", "anchor=1x16x16", "--input", "positive=1x16x16", "--input", "negative=1x16x16")
    assert code == 0
    data = json.loads(out)
    assert data["input_shapes"] == {name: ["N", 1, 16, 16] for name in ("anchor", "positive", "negative")}
    towers = {side: [n for n in data["nodes"] if n["name"].startswith(f"{side}_")] for side in ("anchor", "positive", "negative")}
    # one set of weights (on the anchor tower), three times the arithmetic
    assert data["total"]["params"] == sum(n["params"] for n in towers["anchor"]) > 0
    assert all(n["params"] == 0 for n in towers["positive"] + towers["negative"])
    assert data["total"]["macs"] == 3 * sum(n["macs"] for n in towers["anchor"])
    code, _, err = cli(capsys, "cost", path, "--input", "1x16x16")
    one_line(code, err, "use --input NAME=SHAPE", "--input")


def test_cost_matches_torchvision_resnet50(tmp_path, capsys):
    path = tmp_path / "r50.json"
    assert cli(capsys, "new", "resnet50", "-o", path)[0] == 0
    data = json.loads(cli(capsys, "cost", path, "--json", "--convention", "torchvision")[1])
    assert data["total"]["params"] == 25_557_032
    assert data["total"]["macs"] == data["total"]["flops"] == 4_089_184_256


# ---- bad design files (issue item 8) ------------------------------------------------------------


def mutated(change) -> dict:
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def _set_conv(**attrs):
    return lambda d: d["nodes"][0]["attrs"].update(attrs)


def _add_nodes(*nodes):
    return lambda d: d["nodes"].extend(nodes)


BAD_FILES = [
    # (id, file contents or change to GOOD, substrings the one error line must contain: what, node, field)
    ("malformed_json", '{"format": "convstudio.design", "version": ', ["malformed JSON", "line 1 column", "d.json"]),
    ("wrong_format", lambda d: d.update(format="onnx.model"), ["format must be 'convstudio.design'", "field format"]),
    ("wrong_version", lambda d: d.update(version=99), ["unsupported version 99", "field version"]),
    ("unknown_op", lambda d: d["nodes"][0].update(op="Conv3d"), ["unknown op 'Conv3d'", "node 'conv'", "field op"]),
    ("missing_attribute", lambda d: d["nodes"][0]["attrs"].pop("kernel_size"), ["needs attribute 'kernel_size'", "node 'conv'",
                                                                                "attrs.kernel_size"]),
    ("mistyped_attribute", _set_conv(kernel_size="3"), ["must be an integer, got '3'", "node 'conv'", "attrs.kernel_size"]),
    ("mistyped_bool", _set_conv(bias="yes"), ["bias must be true or false", "node 'conv'", "attrs.bias"]),
    ("kernel_zero", _set_conv(kernel_size=0), ["kernel_size must be >= 1", "node 'conv'", "attrs.kernel_size"]),
    ("groups_not_dividing_out", _set_conv(groups=3), ["groups (3) must divide out_channels (4)", "node 'conv'", "attrs.groups"]),
    ("groups_not_dividing_in", _set_conv(groups=2), ["groups (2) must divide the input's 3 channels", "node 'conv'", "attrs.groups"]),
    ("negative_padding", _set_conv(padding=-1), ["padding must be >= 0", "node 'conv'", "attrs.padding"]),
    ("dangling_input", lambda d: d["nodes"][1].update(inputs=["cnov"]), ["input 'cnov' refers to no node", "node 'relu'", "input 0"]),
    ("dangling_output", lambda d: d["outputs"].update(y="ghost"), ["input 'ghost' refers to no node", "outputs.y"]),
    ("duplicate_name", _add_nodes({"name": "relu", "op": "ReLU", "inputs": ["x"]}), ["duplicate node name 'relu'", "node 'relu'",
                                                                                   "field name"]),
    ("cycle", _add_nodes({"name": "a", "op": "ReLU", "inputs": ["b"]}, {"name": "b", "op": "ReLU", "inputs": ["a"]}),
     ["graph has a cycle", "node '", "inputs"]),
    ("add_mismatch", _add_nodes({"name": "sum", "op": "Add", "inputs": ["relu", "x"]}), ["do not broadcast", "node 'sum'", "inputs"]),
    ("concat_mismatch", _add_nodes({"name": "cat", "op": "Concat", "inputs": ["relu", "x"]}), ["does not match", "node 'cat'",
                                                                                              "input 1"]),
    ("linear_mismatch", _add_nodes({"name": "flat", "op": "Flatten", "inputs": ["relu"]},
                                   {"name": "fc", "op": "Linear", "inputs": ["flat"], "attrs": {"out_features": 2, "in_features": 100}}),
     ["in_features is 100 but the input's last dimension is 144", "node 'fc'", "attrs.in_features"]),
    ("absurd_input", lambda d: d.update(inputs={"x": [3, 100_000_000, 100_000_000]}), ["absurdly large", "node 'x'", "attrs.shape"]),
    ("absurd_channels", _set_conv(out_channels=10**12), ["absurdly large", "node 'conv'", "output"]),
    ("unknown_attribute", _set_conv(colour="red"), ["no attribute 'colour'", "node 'conv'", "attrs.colour"]),
    ("not_an_object", "[1, 2, 3]", ["must be a JSON object", "top level"]),
    ("nested_too_deeply", "[" * 100_000 + "]" * 100_000, ["malformed JSON: nested too deeply", "d.json"]),
    ("duplicate_output_name", json.dumps(GOOD).replace('"outputs": {', '"outputs": {"y": "conv", '), ["duplicate key 'y'", "d.json"]),
    ("version_true", lambda d: d.update(version=True), ["unsupported version True", "field version"]),
    ("attrs_not_an_object", lambda d: d["nodes"][0].update(attrs=[4, 3]), ["attrs must be an object", "node 'conv'", "attrs"]),
    ("layout_nan", lambda d: d.update(layout={"conv": [float("nan"), 0.0]}), ["position must be [x, y]", "field layout.conv"]),
    ("absurd_integer", _set_conv(groups=10**400), ["groups is absurdly large (1.00e+400)", "node 'conv'", "attrs.groups"]),
    ("absurd_scale", _add_nodes({"name": "up", "op": "Upsample", "inputs": ["relu"], "attrs": {"scale_factor": 1e300}}),
     ["scale_factor is absurdly large", "node 'up'", "attrs.scale_factor"]),
    ("absurd_parameters", _add_nodes({"name": "flat", "op": "Flatten", "inputs": ["relu"]},
                                     {"name": "fc", "op": "Linear", "inputs": ["flat"], "attrs": {"out_features": 2**34}}),
     ["parameter weight [17179869184, 144] is absurdly large", "node 'fc'", "params.weight"]),
    ("bad_input_name", lambda d: d.update(inputs={"3x": [3, 8, 8]}), ["invalid node name '3x'", "field inputs.3x"]),
]


@pytest.mark.parametrize("verb", ["validate", "cost"])
@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_design_file(tmp_path, capsys, verb, case):
    _, content, names = case
    path = write(tmp_path, content if isinstance(content, str) else mutated(content))
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, verb, path)
    line = one_line(code, err, *names)
    assert line.endswith(f"'{path}'"), "the line names the design file"
    assert out == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv,names",
    [
        (["new", "lenet"], ["the following arguments are required: -o/--output", "command 'convstudio new'"]),
        (["validate"], ["the following arguments are required: file", "command 'convstudio validate'"]),
        (["templates", "--colour"], ["unrecognized arguments: --colour"]),
        (["nonsense"], ["invalid choice: 'nonsense'", "command 'convstudio'"]),
    ],
    ids=["new_without_output", "validate_without_file", "unknown_flag", "unknown_verb"],
)
def test_usage_errors_are_one_line(capsys, argv, names):
    code, out, err = cli(capsys, *argv)
    one_line(code, err, *names)
    assert out == ""


def test_unusable_paths_are_one_line_errors(tmp_path, capsys):
    """Operating-system refusals (a name too long, a folder that is a file) are bad input, not tracebacks."""
    long_name = tmp_path / ("d" * 300 + ".json")
    for argv in (["new", "lenet", "-o", long_name], ["validate", long_name], ["cost", long_name]):
        code, out, err = cli(capsys, *argv)
        one_line(code, err, "d" * 300)
        assert out == ""
    (tmp_path / "plain").write_text("not a folder")
    code, _, err = cli(capsys, "new", "lenet", "-o", tmp_path / "plain" / "d.json")
    one_line(code, err, "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_missing_file(tmp_path, capsys):
    for verb in ("validate", "cost"):
        code, _, err = cli(capsys, verb, tmp_path / "nowhere.json")
        one_line(code, err, "no such file", "nowhere.json")
    assert list(tmp_path.iterdir()) == []


def test_real_process_exit_code_and_stderr(tmp_path):
    """The installed entry point behaves the same in a separate process."""
    path = write(tmp_path, mutated(_set_conv(kernel_size=0)))
    result = subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", "cost", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: kernel_size must be >= 1, got 0, node 'conv' (nodes[0]) attrs.kernel_size in '{path}'"]
    ok = subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", "validate", str(write(tmp_path, GOOD, "ok.json"))],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "valid design" in ok.stdout and ok.stderr == ""
