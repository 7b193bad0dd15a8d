"""Weights files are untrusted input: a path a design names stays inside its folder, only regular files of
the size their header promises are read (a FIFO or /dev/zero neither hangs nor fills memory), BF16/F16/F64
become float32, other dtypes and NaN/Inf values are refused in one line. `train` never rewrites the design it
is given; a design pairs with `<stem>.safetensors` beside it; every verb that uses weights takes --weights;
a crash between the two writes of a design + weights pair leaves a consistent pair; the same weights always
give the same bytes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from convstudio.backends.weights import (
    init_params,
    load_design_weights,
    load_weights,
    paired_weights,
    save_design_and_weights,
    save_weights,
    trained_epochs,
    weights_to_dict,
)
from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, load, save
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.templates import Builder

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
HANG = 300  # seconds: far beyond any run here, so only a hang reaches it


def net(activation: str = "ReLU", seed: int | None = None) -> Graph:
    """Conv + BN + activation + Linear on 1x8x8; with `seed`, initialized weights."""
    b = Builder("net")
    x = b.op("Conv2d", b.input("x", (1, 8, 8)), "conv", out_channels=4, kernel_size=3, padding=1)
    x = b.op(activation, b.op("BatchNorm2d", x, "bn"), "act")
    b.output(b.op("Linear", b.op("Flatten", x, "flatten"), "fc", out_features=10), "logits")
    if seed is not None:
        init_params(b.graph, seed=seed)
    return b.graph


def design_file(folder: Path, name: str = "d", weights: str | None = None) -> Path:
    path = folder / f"{name}.json"
    save(Design(net(), {"epochs": 1, "batch_size": "full", "val_split": 0.25}, weights), path)
    return path


def digits(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "data.npz"
    np.savez(path, x=rng.standard_normal((40, 1, 8, 8)).astype(np.float32), y=np.arange(40) % 10)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *names: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def run_cli(*argv, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in its own process; a hang fails the test at the timeout instead of hanging it."""
    return subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", *map(str, argv)], capture_output=True, text=True,
                          timeout=HANG, cwd=cwd)


def raw_safetensors(entries: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """A safetensors file built by hand: name -> (dtype, shape, data)."""
    header, blobs, position = {}, [], 0
    for name, (dtype, shape, blob) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + len(blob)]}
        blobs.append(blob)
        position += len(blob)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# ----- where weights may come from -----


