"""ir.budget: memory estimates and the limit; hostile numbers and names; sharing groups that cannot share parameters."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from convstudio.ir.budget import (
    DEFAULT_CAP,
    OPTIMIZER_STATES,
    check_estimate,
    check_memory,
    default_limit,
    estimate_memory,
    parse_size,
    physical_memory,
    size_text,
)
from convstudio.ir.cost import analyze
from convstudio.ir.design import loads
from convstudio.ir.errors import AttrError, DesignError, ShapeError, printable
from convstudio.ir.graph import Graph, verify
from convstudio.ir.ops.registry import approx, shown
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import Builder

GiB = 2**30


def lenet(size: int) -> Graph:
    """LeNet on a 1 x size x size input (fc1's width grows with the input)."""
    b = Builder("lenet")
    x = b.input("x", (1, size, size))
    x = b.op("MaxPool2d", b.op("ReLU", b.op("Conv2d", x, "conv1", out_channels=6, kernel_size=5)), kernel_size=2)
    x = b.op("MaxPool2d", b.op("ReLU", b.op("Conv2d", x, "conv2", out_channels=16, kernel_size=5)), kernel_size=2)
    x = b.op("ReLU", b.op("Linear", b.op("Flatten", x), "fc1", out_features=120))
    b.output(b.op("Linear", x, "fc2", out_features=10))
    return b.graph


def conv_bn() -> Graph:
    b = Builder("cb")
    x = b.op("BatchNorm2d", b.op("Conv2d", b.input("x", (3, 8, 8)), "conv", out_channels=4, kernel_size=3), "bn")
    b.output(b.op("ReLU", x, "relu"))
    return b.graph


# ---- estimates ------------------------------------------------------------------------------------


def test_parameters_and_buffers_are_counted_in_bytes():
    est = estimate_memory(conv_bn())
    conv = 4 * 3 * 3 * 3 + 4
    bn = 4 * 4  # weight, bias, running mean, running var
    assert est.params_bytes == (conv + bn) * 4
    assert not est.training and est.training_bytes == 0 and est.batch == 1


def test_inference_activations_are_the_cost_analysis_peak_at_the_batch():
    graph = conv_bn()
    for batch in (1, 7):
        est = estimate_memory(graph, batch)
        assert est.activation_bytes == analyze(graph, "flops", batch).total.peak_activation_bytes
        assert est.total == est.params_bytes + est.activation_bytes


def test_training_keeps_every_activation_and_adds_gradients_and_optimizer_state():
    graph = conv_bn()
    report = analyze(graph, "flops", 4)
    learnable = report.total.params * 4
    largest = max(n.activation_bytes for n in report.nodes)
    adam = estimate_memory(graph, 4, training=True, optimizer="adam")
    sgd = estimate_memory(graph, 4, training=True, optimizer="sgd")
    assert adam.training and adam.activation_bytes == report.total.activation_bytes + 2 * largest
    assert adam.training_bytes == learnable * (1 + OPTIMIZER_STATES["adam"])
    assert adam.total - sgd.total == learnable  # adam keeps two state tensors per parameter, sgd (momentum) one
    assert adam.total > estimate_memory(graph, 4).total
    with pytest.raises(DesignError, match="unknown optimizer 'lbfgs'"):
        estimate_memory(graph, 4, training=True, optimizer="lbfgs")


def test_shared_parameters_count_once():
    b = Builder("siamese")
    a, c = b.input("a", (8,)), b.input("c", (8,))
    b.output(b.op("Linear", a, "fa", share="fc", out_features=16), "ya")
    b.output(b.op("Linear", c, "fc_", share="fc", out_features=16), "yc")
    assert estimate_memory(b.graph).params_bytes == (16 * 8 + 16) * 4


def test_the_largest_node_is_named_with_its_kind():
    est = estimate_memory(lenet(16384))
    assert (est.largest, est.largest_kind) == ("node 'fc1'", "parameters")
    assert est.largest_bytes == (120 * 16 * 4093 * 4093 + 120) * 4  # weight and bias
    b = Builder("wide")
    b.output(b.op("ReLU", b.op("Conv2d", b.input("x", (3, 64, 64)), "conv", out_channels=64, kernel_size=1)))
    est = estimate_memory(b.graph, 2)
    assert (est.largest, est.largest_kind, est.largest_bytes) == ("node 'conv'", "activations", 2 * 64 * 64 * 64 * 4)


def test_estimating_an_absurd_design_allocates_nothing_big():
    tracemalloc.start()
    try:
        est = estimate_memory(lenet(16384), 64, training=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert est.total > 1000 * GiB
    assert peak < 64 * 2**20


def test_check_memory_refuses_in_one_line_naming_node_size_and_limit():
    with pytest.raises(DesignError) as info:
        check_memory(lenet(16384), 1, 8 * GiB, where="file 'lenet.json'")
    line = info.value.line()
    assert line.startswith("the design needs 1")
    assert "(node 'fc1' parameters 119.8 GiB)" in line
    assert "above the 8 GiB limit (raise it with --max-memory), file 'lenet.json'" in line
    with pytest.raises(DesignError, match=r"to train at batch 16 .* above the 1 GiB limit"):
        check_memory(lenet(1024), 16, GiB, training=True)


def test_check_memory_passes_under_the_limit_and_names_activations_at_their_batch():
    graph = lenet(512)
    est = check_memory(graph, 1, 2 * GiB)
    assert est.total < 2 * GiB
    b = Builder("act")
    b.output(b.op("ReLU", b.op("Conv2d", b.input("x", (3, 512, 512)), "conv", out_channels=64, kernel_size=1)))
    with pytest.raises(DesignError, match=r"node 'conv' activations 2 GiB at batch 32\), above the 1 GiB limit"):
        check_memory(b.graph, 32, GiB)
    with pytest.raises(DesignError, match=r"limit, file 'x.json'$"):
        check_estimate(estimate_memory(b.graph, 32), GiB, "file 'x.json'", hint="")


def test_default_limit_is_8_gib_or_half_of_a_smaller_machine():
    physical = physical_memory()
    assert default_limit() == (min(DEFAULT_CAP, physical // 2) if physical else DEFAULT_CAP)
    assert 0 < default_limit() <= 8 * GiB


@pytest.mark.parametrize("text, size", [
    ("512M", 512 * 2**20), ("16G", 16 * GiB), ("2GiB", 2 * GiB), ("2 gib", 2 * GiB), ("1.5g", 3 * GiB // 2),
    ("4000000000", 4_000_000_000), ("12KB", 12_000), ("3mb", 3_000_000), ("1T", 2**40), ("100b", 100),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1e9", "abc", "5PB", "8Gi", "G", "1.2.3G", "9" * 4400, "1\nG", "0.1b"])
def test_parse_size_refuses_in_one_line(text):
    with pytest.raises(DesignError) as info:
        parse_size(text)
    line = info.value.line()
    assert "\n" not in line and line.endswith("--max-memory") and len(line) < 160


def test_size_text():
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 8 * GiB, int(120.3 * GiB), 3 * 2**40)] == [
        "0 B", "1023 B", "1 KiB", "1.5 KiB", "8 GiB", "120.3 GiB", "3 TiB"]


# ---- hostile numbers ------------------------------------------------------------------------------

BASE = {
    "format": "convstudio.design", "version": 1, "name": "t", "inputs": {"x": [3, 8, 8]},
    "nodes": [{"name": "conv", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 4, "kernel_size": 3}},
              {"name": "act", "op": "LeakyReLU", "inputs": ["conv"]}],
    "outputs": {"y": "act"},
    "training": {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1}},
}
LONG = "1" + "0" * 4300  # 4301 digits: past Python's int max str digits


@pytest.mark.parametrize("old, new, field", [
    ('"out_channels": 4', f'"out_channels": {LONG}', "node 'conv' (nodes[0]) attrs.out_channels"),
    ('"x": [3, 8, 8]', f'"x": [3, 8, {LONG}]', "field inputs.x"),
    ('"epochs": 2', f'"epochs": {LONG}', "field training.epochs"),
    ('"lr": 0.1', f'"lr": -{LONG}', "field training.optimizer.lr"),
    ('"version": 1', f'"version": {LONG}', "field version"),
    ('"inputs": ["conv"]}', f'"inputs": ["conv"], "attrs": {{"negative_slope": {LONG}}}}}', "attrs.negative_slope"),
])
def test_a_4301_digit_literal_is_refused_naming_its_field(old, new, field):
    text = json.dumps(BASE).replace(old, new)
    assert new in text
    with pytest.raises(DesignError) as info:
        loads(text, "'t.json'")
    line = info.value.line()
    assert "4,301-digit number" in line and field in line and "'t.json'" in line
    assert len(line) < 300


def test_a_huge_integer_that_parses_is_refused_by_attribute_validation():
    text = json.dumps(BASE).replace('"out_channels": 4', '"out_channels": 1' + "0" * 4000)
    with pytest.raises(AttrError, match=r"out_channels is absurdly large \(1.00e\+4000\)"):
        loads(text)
    text = json.dumps(BASE).replace('"inputs": ["conv"]}', '"inputs": ["conv"], "attrs": {"negative_slope": 1' + "0" * 400 + "}}")
    with pytest.raises(AttrError, match=r"negative_slope is absurdly large \(1.00e\+400\)"):
        loads(text)
    text = json.dumps(BASE).replace('"lr": 0.1', '"lr": 1' + "0" * 400)
    with pytest.raises(DesignError, match=r"training.optimizer.lr"):
        loads(text)
    graph = Graph()
    graph.add("Input", name="x", attrs={"shape": [4]})
    with pytest.raises(AttrError, match="out_features is absurdly large"):
        graph.add("Linear", ["x"], name="fc", attrs={"out_features": 10**5000})


def test_approx_and_shown_never_convert_past_the_digit_limit():
    assert approx(123) == "123" and approx(10**15 - 1) == "999,999,999,999,999"
    assert approx(10**15) == "1.00e+15" and approx(-(10**5000)) == "-1.00e+5000" and approx(99999 * 10**6000) == "9.99e+6004"
    assert shown(10**5000) == "1.00e+5000" and shown("a") == "'a'"
    assert shown([10**5000]) == "<list holding a number too long to print>"
    assert shown(list(range(1000))).endswith("...") and len(shown(list(range(1000)))) == 80


# ---- names and error lines ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conv\n", "conv\r", "co\x00nv", "\x1b[31mconv", "conv\u2028", "1conv", ""])
def test_node_names_are_matched_whole(name):
    graph = Graph()
    graph.add("Input", name="x", attrs={"shape": [4]})
    with pytest.raises(DesignError) as info:
        graph.add("ReLU", ["x"], name=name)
    assert info.value.line().isprintable()


def test_error_lines_escape_control_characters():
    error = DesignError("unknown op '\x1b[31mConv\x00'", "node 'a\nb' field op\r")
    assert error.line() == "unknown op '\\x1b[31mConv\\x00', node 'a\\nb' field op\\r"
    assert str(error) == error.line()
    assert printable("bidi \u202e and \u2028 line, tab\t") == "bidi \\u202e and \\u2028 line, tab\\t"
    assert printable("plain é 中 ok") == "plain é 中 ok"


def test_a_design_file_with_control_characters_in_names_gives_one_printable_line():
    data = json.loads(json.dumps(BASE))
    data["nodes"][1]["share"] = "g\x1b[2J"
    data["nodes"][0]["share"] = "g\x1b[2J"
    with pytest.raises(DesignError) as info:
        loads(json.dumps(data))
    assert info.value.line().isprintable() and "\\x1b[2J" in info.value.line()


# ---- sharing groups -------------------------------------------------------------------------------


def shared_linears(width_a: int, width_b: int) -> Graph:
    b = Builder("share")
    a, c = b.input("a", (width_a,)), b.input("b", (width_b,))
    b.output(b.op("Linear", a, "fa", share="fc", out_features=8), "ya")
    b.output(b.op("Linear", c, "fb", share="fc", out_features=8), "yb")
    return b.graph


def test_sharing_group_members_need_the_same_parameter_shapes():
    graph = shared_linears(256, 400)
    verify(graph)  # attributes agree; only the inputs tell the weights apart
    for check in (lambda: infer_shapes(graph, strict=True), lambda: analyze(graph, strict=True), lambda: estimate_memory(graph)):
        with pytest.raises(ShapeError) as info:
            check()
        line = info.value.line()
        assert "'fa'" in line and "node 'fb' share" in line and "weight of shape [8, 400], where 'fa' has shape [8, 256]" in line
    result = infer_shapes(graph, strict=False)
    assert len(result.report) == 1 and "has shape [8, 256]" in graph.nodes["fb"].meta["error"]
    assert graph.nodes["fa"].meta["error"] is None


def test_sharing_group_members_of_equal_widths_validate():
    graph = shared_linears(256, 256)
    infer_shapes(graph, strict=True)
    assert analyze(graph).total.params == 8 * 256 + 8
