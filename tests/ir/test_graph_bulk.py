"""Building and saving large graphs: name checks on the fast path, generated names, one node per line."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.design import Design, dumps, loads
from convstudio.ir.errors import GraphError
from convstudio.ir.graph import NAME_RE, Graph


def relu_chain(n: int) -> Graph:
    g = Graph("bulk")
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for _ in range(n):
        x = g.add("ReLU", [x]).name
    g.add("Output", [x], name="y")
    return g


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


AGEING = """
import gc
from convstudio.ir.graph import AGE_EVERY, LARGE_GRAPH, Graph, verify

def build(graph, n):
    x = graph.nodes["x"].name if "x" in graph.nodes else graph.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    while len(graph) < n:
        x = graph.add("ReLU", [x]).name
    return x

kept = [[i] for i in range(1000)]  # the program's own objects, frozen as a forking server does
gc.freeze()
frozen = gc.get_freeze_count()
g = Graph("frozen")
build(g, LARGE_GRAPH + AGE_EVERY)
assert gc.get_freeze_count() == frozen, "a program's frozen objects stayed frozen: nothing was aged"
gc.unfreeze()

g = Graph("large")
gc.collect()
gc.set_threshold(10**9)  # no collection of its own: what is young below was built since the last ageing
x = build(g, LARGE_GRAPH + AGE_EVERY - 1)
young = len(gc.get_objects(0))
g.add("ReLU", [x])  # the node that makes the size a multiple of AGE_EVERY
assert len(gc.get_objects(0)) < 100 and young > AGE_EVERY, (len(gc.get_objects(0)), young)
assert gc.get_freeze_count() == 0
g.add("Output", [g.topo_order()[-1]], name="y")
verify(g)

from convstudio.ir.design import Design, dumps, loads
from convstudio.ir.graph import keep_built, paused_gc

text = dumps(Design(g))
small = Graph("small")
build(small, 100)
small.add("Output", [small.topo_order()[-1]], name="y")
for design_text, aged in ((text, True), (dumps(Design(small)), False)):
    gc.collect()
    loaded = loads(design_text)  # a paused stretch that keeps what it built when the design is large
    young = len(gc.get_objects(0))
    assert (young < 100) == aged, (young, aged)
gc.collect()
with paused_gc():
    kept = [[i] for i in range(AGE_EVERY)]
keep_built(g)  # outside a paused stretch: nothing to do, now or when the next one ends
with paused_gc():
    pass
assert len(gc.get_objects(0)) > AGE_EVERY
print(len(g))
"""


def test_a_large_graph_ages_what_it_built_and_leaves_a_programs_frozen_objects_frozen():
    """From LARGE_GRAPH nodes on, `add` moves young objects to the collector's oldest generation every AGE_EVERY nodes,
    and loading such a design ages it when its paused stretch ends (a small one is left young); run in its own
    interpreter, so the collector of this test process keeps its own timing."""
    import subprocess
    import sys

    from convstudio.ir.graph import AGE_EVERY, LARGE_GRAPH

    done = subprocess.run([sys.executable, "-c", AGEING], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == LARGE_GRAPH + AGE_EVERY + 1
