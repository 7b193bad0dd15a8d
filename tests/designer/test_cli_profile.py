"""`convstudio profile`: the JSON of the issue, the table, the roofline plot, calibration feeding `cost --convention
latency` and the latency rows of compress, fuse and compare; bad flags and a design that cannot run give one line."""

from __future__ import annotations

import json

import pytest
import torch

from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, dumps
from convstudio.ir.templates import build_template
from tests.designer.cli_calls import cli

JSON_KEYS = {"runtime", "provider", "batch", "threads", "end_to_end_ms", "nodes", "unattributed_ms"}
NODE_KEYS = {"name", "op", "latency_ms", "share", "gflops_per_s", "bytes", "intensity", "peak_bytes", "bound"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with a small design and a quick-calibrated model in its own cache."""
    path = tmp_path_factory.mktemp("profile")
    (path / "net.json").write_text(dumps(Design(build_template("mobilenet_v3_small", input_shape=[3, 32, 32], num_classes=10, width=0.25))))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(path / "cache"))
        assert main(["profile", "--calibrate", "--quick", "--threads", "1", "--json"]) == 0
        yield path


def test_profile_json_has_the_issue_keys(folder, capsys):
    code, out, err = cli(capsys, "profile", folder / "net.json", "--runs", "2", "--threads", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == JSON_KEYS and data["runtime"] == "ort" and data["end_to_end_ms"]["runs"] == 2
    assert all(set(n) == NODE_KEYS for n in data["nodes"]) and {n["bound"] for n in data["nodes"]} <= {"memory", "compute", None}
    code, out, err = cli(capsys, "profile", folder / "net.json", "--runtime", "both", "--runs", "1", "--threads", "1", "--fuse", "--json")
    assert code == 0, err
    both = json.loads(out)
    assert [d["runtime"] for d in both] == ["ort", "torch"] and all(set(d) == JSON_KEYS for d in both)


def test_profile_table_and_plot(folder, capsys):
    plot = folder / "roof.png"
    code, out, err = cli(capsys, "profile", folder / "net.json", "--runs", "1", "--threads", "1", "--top", "5", "--plot", plot)
    assert code == 0, err
    assert "end to end: median" in out and "peak mem" in out and "unattributed" in out and "memory-bound" in out and "ort fused" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cost_with_the_latency_convention(folder, capsys):
    code, out, err = cli(capsys, "cost", folder / "net.json", "--convention", "latency", "--batch", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["total"]["latency_ms"] > 0 and all("latency_ms" in n for n in data["nodes"])
    code, out, err = cli(capsys, "cost", folder / "net.json")
    assert code == 0 and "pred. ms" in out and "predicted latency:" in out  # a stored model adds the column


def test_compress_fuse_and_compare_show_latency(folder, capsys):
    code, out, err = cli(capsys, "compress", folder / "net.json", "--strategy", "width", "-o", folder / "narrow.json", "--json")
    assert code == 0, err
    latency = json.loads(out)["latency_ms"]
    assert latency["predicted"]["after"] < latency["predicted"]["before"] and latency["measured"] is None
    code, out, err = cli(capsys, "fuse", folder / "net.json", "-o", folder / "fused.json", "--measure")
    assert code == 0, err
    assert "predicted (latency model)" in out and "measured (ORT CPU, best of 10)" in out
    code, out, err = cli(capsys, "compare", folder / "net.json", folder / "narrow.json", "--latency", "--json")
    assert code == 0, err
    rows = json.loads(out)["latency_ms"]
    assert rows["mobilenet_v3_small"]["measured_ratio"] == 1.0 and rows["mobilenet_v3_small"]["macs_ratio"] == 1.0
    assert all(r["measured"] > 0 and r["predicted"] > 0 for r in rows.values())


@pytest.mark.parametrize("argv, where", [
    (["--runs", "0"], "--runs"),
    (["--batch", "0"], "--batch"),
    (["--threads", "-1"], "--threads"),
    (["--top", "0"], "--top"),
    (["--plot", "roof.txt"], "--plot"),
    (["--quick"], "--quick"),
    (["--runtime", "tvm"], "command 'convstudio profile'"),
])
def test_bad_flags_give_one_line(folder, capsys, argv, where):
    code, out, err = cli(capsys, "profile", folder / "net.json", *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and where in err and "Traceback" not in err


def test_calibrate_and_cuda_refusals(folder, capsys, monkeypatch, tmp_path):
    for argv, where in ((["profile"], "FILE"), (["profile", "--calibrate", "--runtime", "both"], "--runtime"),
                        (["profile", folder / "net.json", "--calibrate"], "--calibrate")):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and where in err
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, _, err = cli(capsys, "cost", folder / "net.json", "--convention", "latency")
    assert code == 2 and err.count("\n") == 1 and "profile --calibrate" in err
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "profile", folder / "net.json", "--runtime", "torch", "--provider", "cuda")
        assert code == 2 and err.count("\n") == 1 and "CUDA is not usable" in err and "--provider cuda" in err


def test_a_design_that_cannot_run_gives_one_line(folder, capsys):
    bad = {"format": "convstudio.design", "version": 1, "name": "bad", "inputs": {"x": [3, 4, 4]},
           "nodes": [{"name": "conv", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 4, "kernel_size": 9}}],
           "outputs": {"y": "conv"}}
    path = folder / "bad.json"
    path.write_text(json.dumps(bad))
    code, out, err = cli(capsys, "profile", path)
    assert code == 2 and err.count("\n") == 1 and "conv" in err and "Traceback" not in err
    code, out, err = cli(capsys, "profile", folder / "missing.json")
    assert code == 2 and err.count("\n") == 1
