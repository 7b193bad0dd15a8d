"""Building, loading and saving large graphs: name checks on the fast path, how the cyclic collector sees the nodes, one node per line."""

import gc
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.design import Design, dumps, load, loads, save
from convstudio.ir.errors import GraphError
from convstudio.ir.graph import NAME_RE, Graph, paused_gc


def relu_chain(n: int) -> Graph:
    g = Graph("bulk")
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for _ in range(n):
        x = g.add("ReLU", [x]).name
    g.add("Output", [x], name="y")
    return g


@pytest.fixture
def default_collector():
    """The collector enabled with CPython's default thresholds and nothing frozen, as a fresh program has it."""
    was_enabled, thresholds = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    yield
    gc.set_threshold(*thresholds)
    if not was_enabled:
        gc.disable()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=6), st.sampled_from(["a\n", "é", "ℌx", "_", "_1", "a b", "x\u200b", "", "9", "a-b", "Zz_09"])))
def test_add_accepts_exactly_the_names_name_re_accepts(name):
    g = Graph()
    valid = NAME_RE.match(name) is not None
    try:
        g.add("Input", name=name, attrs={"shape": [4]})
    except GraphError as e:
        assert not valid and e.what.startswith("invalid node name") and e.where == f"node {name!r} field name"
    else:
        assert valid and list(g.nodes) == [name]


def test_generated_names_stay_unique_next_to_given_ones():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4]})
    g.add("ReLU", ["x"], name="relu_2")
    names = [g.add("ReLU", ["x"]).name for _ in range(4)]
    assert names == ["relu", "relu_1", "relu_3", "relu_4"]
    with pytest.raises(GraphError, match="duplicate node name 'relu_3'"):
        g.add("ReLU", ["x"], name="relu_3")


def test_a_graph_built_node_by_node_is_not_rescanned_as_it_grows(default_collector):
    """Every 1024 nodes the graph's objects are aged: no collection of the older generations runs while it is built."""
    generations = []

    def record(phase, info):
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    try:
        g = relu_chain(20_000)
    finally:
        gc.callbacks.remove(record)
    assert generations.count(0) > 0 and generations.count(1) == 0 and generations.count(2) == 0
    aged = {id(obj) for obj in gc.get_objects(generation=2)}
    assert all(id(node) in aged for node in list(g)[:16_384])
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_building_leaves_the_programs_frozen_objects_and_a_paused_collector_alone(default_collector):
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        relu_chain(3_000)
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
    with paused_gc():
        relu_chain(3_000)
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_loaded_design_is_aged_at_once(default_collector, tmp_path):
    save(Design(relu_chain(5_000)), tmp_path / "d.json")
    design = load(tmp_path / "d.json")
    aged = {id(obj) for obj in gc.get_objects(generation=2)}
    assert all(id(node) in aged for node in design.graph)
    assert gc.isenabled() and gc.get_count()[0] < 700
    assert dumps(loads(dumps(design))) == (tmp_path / "d.json").read_text()


@pytest.mark.parametrize("reason", ["plain", "kept: '}, {' é", 'quoted "}, {"'])
def test_dumps_writes_one_node_per_line_whatever_the_strings_inside_hold(reason):
    g = Graph("odd")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("Opaque", ["x"], name="kept", attrs={"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[4, 8, 8]], "reason": reason})
    g.add("ReLU", ["kept"], name="r")
    g.add("Output", ["r"], name="y")
    text = dumps(Design(g))
    lines = text.splitlines()
    start = lines.index('  "nodes": [') + 1
    assert lines[start:start + 3] == [
        "    " + json.dumps({"name": "kept", "op": "Opaque", "inputs": ["x"], "attrs": g.nodes["kept"].attrs}, ensure_ascii=False) + ",",
        "    " + json.dumps({"name": "r", "op": "ReLU", "inputs": ["kept"]}),
        "  ],",
    ]
    assert dumps(loads(text)) == text and loads(text).graph.nodes["kept"].attrs["reason"] == reason
