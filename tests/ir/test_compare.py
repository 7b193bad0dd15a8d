"""Design comparison: category breakdown, totals, deltas, and the compare / compress / strategies verbs."""

import json

import numpy as np
import pytest

from convstudio.backends.weights import init_params, load_weights, save_weights
from convstudio.designer.cli.main import main
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, load, save
from convstudio.ir.passes.compare import before_after, compare, summarize
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import Builder, build_template


def test_breakdown_splits_standard_depthwise_and_pointwise_convs():
    b = Builder("t")
    x = b.input("x", (8, 8, 8))
    x = b.op("Conv2d", x, "std", out_channels=8, kernel_size=3, padding=1, bias=False)
    x = b.op("Conv2d", x, "dw", out_channels=8, kernel_size=3, padding=1, groups=8, bias=False)
    x = b.op("Conv2d", x, "pw", out_channels=4, kernel_size=1, bias=False)
    x = b.op("BatchNorm2d", x, "bn")
    x = b.op("ReLU", x, "relu")
    x = b.op("MaxPool2d", x, "pool", kernel_size=2)
    x = b.op("Flatten", x, "flat")
    x = b.op("Linear", x, "fc", out_features=3)
    b.output(x)
    s = summarize(b.graph)
    hw = 64
    assert s["breakdown"]["conv"]["macs"] == 8 * 8 * 9 * hw
    assert s["breakdown"]["depthwise"]["macs"] == 8 * 9 * hw
    assert s["breakdown"]["pointwise"]["macs"] == 8 * 4 * hw
    assert s["breakdown"]["linear"] == {"params": 64 * 3 + 3, "macs": 192, "flops": 2 * 192 + 3}
    assert s["breakdown"]["normalization"]["params"] == 8
    assert s["breakdown"]["activation"]["flops"] == 4 * hw
    assert s["breakdown"]["pooling"]["flops"] == 4 * 16 * 3
    assert s["breakdown"]["other"]["flops"] == 0
    total = analyze(b.graph).total
    assert sum(c["flops"] for c in s["breakdown"].values()) == total.flops
    assert s["totals"]["nodes"] == 8


def test_compare_totals_and_deltas_against_the_first():
    g = build_template("resnet18", (3, 32, 32), 10)
    fused = fuse(g).graph
    sep = STRATEGIES["separable"].apply(g).graph
    data = compare({"base": g, "fused": fused, "separable": sep}, "fvcore")
    assert data["labels"] == ["base", "fused", "separable"]
    assert data["totals"]["base"]["flops"] == analyze(g, "fvcore").total.flops
    d = data["deltas"]["separable"]["totals"]["macs"]
    base, new = data["totals"]["base"]["macs"], data["totals"]["separable"]["macs"]
    assert d["abs"] == new - base and d["pct"] == pytest.approx((new - base) / base * 100)
    assert data["deltas"]["base"]["totals"]["params"] == {"abs": 0, "pct": 0.0}
    assert data["breakdown"]["fused"]["normalization"]["params"] == 0
    assert data["breakdown"]["separable"]["depthwise"]["macs"] > 0 == data["breakdown"]["base"]["depthwise"]["macs"]
    ba = before_after(g, fused)
    assert ba["delta"]["nodes"]["abs"] == ba["after"]["nodes"] - ba["before"]["nodes"] < 0


@pytest.fixture
def designs(tmp_path):
    paths = []
    for name in ("resnet18", "mobilenet_v2"):
        path = tmp_path / f"{name}.json"
        save(Design(build_template(name, (3, 32, 32), 10)), path)
        paths.append(str(path))
    return paths


