"""Building and saving large graphs: name checks on the fast path, generated names, one node per line."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.design import Design, dumps, loads
from convstudio.ir.errors import DesignError, GraphError
from convstudio.ir.graph import NAME_RE, Graph, verify
from convstudio.ir.groups import Group


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


def graph_state(g: Graph) -> tuple:
    """Everything `add` keeps for a graph: nodes with their fields, consumer index, cached order, owners, ends."""
    nodes = [(n.name, n.op, n.attrs, n.resolved, n.inputs, n.params, n.share) for n in g.nodes.values()]
    return nodes, {m: g.users(m) for m in g.nodes}, g.order_keys(), g._order_end, g.inputs, g.outputs, {m: g.param_owner(m) for m in g.nodes}


def plain_entries() -> list[dict]:
    return [
        {"name": "c", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False}},
        {"name": "b", "op": "BatchNorm2d", "inputs": ["c"], "attrs": {"eps": 0.001}},
        {"name": "r", "op": "ReLU", "inputs": ["b"], "attrs": {}},
        {"name": "c2", "op": "Conv2d", "inputs": ["r"], "attrs": {"out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False}, "share": "s"},
        {"name": "c3", "op": "Conv2d", "inputs": ["c2"], "attrs": {"out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False}, "share": "s"},
        {"name": "a", "op": "Add", "inputs": ["c3", "r"]},
        {"name": "p", "op": "Opaque", "inputs": ["a"], "attrs": {"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[8, 6, 6]]}},
        {"name": "k", "op": "Concat", "inputs": ["p", "p", "a"], "share": None, "attrs": None},
    ]


def one_by_one(entries: list[dict]) -> Graph:
    g = Graph("g")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    for e in entries:
        g.add(e["op"], e.get("inputs", []), e["name"], e.get("attrs"), None, e.get("share"))
    return g


def test_add_plain_builds_what_add_builds_node_by_node_with_each_node_its_own_dicts():
    entries = plain_entries()
    g = Graph("g")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    assert g.add_plain(entries) == len(entries)
    assert graph_state(g) == graph_state(one_by_one(entries))
    g.add("Output", ["k"], name="y")
    verify(g)
    copied = g.copy()
    assert graph_state(copied) == graph_state(g) and copied.outputs == ["y"]
    copied.add("Input", name="x2", attrs={"shape": [3, 8, 8]})
    assert copied.inputs == ["x", "x2"] and g.inputs == ["x"]
    c2, c3 = g.nodes["c2"], g.nodes["c3"]
    assert c2.attrs == c3.attrs and c2.attrs is not c3.attrs and c2.resolved is not c3.resolved and c2.inputs is not entries[3]["inputs"]
    c2.attrs["out_channels"] = 4
    c2.resolved["out_channels"] = 4
    p = g.nodes["p"]
    p.attrs["output_shapes"][0][0] = 1
    assert c3.attrs["out_channels"] == 8 and c3.resolved["out_channels"] == 8 and entries[6]["attrs"]["output_shapes"] == [[8, 6, 6]]


BAD_ENTRIES = {
    "not an object": ["c"],
    "unknown field": {"name": "c", "op": "ReLU", "inputs": ["x"], "pos": 1},
    "name not a string": {"name": 3, "op": "ReLU", "inputs": ["x"]},
    "invalid name": {"name": "a b", "op": "ReLU", "inputs": ["x"]},
    "non-ASCII name": {"name": "é", "op": "ReLU", "inputs": ["x"]},
    "taken name": {"name": "x", "op": "ReLU", "inputs": ["x"]},
    "repeated name": {"name": "c", "op": "ReLU", "inputs": ["x"]},
    "unknown op": {"name": "q", "op": "Relu", "inputs": ["x"]},
    "unhashable op": {"name": "q", "op": ["ReLU"], "inputs": ["x"]},
    "Input op": {"name": "q", "op": "Input", "attrs": {"shape": [3]}},
    "Output op": {"name": "q", "op": "Output", "inputs": ["x"]},
    "inputs not a list": {"name": "q", "op": "ReLU", "inputs": "x"},
    "later producer": {"name": "q", "op": "ReLU", "inputs": ["later"]},
    "output index": {"name": "q", "op": "ReLU", "inputs": ["x:0"]},
    "reference not a string": {"name": "q", "op": "ReLU", "inputs": [["x"]]},
    "reads an Output": {"name": "q", "op": "ReLU", "inputs": ["out"]},
    "attrs not an object": {"name": "q", "op": "ReLU", "inputs": ["x"], "attrs": [1]},
    "attrs an empty list": {"name": "q", "op": "ReLU", "inputs": ["x"], "attrs": []},
    "bad attribute": {"name": "q", "op": "Conv2d", "inputs": ["x"], "attrs": {"out_channels": 0, "kernel_size": 3}},
    "unknown attribute": {"name": "q", "op": "ReLU", "inputs": ["x"], "attrs": {"alpha": 1}},
    "share not a string": {"name": "q", "op": "ReLU", "inputs": ["x"], "share": 1},
    "no inputs": {"name": "q", "op": "Identity"},
    "too few inputs": {"name": "q", "op": "Add", "inputs": ["x"]},
    "too many inputs": {"name": "q", "op": "ReLU", "inputs": ["x", "x"]},
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
@pytest.mark.parametrize("at", [0, 1, 3])
def test_add_plain_stops_before_the_first_entry_that_is_not_the_common_case(case, at):
    """The entries before it are added as `add` adds them; it and the ones after are left to `add`."""
    def base() -> Graph:
        g = Graph("g")
        g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
        g.add("Output", ["x"], name="out")
        g.add("ReLU", ["x"], name="c")
        return g

    entries = [{"name": f"r{i}", "op": "ReLU", "inputs": ["x" if i == 0 else f"r{i - 1}"], "share": "s"} for i in range(4)]
    entries.insert(at, BAD_ENTRIES[case])
    g, expected = base(), base()
    for e in entries[:at]:
        expected.add(e["op"], e["inputs"], e["name"], None, None, e["share"])
    assert g.add_plain(entries) == at
    assert graph_state(g) == graph_state(expected)
    assert g.add("ReLU", ["c"]).name == "relu"  # the graph goes on as one built by `add`


def test_add_plain_leaves_a_graph_with_listeners_to_add():
    g = Graph("g")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    events = []
    g.subscribe(lambda event, info: events.append((event, info)))
    assert g.add_plain([{"name": "r", "op": "ReLU", "inputs": ["x"]}]) == 0
    assert "r" not in g.nodes and events == []


def load_outcome(source: str) -> tuple[str, str]:
    """("error", the line) loading `source` gives, or ("graph", what the loaded graph holds)."""
    try:
        design = loads(source)
    except DesignError as e:
        return "error", e.line()
    return "graph", repr(graph_state(design.graph))


def node_by_node(monkeypatch, source: str) -> tuple[str, str]:
    """`load_outcome` with every node added by `add` (the path every entry that is not the common case takes)."""
    with monkeypatch.context() as m:
        m.setattr(Graph, "add_plain", lambda self, entries: 0)
        return load_outcome(source)


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
@pytest.mark.parametrize("prefix", [0, 3])
def test_loading_gives_what_loading_node_by_node_gives(monkeypatch, case, prefix):
    """The same error line (or graph), whether the entries before the one that is not plain went through `add_plain`."""
    nodes = [{"name": "c", "op": "ReLU", "inputs": ["x"]}]
    nodes += [{"name": f"r{i}", "op": "ReLU", "inputs": ["x" if i == 0 else f"r{i - 1}"]} for i in range(prefix)]
    nodes.append(BAD_ENTRIES[case])
    if case == "later producer":
        nodes.append({"name": "later", "op": "ReLU", "inputs": ["x"]})
    source = json.dumps({"format": "convstudio.design", "version": 1, "name": "d", "inputs": {"x": [3, 8, 8]}, "nodes": nodes,
                         "outputs": {"out": nodes[-1]["name"] if case == "later producer" else "x"}})
    fast = load_outcome(source)
    assert fast == node_by_node(monkeypatch, source)
    assert fast[0] == ("graph" if case in ("later producer", "output index") else "error"), fast


def test_every_template_and_example_loads_as_node_by_node(monkeypatch):
    from pathlib import Path

    from convstudio.ir.templates import TEMPLATES, build_template

    sources = [dumps(Design(build_template(name))) for name in TEMPLATES]
    sources += [p.read_text() for p in sorted((Path(__file__).parents[2] / "examples").glob("*.json"))]
    assert len(sources) > 20
    for source in sources:
        assert load_outcome(source) == node_by_node(monkeypatch, source)


def pairs_text(value, draw_space) -> str:
    """JSON text of `value`, where an object is a list of (key, value) pairs that may repeat a key."""
    if isinstance(value, tuple):  # an object
        members = [f"{json.dumps(k)}{draw_space()}:{draw_space()}{pairs_text(v, draw_space)}" for k, v in value[0]]
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(pairs_text(v, draw_space) for v in value) + "]"
    return json.dumps(value)


KEYS = st.sampled_from(["a", "b", "nodes", "attrs", "layout", "x:1", "name", ":"])
SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(["s", "a:b", ":", '":', "x"]), st.booleans(), st.none())
JSON_PAIRS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(st.tuples(KEYS, inner), max_size=4).map(lambda pairs: (pairs,))),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON_PAIRS.map(lambda v: v if isinstance(v, tuple) else ([("nodes", v)],)), st.lists(st.sampled_from(["", " ", "\n", "\t "]), min_size=1))
def test_parsing_refuses_a_repeated_name_in_any_object_as_member_by_member_parsing_does(value, spaces):
    from convstudio.ir.design import _parse, _unique_keys

    turn = iter(range(10**6))
    text = pairs_text(value, lambda: spaces[next(turn) % len(spaces)])

    def outcome(parse):
        try:
            return "value", parse(text)
        except DesignError as e:
            return "error", e.what

    expected = outcome(lambda t: json.loads(t, object_pairs_hook=_unique_keys))
    assert outcome(_parse) == expected


@pytest.mark.parametrize("where", ["top", "inputs", "node", "attrs", "nested attrs", "layout", "outputs", "training"])
def test_a_design_file_with_a_name_twice_in_any_object_is_refused(where):
    g = Graph("d")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    g.add("Opaque", ["x"], name="op", attrs={"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[3, 8, 8]]})
    g.add("Conv2d", ["op"], name="c", attrs={"out_channels": 4, "kernel_size": 3})
    g.add("Output", ["c"], name="y")
    g.layout = {"x": (0.0, 0.0), "c": (1.0, 2.0)}
    text = dumps(Design(g, {"epochs": 2}))
    assert loads(text).graph.nodes["c"].attrs["out_channels"] == 4
    repeat = {
        "top": ('"name": "d"', '"name": "d", "name": "e"'),
        "inputs": ('"x": [3, 8, 8]', '"x": [3, 8, 8], "x": [3, 8, 8]'),
        "node": ('"name": "c"', '"name": "c", "name": "c"'),
        "attrs": ('"kernel_size": 3', '"kernel_size": 3, "kernel_size": 5'),
        "nested attrs": ('"output_shapes": [[3, 8, 8]]', '"output_shapes": [[3, 8, 8]], "more": {"k": 1, "k": 2}'),
        "layout": ('"c": [1.0, 2.0]', '"c": [1.0, 2.0], "c": [1.0, 2.0]'),
        "outputs": ('"y": "c"', '"y": "c", "y": "c"'),
        "training": ('"epochs": 2', '"epochs": 2, "epochs": 3'),
    }[where]
    assert text.count(repeat[0]) == 1
    with pytest.raises(DesignError, match="duplicate key"):
        loads(text.replace(*repeat))


@pytest.mark.parametrize("built_at", ["start", "never", "after add"])
def test_the_consumer_index_built_when_first_asked_for_follows_every_edit(built_at):
    """Whether the index is built at once, after the nodes are added or only at the end, every edit leaves it equal to the
    consumers the inputs name (in insertion order for a graph only added to)."""
    g = Graph("g")
    if built_at == "start":
        g.users("x")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("ReLU", ["x"], name="a")
    g.add("ChannelSplit", ["a"], name="s")
    g.add("Concat", ["s:0", "s:1", "a"], name="c")
    g.add("Add", ["c", "c"], name="d")
    g.add("Output", ["d"], name="y")
    if built_at == "after add":
        assert g.users("a") == [("s", 0), ("c", 2)] and g.users("c") == [("d", 0), ("d", 1)]

    def consumers() -> dict:
        return {m: sorted((c, i) for c in g.nodes for i, ref in enumerate(g.nodes[c].inputs)
                          if ref is not None and ref.partition(":")[0] == m) for m in g.nodes}

    edits = [
        lambda: g.set_input("d", 1, "a"),
        lambda: g.remove_input("c", 0),
        lambda: g.add("ReLU", ["c"], name="r"),
        lambda: g.replace_all_uses("c", "r", exclude=["r"]),
        lambda: g.rename("a", "a2"),
        lambda: g.set_inputs("c", ["s:1", "a2", "s:0"]),
        lambda: g.set_input("y", 0, "r"),
        lambda: g.erase("d"),
    ]
    for edit in edits:
        edit()
        if built_at != "never":
            verify(g)  # compares a built index with the inputs
            assert {m: sorted(g.users(m)) for m in g.nodes} == consumers()
    assert {m: sorted(g.users(m)) for m in g.nodes} == consumers()
    assert g.user_count("a2") == 2 and g.value_users("s:1") == [("c", 0)]
    copied = g.copy()
    assert {m: copied.users(m) for m in copied.nodes} == {m: g.users(m) for m in g.nodes}
    with pytest.raises(GraphError, match="still feeds"):
        g.erase("r")


def test_user_counts_without_an_index_follow_edits_and_equal_the_index():
    g = Graph("g")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("ChannelSplit", ["x"], name="s")
    g.add("Concat", ["s:0", "s:1", "x"], name="c")
    g.add("Add", ["c", "c"], name="d")
    g.add("Output", ["d"], name="y")
    names = list(g.nodes)
    assert [g.user_count(m) for m in names] == [2, 2, 2, 1, 0] and g._users is None
    g.set_input("d", 1, "s:1")
    assert [g.user_count(m) for m in names] == [2, 3, 1, 1, 0]
    assert g.add_plain([{"name": "r", "op": "ReLU", "inputs": ["c"]}]) == 1
    g.add("ReLU", ["r"], name="q")
    assert g.user_count("c") == 2 and g.user_count("r") == 1 and g.user_count("q") == 0
    counts = {m: g.user_count(m) for m in g.nodes}
    g.users("x")  # builds the index
    assert {m: g.user_count(m) for m in g.nodes} == counts == {m: len(g.users(m)) for m in g.nodes}


@pytest.mark.parametrize("escaped", [False, True])
def test_input_references_to_an_output_k_do_not_hide_a_repeated_name(escaped):
    """A colon in "node:k" is a colon of the text, unless written as an escape: a repeat is refused either way."""
    g = Graph("d")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("ChannelSplit", ["x"], name="s")
    g.add("Concat", ["s:1", "s:0"], name="c")
    g.add("Output", ["c"], name="y")
    text = dumps(Design(g))
    if escaped:
        text = text.replace('"s:1"', '"s\\u003a1"')
    assert loads(text).graph.nodes["c"].inputs == ["s:1", "s:0"]
    with pytest.raises(DesignError, match="duplicate key 'name'"):
        loads(text.replace('"name": "d"', '"name": "d", "name": "e"'))


@pytest.mark.parametrize("escaped", [False, True])
def test_colons_in_names_and_strings_outside_the_nodes_keep_the_fast_parse_and_a_repeat_is_still_refused(monkeypatch, escaped):
    """A design's name, a group's name, a training field and an output reading "node:k" hold colons of the text: the file
    is parsed without the per-object check, unless a colon is written as an escape; a repeated name is refused either way."""
    from convstudio.ir import design

    g = Graph("ResNet: pruned")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("ChannelSplit", ["x"], name="s")
    g.add("ReLU", ["s:0"], name="r")
    g.add("Output", ["r"], name="y")
    g.add("Output", ["s:1"], name="rest")
    g.groups = {"stage 1: stem": Group("stage 1: stem", ["s", "r"])}
    text = dumps(Design(g, {"dataset": "digits:v2.npz"}))
    if escaped:
        text = text.replace('"s:1"', '"s\\u003a1"')
    assert text.count(":") > text.count('":')  # colons inside strings
    checked = []
    real = design._unique_keys
    monkeypatch.setattr(design, "_unique_keys", lambda pairs: checked.append(1) or real(pairs))
    loaded = loads(text)
    assert loaded.graph.name == "ResNet: pruned" and loaded.graph.nodes["rest"].inputs == ["s:1"] and loaded.training["dataset"] == "digits:v2.npz"
    assert list(loaded.graph.groups) == ["stage 1: stem"]
    assert bool(checked) == escaped
    for repeat in ('"name": "ResNet: pruned"', '"dataset": "digits:v2.npz"', '"y": "r"'):
        with pytest.raises(DesignError, match="duplicate key"):
            loads(text.replace(repeat, f"{repeat}, {repeat}"))