@pytest.mark.parametrize("named", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors", "link.safetensors", "/dev/zero"])
def test_a_weights_path_named_in_a_design_stays_inside_its_folder(tmp_path, capsys, named):
    folder = tmp_path / "designs"
    folder.mkdir()
    save_weights(net(seed=0), tmp_path / "outside.safetensors")  # valid weights: only the confinement refuses them
    (folder / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    path = design_file(folder, weights=named)
    original = path.read_bytes()
    verbs = (["validate"], ["export", "-o", tmp_path / "m.onnx"], ["codegen", "-o", tmp_path / "m.py"], ["fuse", "-o", tmp_path / "f.json"],
             ["compress", "--strategy", "width", "-o", tmp_path / "c.json"], ["train", "--data", digits(tmp_path)])
    for verb, *rest in verbs:
        line = one_line(*cli(capsys, verb, path, *rest)[::2], "field weights", "d.json")
        assert "outside the design's folder" in line or "not an absolute path" in line, line
    assert not any((tmp_path / n).exists() for n in ("m.onnx", "m.py", "f.json", "c.json", "d.safetensors"))
    assert path.read_bytes() == original


def test_weights_beside_the_design_that_link_elsewhere_or_name_a_nul_are_refused(tmp_path, capsys):
    save_weights(net(seed=0), tmp_path / "outside.safetensors")
    folder = tmp_path / "designs"
    folder.mkdir()
    path = design_file(folder)
    (folder / "d.safetensors").symlink_to(tmp_path / "outside.safetensors")
    one_line(*cli(capsys, "validate", path)[::2], "outside the design's folder", "d.json")
    assert cli(capsys, "validate", path, "--weights", tmp_path / "outside.safetensors")[0] == 0  # a file given on the command line may live anywhere
    with pytest.raises(DesignError, match="NUL character"):
        Design(net(), weights="w\x00.safetensors", path=path).weights_path()
    inside = design_file(folder, "inside", weights="sub/w.safetensors")
    (folder / "sub").mkdir()
    save_weights(net(seed=1), folder / "sub" / "w.safetensors")
    assert load_design_weights(load(inside)) == folder / "sub" / "w.safetensors"  # older files that name weights inside their folder still load


def test_fifo_and_devices_are_refused_without_hanging(tmp_path):
    """The issue's FIFO hung validate, export, codegen and train; each now answers at once, in its own process (a FIFO
    given as the design itself too)."""
    path = design_file(tmp_path)
    os.mkfifo(tmp_path / "d.safetensors")
    os.mkfifo(tmp_path / "fifo.json")
    data = digits(tmp_path)
    for argv in (["validate", path], ["validate", tmp_path / "fifo.json"], ["export", path, "-o", tmp_path / "m.onnx"],
                 ["codegen", path, "-o", tmp_path / "m.py"],
                 ["train", path, "--data", data, "--no-progress"], ["validate", design_file(tmp_path, "e"), "--weights", tmp_path / "d.safetensors"],
                 ["validate", design_file(tmp_path, "z"), "--weights", "/dev/zero"]):
        result = run_cli(*argv, cwd=tmp_path)
        one_line(result.returncode, result.stderr, "regular file")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.py").exists()


def test_sizes_are_checked_against_the_header_before_any_data_is_read(tmp_path, capsys):
    path = design_file(tmp_path)
    good = (tmp_path / "good.safetensors")
    save_weights(net(seed=0), good)
    good = good.read_bytes()
    length = struct.unpack("<Q", good[:8])[0]
    data = len(good) - 8 - length
    text = json.dumps({"fc.weight": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}).encode()
    huge = struct.pack("<Q", len(text)) + text + b"\0" * 40  # a header that promises 1 TiB
    twice = b'{"x":1,"x":2}'
    cases = {
        "truncated": (good[:-4], f"the header promises {data:,} bytes of tensor data, the file holds {data - 4:,}"),
        "trailing bytes": (good + b"\0" * 8, f"the header promises {data:,} bytes of tensor data, the file holds {data + 8:,}"),
        "header past the end": (struct.pack("<Q", 10**6) + good[8:], f"header of 1,000,000 bytes in a file of {len(good):,}"),
        "one terabyte": (huge, "the header promises 1,099,511,627,776 bytes of tensor data, the file holds 40"),
        "wrong span": (raw_safetensors({"fc.weight": ("F32", [10, 256], b"\0" * 12)}), "tensor 'fc.weight' spans 12 bytes"),
        "too short": (b"\x01\x02", "shorter than its 8-byte header length"),
        "not JSON": (struct.pack("<Q", 5) + b"{nope", "header is not JSON"),
        "duplicate key": (struct.pack("<Q", len(twice)) + twice, "key 'x' appears twice"),
    }
    for label, (content, message) in cases.items():
        (tmp_path / "d.safetensors").write_bytes(content)
        line = one_line(*cli(capsys, "validate", path)[::2], "d.safetensors")
        assert message in line, (label, line)


def test_bf16_f16_and_f64_become_float32_and_other_dtypes_are_refused(tmp_path):
    tensors = weights_to_dict(net(seed=3))
    halves = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in tensors.items()}  # bfloat16: the upper half of a float32
    entries = {k: ("BF16", list(v.shape), halves[k].tobytes()) for k, v in tensors.items()}
    (tmp_path / "bf16.safetensors").write_bytes(raw_safetensors(entries))
    graph = net()
    load_weights(graph, tmp_path / "bf16.safetensors")
    for key, half in halves.items():
        node, _, param = key.partition(".")
        loaded = graph.nodes[node].params[param]
        assert loaded.dtype == np.float32 and np.array_equal(loaded, (half.astype(np.uint32) << 16).view(np.float32)), key
    for dtype in (np.float16, np.float64):
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, tmp_path / "w.safetensors")
        graph = net()
        load_weights(graph, tmp_path / "w.safetensors")
        assert np.array_equal(graph.nodes["fc"].params["weight"], tensors["fc.weight"].astype(dtype).astype(np.float32))
    save_file({**tensors, "fc.bias": np.arange(10, dtype=np.int64)}, tmp_path / "ints.safetensors")
    with pytest.raises(DesignError) as err:
        load_weights(net(), tmp_path / "ints.safetensors")
    assert err.value.line() == f"tensor 'fc.bias' has dtype 'I64'; weights must be F32, F16, BF16 or F64, file '{tmp_path / 'ints.safetensors'}'"


def test_nan_and_infinite_weights_are_reported(tmp_path, capsys):
    path = design_file(tmp_path)
    tensors = weights_to_dict(net(seed=0))
    tensors["fc.weight"][0, :3] = [np.nan, np.inf, -np.inf]
    save_file(tensors, tmp_path / "d.safetensors")
    for verb in (["validate"], ["export", "-o", tmp_path / "m.onnx"]):
        one_line(*cli(capsys, verb[0], path, *verb[1:])[::2], "weight 'fc.weight' holds 1 NaN and 2 infinite values", "d.safetensors")
    assert not (tmp_path / "m.onnx").exists()


# ----- train and the design + weights pair -----


