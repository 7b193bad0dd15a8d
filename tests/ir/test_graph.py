"""Graph edit primitives keep both edge directions consistent; verify catches broken graphs."""

import networkx as nx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from convstudio.ir.errors import AttrError, DesignError, GraphError
from convstudio.ir.graph import Graph, make_ref, parse_ref, verify


def chain() -> Graph:
    g = Graph("chain")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["conv"], name="relu")
    g.add("Output", ["relu"], name="y")
    return g


def test_refs_round_trip():
    assert parse_ref("split:1") == ("split", 1)
    assert parse_ref("conv") == ("conv", 0)
    assert make_ref("split", 1) == "split:1" and make_ref("conv", 0) == "conv"
    with pytest.raises(GraphError):
        parse_ref("conv:x")
    with pytest.raises(GraphError):
        parse_ref("conv:²")  # a digit to str.isdigit, not to int()


def test_add_tracks_users_inputs_and_outputs():
    g = chain()
    verify(g)
    assert g.inputs == ["x"] and g.outputs == ["y"]
    assert g.users("conv") == [("relu", 0)]
    assert g.users("y") == []
    assert list(g.nodes) == ["x", "conv", "relu", "y"]
    assert g["conv"].resolved["kernel_size"] == (3, 3)
    assert g["conv"].resolved["stride"] == (1, 1)
    assert g["conv"].attrs == {"out_channels": 4, "kernel_size": 3, "padding": 1}


def test_add_rejects_bad_names_duplicates_and_dangling_refs():
    g = chain()
    with pytest.raises(GraphError, match="duplicate"):
        g.add("ReLU", ["x"], name="relu")
    with pytest.raises(GraphError, match="invalid node name"):
        g.add("ReLU", ["x"], name="1bad")
    with pytest.raises(GraphError, match="refers to no node"):
        g.add("ReLU", ["nowhere"], name="r2")
    with pytest.raises(GraphError, match="Output node"):
        g.add("ReLU", ["y"], name="r3")
    with pytest.raises(AttrError, match="unknown op"):
        g.add("Conv3d", ["x"], name="c3")
    with pytest.raises(AttrError, match="needs attribute 'kernel_size'"):
        g.add("Conv2d", ["x"], name="c4", attrs={"out_channels": 2})
    assert list(g.nodes) == ["x", "conv", "relu", "y"]
    verify(g)


def test_fresh_name_is_unique_and_valid():
    g = chain()
    assert g.fresh_name("relu") == "relu_1"
    assert g.fresh_name("3x3 conv") == "n_3x3_conv"
    assert g.add("ReLU", ["relu"]).name == "relu_1"


def test_fresh_name_takes_the_smallest_free_suffix_after_erase_and_rename():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4]})
    assert [g.add("ReLU", ["x"]).name for _ in range(5)] == ["relu", "relu_1", "relu_2", "relu_3", "relu_4"]
    g.erase("relu_2")
    g.rename("relu_1", "kept")
    assert g.fresh_name("relu") == "relu_1"
    assert [g.add("ReLU", ["x"]).name for _ in range(3)] == ["relu_1", "relu_2", "relu_5"]
    assert g.copy().fresh_name("relu") == g.fresh_name("relu") == "relu_6"
    g.add("ReLU", ["x"], name="relu_" + "9" * 30)
    g.erase("relu_" + "9" * 30)
    assert g.fresh_name("relu") == "relu_6"


def reference_fresh_name(g: Graph, base: str) -> str:
    """The name `fresh_name` must give: `base`, else `base_k` with the smallest free k."""
    if base not in g.nodes:
        return base
    k = 1
    while f"{base}_{k}" in g.nodes:
        k += 1
    return f"{base}_{k}"


def reference_topo_order(g: Graph) -> list[str]:
    position = {name: i for i, name in enumerate(g.nodes)}
    return list(nx.lexicographical_topological_sort(g.to_networkx(), key=position.__getitem__))


GRAPH_EDITS = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "erase", "rename", "connect"]), st.integers(0, 50), st.integers(0, 50),
              st.sampled_from(["relu", "relu_1", "relu_3", "sigmoid_2", "other"])),
    min_size=1, max_size=40,
)


def apply_edit(g: Graph, edit: tuple) -> str | None:
    """Apply one generated edit where it is legal; returns the name of an added node."""
    kind, i, j, text = edit
    names = list(g.nodes)
    if kind == "add":
        return g.add("ReLU" if i % 2 else "Sigmoid", [names[j % len(names)]]).name
    if kind == "erase":
        sinks = [n for n in names if n != "x" and not g.users(n)]
        if sinks:
            g.erase(sinks[i % len(sinks)])
    elif kind == "rename":
        if text not in g.nodes and names[i % len(names)] != "x":
            g.rename(names[i % len(names)], text)
    else:
        consumer, producer = names[i % len(names)], names[j % len(names)]
        if consumer != "x" and producer != consumer and producer not in g.descendants(consumer):
            g.set_input(consumer, 0, producer)
    return None