def test_compare_verb_with_two_designs(designs, tmp_path, capsys):
    png = tmp_path / "chart.png"
    assert main(["compare", *designs, "--variants", "fused,separable", "--plot", str(png), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] == [f"{d}{v}" for d in ("resnet18", "mobilenet_v2") for v in ("", "+fused", "+separable")]
    assert data["totals"]["mobilenet_v2"]["params"] < data["totals"]["resnet18"]["params"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", *designs]) == 0
    text = capsys.readouterr().out
    assert "totals" in text and "depthwise" in text and "mobilenet_v2" in text


def test_compare_verb_rejects_an_unknown_variant(designs, capsys):
    assert main(["compare", *designs, "--variants", "fused,shrink"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown variant 'shrink'")


def test_strategies_verb(capsys):
    assert main(["strategies"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(STRATEGIES)
    assert main(["strategies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)[2]
    assert listed == {"name": "group_shuffle", "summary": STRATEGIES["group_shuffle"].summary, "params": {"groups": 4}, "keeps_weights": False}


def test_compress_verb_prints_before_after_and_writes_the_design(designs, tmp_path, capsys):
    out = tmp_path / "out.json"
    args = ["--strategy", "group_shuffle", "--nodes", "layer2_0_downsample_0", "--param", "groups=2"]
    assert main(["compress", designs[0], *args, "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] == ["layer2_0_downsample_0", "layer2_0_downsample_0_shuffle"]
    assert data["delta"]["macs"]["abs"] == -(64 * 128 * 4 * 4) // 2
    assert data["delta"]["params"]["pct"] < 0
    assert out.exists()
    assert main(["compress", designs[0], "--strategy", "width", "--all", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before" in text and "delta" in text and "changed: conv1" in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["--strategy", "shrink"], "error: unknown strategy 'shrink'"),
        (["--strategy", "separable", "--nodes", "nope"], "error: no node named 'nope', --nodes"),
        (["--strategy", "stack3x3", "--nodes", "conv1"], "error: stack3x3 does not apply: stride 2x2 is not 1, node 'conv1'"),
        (["--strategy", "group_shuffle", "--param", "groups=two"], "error: parameter 'groups' must be a int"),
        (["--strategy", "group_shuffle", "--param", "size=2"], "error: strategy 'group_shuffle' has no parameter 'size'"),
        (["--strategy", "group_shuffle", "--param", "groups=0"], "error: groups must be at least 2, got 0, --param groups"),
        (["--strategy", "width", "--param", "alpha=inf"], "error: alpha must be a positive number, got inf, --param alpha"),
        (["--strategy", "width", "--nodes", " , "], "error: no node names given, --nodes"),
        (["--strategy", "stack3x3"], "error: stack3x3 applies nowhere in the design (20 declined, e.g. conv1: stride 2x2 is not 1), file"),
    ],
)
def test_compress_verb_bad_input_is_one_line_exit_2(designs, tmp_path, capsys, args, message):
    out = tmp_path / "never.json"
    assert main(["compress", designs[0], *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not out.exists()


def test_compress_and_fuse_refuse_a_folder_as_output(designs, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    for argv in (["compress", designs[0], "--strategy", "width"], ["fuse", designs[0]]):
        assert main([*argv, "-o", str(folder)]) == 2
        assert capsys.readouterr().err.strip() == f"error: is a folder; give a file name, file '{folder}'"
    assert list(folder.iterdir()) == []


def test_compress_keeps_the_weights_of_unchanged_layers(tmp_path, capsys):
    """A design with weights stays usable: untouched layers keep theirs, rewritten ones get a fresh init
    unless the strategy starts them from the old weights."""
    graph = build_template("lenet")
    init_params(graph, seed=3)
    save_weights(graph, tmp_path / "l.safetensors")
    save(Design(graph, weights="l.safetensors"), tmp_path / "l.json")
    out = tmp_path / "s.json"
    assert main(["compress", str(tmp_path / "l.json"), "--strategy", "stack3x3", "--nodes", "conv2", "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"] == "s.safetensors" and data["fresh_weights"] == ["conv2_3x3_1", "conv2"]
    assert main(["compress", str(tmp_path / "l.json"), "--strategy", "separable", "--nodes", "conv2", "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"] == "s.safetensors" and data["fresh_weights"] == []
    compressed = load(out)
    load_weights(compressed.graph, tmp_path / "s.safetensors")
    for name in ("conv1", "fc1", "fc2", "fc3"):
        for key, value in graph.nodes[name].params.items():
            assert np.array_equal(compressed.graph.nodes[name].params[key], value), name
    assert main(["validate", str(out)]) == 0
    assert "weights s.safetensors ok" in capsys.readouterr().out


def test_small_percentages_keep_two_significant_digits():
    from convstudio.designer.cli.verb_compress import percent

    assert [percent(p) for p in (-0.04106, 0.0, None, -42.029, 0.5)] == ["-0.041%", "+0.0%", "", "-42.0%", "+0.5%"]


def test_compare_verb_notes_a_variant_that_changes_nothing(designs, capsys):
    assert main(["compare", designs[0], "--variants", "stack3x3,fused", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notes"] == ["resnet18+stack3x3 is the same as resnet18: stack3x3 applies nowhere"]
    assert data["totals"]["resnet18+stack3x3"] == data["totals"]["resnet18"]
    assert main(["compare", designs[0], "--variants", "stack3x3"]) == 0
    assert "note: resnet18+stack3x3 is the same as resnet18: stack3x3 applies nowhere" in capsys.readouterr().out