def test_train_never_rewrites_its_design_and_pairs_weights_by_stem(tmp_path, capsys):
    path, data = design_file(tmp_path), digits(tmp_path)
    original = path.read_bytes()
    train = ["train", path, "--data", data, "--no-progress"]
    code, out, _ = cli(capsys, *train)
    assert code == 0 and out.splitlines()[0] == "starting from fresh weights (seed 0): the design has no weights yet"
    assert path.read_bytes() == original and paired_weights(load(path)) == tmp_path / "d.safetensors"
    code, out, _ = cli(capsys, *train)
    assert code == 0 and out.splitlines()[0] == (f"starting from the weights in '{tmp_path / 'd.safetensors'}' (after epoch 1); "
                                                 "--from-scratch starts from fresh weights (seed 0)")
    assert trained_epochs(tmp_path / "d.safetensors") == 2 and path.read_bytes() == original
    code, out, _ = cli(capsys, *train, "--from-scratch")
    assert code == 0 and out.splitlines()[0] == "starting from fresh weights (seed 0), as --from-scratch asks"
    assert trained_epochs(tmp_path / "d.safetensors") == 1

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli(capsys, *train, "--out", elsewhere / "w.safetensors")[0] == 0
    assert path.read_bytes() == original  # no path into that folder is recorded ...
    (elsewhere / "w.safetensors").unlink()
    for verb in (["validate"], ["export", "-o", tmp_path / "m.onnx"], ["codegen", "-o", tmp_path / "m.py"]):
        assert cli(capsys, verb[0], path, *verb[1:])[0] == 0  # ... so its removal breaks nothing

    assert cli(capsys, *train, "-o", tmp_path / "t.json")[0] == 0  # a design is written only where -o asks, its weights beside it
    written = load(tmp_path / "t.json")
    assert written.weights is None and load_design_weights(written, required=True) == tmp_path / "t.safetensors"
    assert path.read_bytes() == original
    one_line(*cli(capsys, *train, "-o", path)[::2], "never rewrites", "-o")
    one_line(*cli(capsys, *train, "-o", tmp_path / "u.json", "--out", tmp_path / "u.safetensors")[::2], "drop --out")
    assert path.read_bytes() == original and not (tmp_path / "u.json").exists()


def test_every_verb_that_uses_weights_takes_weights(tmp_path, capsys):
    path, data = design_file(tmp_path), digits(tmp_path)
    (tmp_path / "w").mkdir()
    given = tmp_path / "w" / "trained.safetensors"
    save_weights(net(seed=5), given)
    before = given.read_bytes()
    code, out, _ = cli(capsys, "validate", path, "--weights", given, "--json")
    assert code == 0 and json.loads(out)["weights"] == str(given)
    code, out, _ = cli(capsys, "export", path, "-o", tmp_path / "m.onnx", "--weights", given, "--json")
    report = json.loads(out)
    assert code == 0 and report["weights_file"] == str(given) and not report["weights_initialized"]
    code, out, _ = cli(capsys, "codegen", path, "-o", tmp_path / "m.py", "--weights", given, "--json")
    assert code == 0 and json.loads(out)["weights"] == "w/trained.safetensors"
    for verb in (["fuse"], ["compress", "--strategy", "width"]):
        out_path = tmp_path / f"{verb[0]}.json"
        code, out, _ = cli(capsys, *verb, path, "-o", out_path, "--weights", given, "--json")
        assert code == 0 and json.loads(out)["weights"] == f"{verb[0]}.safetensors"
        assert load_design_weights(load(out_path), required=True) == out_path.with_suffix(".safetensors")
    code, out, _ = cli(capsys, "train", path, "--data", data, "--weights", given, "--no-progress")
    assert code == 0 and out.splitlines()[0].startswith(f"starting from the weights in '{given}' (not trained by convstudio train)")
    assert given.read_bytes() == before and (tmp_path / "d.safetensors").is_file()  # the run's weights go beside the design
    for verb in (["validate"], ["export", "-o", tmp_path / "n.onnx"], ["codegen", "-o", tmp_path / "n.py"], ["fuse", "-o", tmp_path / "g.json"]):
        one_line(*cli(capsys, verb[0], path, *verb[1:], "--weights", tmp_path / "absent.safetensors")[::2], "weights file not found", "absent")
    one_line(*cli(capsys, "fuse", path, "-o", tmp_path / "w" / "trained.json", "--weights", given)[::2], "would overwrite", "trained.safetensors")
    assert given.read_bytes() == before


class Crash(BaseException):
    """Stands for the process being killed at that point."""