def start() -> Graph:
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4]})
    return g


@settings(max_examples=60, deadline=None)
@given(edits=GRAPH_EDITS)
def test_names_order_and_consumers_stay_right_after_random_edits(edits):
    """fresh_name gives the smallest free suffix, the cached topological order equals a fresh sort, verify
    passes, and the same edits give the same names and order again."""
    g = start()
    added = []
    for edit in edits:
        added.append(apply_edit(g, edit))
        for base in ("relu", "sigmoid", "relu_1"):
            assert g.fresh_name(base) == reference_fresh_name(g, base)
        assert g.topo_order() == reference_topo_order(g)
        assert g.copy().topo_order() == g.topo_order()
        g.add("Output", [list(g.nodes)[-1]], name="out")
        verify(g)
        g.erase("out")
    again = start()
    assert [apply_edit(again, edit) for edit in edits] == added
    assert list(again.nodes) == list(g.nodes) and again.topo_order() == g.topo_order()


@settings(max_examples=60, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(["add", "connect", "append", "remove", "erase"]), st.integers(0, 60), st.integers(0, 60)),
                      min_size=1, max_size=60))
@example(edits=[("add", 0, 0), ("add", 0, 0), ("connect", 0, 2)])  # a node made to read one inserted after it moves behind it
def test_cached_order_equals_a_fresh_sort_after_edits_of_many_input_nodes(edits):
    """Edits of Concat nodes with several inputs (connect, append, remove a slot) keep the cached order only when it is still
    the stable order a fresh sort gives."""
    g = start()
    g.topo_order()
    for kind, i, j in edits:
        names = list(g.nodes)
        concats = [n for n in names if g.nodes[n].op == "Concat"]
        if kind == "add" or not concats:
            g.add("Concat", [names[i % len(names)], names[j % len(names)]])
        elif kind == "erase":
            sinks = [n for n in names if n != "x" and not g.users(n)]
            g.erase(sinks[i % len(sinks)])
        else:
            consumer = concats[i % len(concats)]
            producer = names[j % len(names)]
            slots = len(g.nodes[consumer].inputs)
            if kind == "remove" and slots > 1:
                g.remove_input(consumer, i % slots)
            elif producer != consumer and producer not in g.descendants(consumer):
                g.set_input(consumer, slots if kind == "append" else j % slots, producer)
        assert g.topo_order() == reference_topo_order(g)


def test_a_node_nothing_reads_follows_its_new_producer_in_the_cached_order():
    """Rewiring a node nothing reads to the last node moves it to the end without a new sort; to any other node, the
    order is sorted again (it goes before later nodes inserted after it)."""
    g = start()
    for name in ("a", "b", "p", "q"):
        g.add("ReLU", ["x"], name=name)
    g.topo_order()
    g.set_input("b", 0, "p")
    assert g.topo_order() == reference_topo_order(g) == ["x", "a", "p", "b", "q"]
    g.set_input("b", 0, "q")
    assert g._order_cache is not None  # kept, not sorted again
    assert g.topo_order() == reference_topo_order(g) == ["x", "a", "p", "q", "b"]
    g.add("Output", ["b"], name="y")
    g.set_input("y", 0, "a")
    assert g.topo_order() == reference_topo_order(g)
    g.set_input("y", 0, "b")
    assert g.topo_order() == reference_topo_order(g) == ["x", "a", "p", "q", "b", "y"]


def test_set_input_moves_the_consumer_entry():
    g = chain()
    g.add("Identity", ["x"], name="ident")
    g.set_input("relu", 0, "ident")
    assert g.users("conv") == []
    assert g.users("ident") == [("relu", 0)]
    g.set_input("relu", 0, None)
    assert g["relu"].inputs == [None] and g.users("ident") == []
    with pytest.raises(GraphError, match="not connected"):
        verify(g)


def test_remove_input_shifts_later_indices():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [2, 4, 4]})
    g.add("ReLU", ["x"], name="a")
    g.add("ReLU", ["x"], name="b")
    g.add("ReLU", ["x"], name="c")
    g.add("Concat", ["a", "b", "c"], name="cat")
    g.add("Output", ["cat"], name="y")
    assert g.remove_input("cat", 0) == "a"
    assert g["cat"].inputs == ["b", "c"]
    assert g.users("b") == [("cat", 0)] and g.users("c") == [("cat", 1)] and g.users("a") == []
    g.set_inputs("cat", ["c", "b", "a"])
    assert g["cat"].inputs == ["c", "b", "a"]
    assert sorted(g.users("a")) == [("cat", 2)]
    g.set_inputs("cat", ["a"])
    assert g["cat"].inputs == ["a"] and g.users("b") == [] and g.users("c") == []
    verify(g)
    for edit in (lambda: g.remove_input("cat", 1), lambda: g.remove_input("cat", -1), lambda: g.set_input("cat", 2, "b")):
        with pytest.raises(GraphError, match="input index .* is out of range"):
            edit()
    assert g["cat"].inputs == ["a"] and g.users("b") == []


def test_set_attr_validates_and_resets_to_default():
    g = chain()
    g.set_attr("conv", "stride", 2)
    assert g["conv"].resolved["stride"] == (2, 2)
    g.set_attr("conv", "stride", None)
    assert "stride" not in g["conv"].attrs and g["conv"].resolved["stride"] == (1, 1)
    with pytest.raises(AttrError, match="kernel_size must be >= 1"):
        g.set_attr("conv", "kernel_size", 0)
    with pytest.raises(AttrError, match="groups"):
        g.set_attr("conv", "groups", 3)
    assert g["conv"].attrs["kernel_size"] == 3 and "groups" not in g["conv"].attrs
    g.set_attrs("conv", {"out_channels": 8, "kernel_size": [1, 3]})
    assert g["conv"].resolved["kernel_size"] == (1, 3) and g["conv"].resolved["padding"] == (0, 0)


def test_erase_refuses_a_node_with_consumers():
    g = chain()
    with pytest.raises(GraphError, match="still feeds relu"):
        g.erase("conv")
    g.replace_all_uses("relu", "conv")
    removed = g.erase("relu")
    assert removed.name == "relu"
    assert g["y"].inputs == ["conv"] and g.users("conv") == [("y", 0)]
    verify(g)


def test_replace_all_uses_only_moves_that_value():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4, 2, 2]})
    g.add("ChannelSplit", ["x"], name="split")
    g.add("ReLU", ["split:0"], name="a")
    g.add("ReLU", ["split:1"], name="b")
    g.add("Add", ["a", "b"], name="sum")
    g.add("Output", ["sum"], name="y")
    assert g.value_users("split:1") == [("b", 0)]
    moved = g.replace_all_uses("split:1", "split:0")
    assert moved == 1 and g["b"].inputs == ["split:0"]
    assert sorted(g.users("split")) == [("a", 0), ("b", 0)]
    moved = g.replace_all_uses("a", "b", exclude=["sum"])
    assert moved == 0
    verify(g)


def test_rename_updates_every_reference_and_layout():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4, 2, 2]})
    g.add("ChannelSplit", ["x"], name="split")
    g.add("Concat", ["split:1", "split:0"], name="cat")
    g.add("Output", ["cat"], name="y")
    g.layout["split"] = (10.0, 20.0)
    events = []
    g.subscribe(lambda e, info: events.append((e, info)))
    g.rename("split", "halves")
    assert g["cat"].inputs == ["halves:1", "halves"]
    assert sorted(g.users("halves")) == [("cat", 0), ("cat", 1)]
    assert list(g.nodes) == ["x", "halves", "cat", "y"]
    assert g.layout == {"halves": (10.0, 20.0)}
    assert events == [("rename", {"old": "split", "new": "halves"})]
    with pytest.raises(GraphError, match="duplicate"):
        g.rename("cat", "x")
    verify(g)


def test_events_are_emitted_for_each_edit():
    g = chain()
    seen = []
    listener = lambda e, info: seen.append((e, info.get("name")))  # noqa: E731
    g.subscribe(listener)
    g.add("ReLU", ["relu"], name="r2")
    g.set_attr("conv", "bias", False)
    g.set_input("y", 0, "r2")
    g.set_input("y", 0, "relu")
    g.erase("r2")
    g.unsubscribe(listener)
    g.set_attr("conv", "bias", True)
    assert seen == [("add", "r2"), ("attr", "conv"), ("input", "y"), ("input", "y"), ("erase", "r2")]


def test_copy_is_independent():
    g = chain()
    c = g.copy()
    c.set_attr("conv", "out_channels", 16)
    c.add("ReLU", ["relu"], name="extra")
    assert g["conv"].attrs["out_channels"] == 4 and "extra" not in g
    assert g.users("relu") == [("y", 0)]
    verify(c)
    verify(g)


def test_topo_order_is_stable_and_generations_group_by_depth():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [2, 4, 4]})
    g.add("ReLU", ["x"], name="b")
    g.add("Sigmoid", ["x"], name="a")
    g.add("Add", ["a", "b"], name="sum")
    g.add("Output", ["sum"], name="y")
    assert g.topo_order() == ["x", "b", "a", "sum", "y"]
    assert g.generations() == [["x"], ["b", "a"], ["sum"], ["y"]]
    assert g.descendants("b") == {"sum", "y"}
    assert g.descendants("y") == set()