def crash_when_renaming_to(monkeypatch, target: Path) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise Crash(str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def on_disk(folder: Path) -> tuple[list[str], dict]:
    """The ops of the design on disk and the weights that load with it."""
    design = load(folder / "d.json")
    load_design_weights(design, required=True)
    return [node.op for node in design.graph.nodes.values()], weights_to_dict(design.graph)


def same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stop_before", ["d.json", "d.safetensors"])
def test_a_crash_between_the_two_writes_leaves_a_consistent_pair(tmp_path, monkeypatch, stop_before):
    """Old and new designs differ only in an activation, so shape checks alone could not tell the pairs apart."""
    old, new = net("ReLU", seed=1), net("Tanh", seed=2)
    save_design_and_weights(Design(old), tmp_path / "d.json", old)
    with monkeypatch.context() as m:
        crash_when_renaming_to(m, tmp_path / stop_before)
        with pytest.raises(Crash):
            save_design_and_weights(Design(new), tmp_path / "d.json", new)
    expected = old if stop_before == "d.json" else new  # stopped before the design is replaced: the old pair, after: the new one
    ops, weights = on_disk(tmp_path)
    assert ops == [node.op for node in expected.nodes.values()] and same(weights, weights_to_dict(expected))
    latest = net("Sigmoid", seed=3)  # the next write completes over either state
    save_design_and_weights(Design(latest), tmp_path / "d.json", latest)
    ops, weights = on_disk(tmp_path)
    assert "Sigmoid" in ops and same(weights, weights_to_dict(latest))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.safetensors"]


def test_import_killed_between_its_writes_keeps_design_and_weights_together(tmp_path, capsys, monkeypatch):
    for name, activation, seed in (("relu", "ReLU", 1), ("tanh", "Tanh", 2)):
        graph = net(activation, seed)
        save_design_and_weights(Design(graph), tmp_path / f"{name}.json", graph)
        assert cli(capsys, "export", tmp_path / f"{name}.json", "-o", tmp_path / f"{name}.onnx")[0] == 0
    (tmp_path / "out").mkdir()
    assert cli(capsys, "import", tmp_path / "relu.onnx", "-o", tmp_path / "out" / "d.json")[0] == 0
    first = on_disk(tmp_path / "out")
    with monkeypatch.context() as m:
        crash_when_renaming_to(m, tmp_path / "out" / "d.json")
        with pytest.raises(Crash):
            main(["import", str(tmp_path / "tanh.onnx"), "-o", str(tmp_path / "out" / "d.json")])
    capsys.readouterr()
    ops, weights = on_disk(tmp_path / "out")
    assert "ReLU" in ops and ops == first[0] and same(weights, first[1])  # the old design with its own weights, not the new ones
    assert cli(capsys, "validate", tmp_path / "out" / "d.json")[0] == 0


def test_train_after_an_interrupted_write_starts_from_the_pending_weights_and_retires_them(tmp_path, capsys, monkeypatch):
    path, data = design_file(tmp_path), digits(tmp_path)
    graph = load(path).graph
    init_params(graph, seed=4)
    with monkeypatch.context() as m:
        crash_when_renaming_to(m, tmp_path / "d.safetensors")
        with pytest.raises(Crash):
            save_design_and_weights(load(path), path, graph)
    pending = tmp_path / "d.safetensors.pending"
    assert paired_weights(load(path)) == pending
    code, out, _ = cli(capsys, "train", path, "--data", data, "--no-progress")
    assert code == 0 and f"'{pending}'" in out.splitlines()[0]
    assert not pending.exists() and paired_weights(load(path)) == tmp_path / "d.safetensors"


# ----- reproducible bytes -----


def test_the_same_weights_give_the_same_bytes(tmp_path, capsys):
    graph = net(seed=7)
    save_weights(graph, tmp_path / "a.safetensors", {"b": "2", "a": "1"})
    save_weights(graph, tmp_path / "b.safetensors", {"a": "1", "b": "2"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert same(load_file(tmp_path / "a.safetensors"), weights_to_dict(graph))  # the safetensors package reads them
    with safe_open(tmp_path / "a.safetensors", "np") as f:
        assert f.metadata() == {"format": "convstudio.weights", "design": "net", "a": "1", "b": "2"}
    script = ("import sys; from convstudio.backends.weights import init_params, save_weights; from convstudio.ir.templates import build_template; "
              "g = build_template('lenet', (1, 8, 8), 10); init_params(g, seed=1); save_weights(g, sys.argv[1], {'epochs': '3', 'x': 'y'})")
    for seed in ("1", "2"):  # other hash seeds, other processes: the same bytes
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"p{seed}.safetensors")], check=True, timeout=HANG, cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    assert (tmp_path / "p1.safetensors").read_bytes() == (tmp_path / "p2.safetensors").read_bytes()
    path = design_file(tmp_path)
    save_weights(net(seed=8), tmp_path / "d.safetensors")
    for out in ("f1", "f2"):
        assert cli(capsys, "fuse", path, "-o", tmp_path / f"{out}.json")[0] == 0
    assert (tmp_path / "f1.safetensors").read_bytes() == (tmp_path / "f2.safetensors").read_bytes()