def test_cycle_is_reported_with_its_path():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [2, 4, 4]})
    g.add("Add", ["x", "x"], name="a")
    g.add("ReLU", ["a"], name="b")
    g.add("Output", ["b"], name="y")
    g.set_input("a", 1, "b")
    with pytest.raises(GraphError, match="cycle: (a -> b -> a|b -> a -> b)"):
        g.topo_order()
    assert set(g.find_cycle()) == {"a", "b"}
    with pytest.raises(GraphError, match="cycle"):
        verify(g)


def test_param_owner_follows_sharing_edits():
    """param_owner keeps one owner table instead of scanning per node: it stays right through add, erase, rename,
    set_share and reorder."""
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [8]})
    for name in ("a", "b", "c"):
        g.add("Linear", ["x"], name=name, attrs={"out_features": 4}, share="emb")

    def check(expected: dict[str, str]) -> None:
        assert {n: g.param_owner(n) for n in g.nodes} == expected
        firsts = {m[0] for m in g.share_groups().values()}
        assert all(g.param_owner(n) in firsts or g.param_owner(n) == n for n in g.nodes)

    check({"x": "x", "a": "a", "b": "a", "c": "a"})
    g.erase("a")
    check({"x": "x", "b": "b", "c": "b"})
    g.rename("b", "b2")
    check({"x": "x", "b2": "b2", "c": "b2"})
    g.reorder(["x", "c", "b2"])
    check({"x": "x", "c": "c", "b2": "c"})
    g.set_share("c", "other")
    check({"x": "x", "c": "c", "b2": "b2"})
    g.add("Linear", ["x"], name="d", attrs={"out_features": 4}, share="other")
    check({"x": "x", "c": "c", "b2": "b2", "d": "c"})


def test_share_groups_and_param_owner():
    g = Graph()
    g.add("Input", name="a", attrs={"shape": [8]})
    g.add("Input", name="b", attrs={"shape": [8]})
    g.add("Linear", ["a"], name="fa", attrs={"out_features": 4}, share="emb")
    g.add("Linear", ["b"], name="fb", attrs={"out_features": 4}, share="emb")
    g.add("Output", ["fa"], name="ya")
    g.add("Output", ["fb"], name="yb")
    verify(g)
    assert g.share_groups() == {"emb": ["fa", "fb"]}
    assert g.param_owner("fb") == "fa" and g.param_owner("fa") == "fa" and g.param_owner("a") == "a"
    g.set_attr("fb", "out_features", 5)
    with pytest.raises(AttrError, match="attributes differ"):
        verify(g)
    g.set_attr("fb", "out_features", 4)
    g.set_share("fb", None)
    assert g.share_groups() == {"emb": ["fa"]}


def test_verify_catches_structural_problems():
    g = chain()
    g["relu"].inputs.append("conv")
    with pytest.raises(GraphError, match="takes 1 input, has 2"):
        verify(g)
    g = chain()
    g.users("conv")  # the consumer index is built on first use
    g._users["conv"].append(("y", 0))
    with pytest.raises(GraphError, match="out of step"):
        verify(g)
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4]})
    with pytest.raises(GraphError, match="no outputs"):
        verify(g)
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4, 2, 2]})
    g.add("ChannelSplit", ["x"], name="s")
    g.add("Output", ["s:2"], name="y")
    with pytest.raises(GraphError, match="output 2 of a node with 2"):
        verify(g)


def test_errors_name_what_and_where():
    e = GraphError("input 'q' refers to no node", "node 'c' input 0")
    assert e.line() == "input 'q' refers to no node, node 'c' input 0"
    assert isinstance(e, DesignError)
    assert e.at("file 'a.json'").where == "file 'a.json' node 'c' input 0"


def test_inputs_outputs_and_layer_count_follow_every_edit_of_input_and_output_nodes():
    g = Graph("ends")
    g.add("Input", name="a", attrs={"shape": [3, 8, 8]})
    r = g.add("ReLU", ["a"]).name
    g.add("Output", [r], name="y")
    assert (g.inputs, g.outputs, g.layer_count()) == (["a"], ["y"], 1)
    g.add("Input", name="b", attrs={"shape": [3, 8, 8]})
    g.add("Output", ["b"], name="z")
    assert (g.inputs, g.outputs, g.layer_count()) == (["a", "b"], ["y", "z"], 1)
    g.rename("a", "first")
    g.erase("z")
    assert (g.inputs, g.outputs) == (["first", "b"], ["y"])
    g.reorder(["b", "first", r, "y"])
    assert g.inputs == ["b", "first"]
    g.erase("b")
    copy = g.copy()
    g.inputs.append("not kept")  # each call returns a fresh list
    assert (g.inputs, g.outputs, g.layer_count()) == (["first"], ["y"], 1) == (copy.inputs, copy.outputs, copy.layer_count())
