"""Cost analysis: totals, conventions, peak activation memory, sharing, batch scaling, incremental updates."""

from __future__ import annotations

import gc
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.cost import Analyzer, LiveBytes, analyze, peak_activation_bytes, schedule_buffers
from convstudio.ir.errors import DesignError, ShapeError
from convstudio.ir.graph import Graph
from convstudio.ir.templates import build_template


def small_cnn() -> Graph:
    """conv -> bn -> relu -> maxpool -> upsample, added back to relu -> global pool -> linear."""
    g = Graph("small")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add("BatchNorm2d", ["conv"], name="bn")
    g.add("ReLU", ["bn"], name="relu")
    g.add("MaxPool2d", ["relu"], name="pool", attrs={"kernel_size": 2})
    g.add("Upsample", ["pool"], name="up", attrs={"scale_factor": 2})
    g.add("Add", ["up", "relu"], name="add")
    g.add("GlobalAvgPool", ["add"], name="gap")
    g.add("Flatten", ["gap"], name="flat")
    g.add("Linear", ["flat"], name="fc", attrs={"out_features": 10})
    g.add("Output", ["fc"], name="y")
    return g


# Per node (macs, flops, fvcore) worked out by hand from docs/cost.md:
# conv 4·8·8·27 = 6912 MACs, 2·6912 + 256 bias; bn 2·256; relu 256; pool 4·4·4·3; up 256 (nearest);
# add 256; gap 256 + 4 (fvcore 256); fc 4·10 = 40 MACs, 80 + 10 bias.
SMALL = {
    "conv": (6912, 14080, 6912), "bn": (0, 512, 512), "relu": (0, 256, 0), "pool": (0, 192, 0), "up": (0, 256, 256),
    "add": (0, 256, 0), "gap": (0, 260, 256), "flat": (0, 0, 0), "fc": (40, 90, 40),
}


def test_totals_and_conventions_match_hand_counts():
    for convention, column in (("torchvision", 0), ("flops", 1), ("fvcore", 2)):
        report = analyze(small_cnn(), convention)
        nodes = report.by_name()
        for name, values in SMALL.items():
            assert nodes[name].macs == values[0], name
            assert nodes[name].flops == values[column], (convention, name)
        assert report.total.macs == 6952
        assert report.total.flops == sum(v[column] for v in SMALL.values())
        assert report.total.params == (4 * 27 + 4) + 8 + (4 * 10 + 10)
    assert analyze(small_cnn(), "flops").total.flops == 15902
    assert analyze(small_cnn(), "fvcore").total.flops == 7976
    assert analyze(small_cnn(), "torchvision").total.flops == 6952


def test_node_formulas_follow_the_convention():
    assert analyze(small_cnn(), "fvcore").by_name()["bn"].formula == "2·numel (eval, affine) = 512"
    assert analyze(small_cnn(), "torchvision").by_name()["conv"].formula.startswith("Cout·Ho·Wo·(Cin/g)·kh·kw = 4·8·8·3·3·3")
    assert analyze(small_cnn(), "flops").by_name()["conv"].formula == "2·macs + bias 256"


def test_lenet_totals():
    report = analyze(build_template("lenet"))
    # conv1 6·25 + 6, conv2 16·6·25 + 16, fc1 400·120 + 120, fc2 120·84 + 84, fc3 84·10 + 10
    assert report.total.params == 156 + 2416 + 48120 + 10164 + 850
    # conv1 6·28·28·25, conv2 16·10·10·150, fc 400·120 + 120·84 + 84·10
    assert report.total.macs == 117600 + 240000 + 48000 + 10080 + 840
    assert report.total.activation_bytes == sum(n.activation_bytes for n in report.nodes)
    assert report.total.flops == sum(n.flops for n in report.nodes)


def test_json_shape_is_exactly_the_documented_one():
    data = analyze(small_cnn()).as_dict()
    assert list(data) == ["convention", "input_shapes", "total", "nodes"]
    assert list(data["total"]) == ["params", "macs", "flops", "activation_bytes", "peak_activation_bytes"]
    assert all(list(n) == ["name", "op", "output_shape", "params", "macs", "flops", "activation_bytes", "formula"] for n in data["nodes"])
    assert data["input_shapes"] == {"x": ["N", 3, 8, 8]}
    assert data["nodes"][1]["output_shape"] == ["N", 4, 8, 8]


def peak_graph() -> Graph:
    g = Graph("peak")
    g.add("Input", name="x", attrs={"shape": [4, 4, 4]})                                  # 256 B
    g.add("Conv2d", ["x"], name="c", attrs={"out_channels": 16, "kernel_size": 1})       # 1024 B
    g.add("ReLU", ["c"], name="r")                                                       # 1024 B
    g.add("GlobalAvgPool", ["r"], name="g")                                              # 64 B
    g.add("Flatten", ["g"], name="f")                                                    # view of g
    g.add("Linear", ["f"], name="l", attrs={"out_features": 10})                         # 40 B
    g.add("Output", ["l"], name="y")
    g.add("Output", ["c"], name="z")                                                     # keeps c live
    return g


def test_peak_memory_follows_the_schedule_by_hand():
    # step x: 256 | c: 256 + 1024 = 1280, x freed -> 1024 | r: 1024 + 1024 = 2048 (c stays for output z)
    # g: 2048 + 64 = 2112, r freed -> 1088 | f: view | l: 1088 + 40 = 1128, g freed after its view's use -> 1064
    report = analyze(peak_graph())
    assert report.total.peak_activation_bytes == 2112
    assert report.total.activation_bytes == 256 + 1024 + 1024 + 64 + 40
    order = peak_graph().topo_order()
    assert order == ["x", "c", "r", "g", "f", "l", "y", "z"]
    costs = report.by_name()
    assert peak_activation_bytes(peak_graph(), order, costs) == 2112


def test_peak_memory_frees_a_value_after_its_last_consumer():
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [64]})          # 256 B, read by a and by d
    g.add("ReLU", ["x"], name="a")                            # 256 B
    g.add("ReLU", ["a"], name="b")                            # 256 B
    g.add("ReLU", ["b"], name="c")                            # 256 B
    g.add("Add", ["c", "x"], name="d")                        # 256 B
    g.add("Output", ["d"], name="y")
    # x: 256 | a: 512 | b: 768, a freed -> 512 | c: 768, b freed -> 512 | d: 768, c and x freed -> 256
    assert analyze(g).total.peak_activation_bytes == 768
    g.set_input("d", 1, "c")
    # x is now freed after a: x 256 | a 512 -> 256 | b 512 -> 256 | c 512 -> 256 | d 512
    assert analyze(g).total.peak_activation_bytes == 512


def test_shared_parameters_count_once_but_macs_per_call():
    g = Graph("siamese")
    for side in ("a", "b", "c"):
        g.add("Input", name=side, attrs={"shape": [32]})
        g.add("Linear", [side], name=f"emb_{side}", attrs={"out_features": 8}, share="emb")
        g.add("Output", [f"emb_{side}"], name=f"out_{side}")
    report = analyze(g)
    nodes = report.by_name()
    assert nodes["emb_a"].params == 32 * 8 + 8
    assert nodes["emb_b"].params == 0 and nodes["emb_c"].params == 0
    assert report.total.params == 32 * 8 + 8
    assert report.total.macs == 3 * 32 * 8
    assert all(nodes[f"emb_{s}"].macs == 256 for s in "abc")


def test_batch_scales_everything_but_params():
    one = analyze(small_cnn(), batch=None)
    eight = analyze(small_cnn(), batch=8)
    assert eight.total.params == one.total.params
    for key in ("macs", "flops", "activation_bytes", "peak_activation_bytes"):
        assert getattr(eight.total, key) == 8 * getattr(one.total, key), key
    data = eight.as_dict()
    assert data["input_shapes"] == {"x": [8, 3, 8, 8]}
    assert eight.by_name()["conv"].formula == f"8·({one.by_name()['conv'].formula})"
    assert eight.by_name()["x"].formula == one.by_name()["x"].formula == "0 (data movement only)"
    assert data["nodes"][-2]["output_shape"] == [8, 10]


def test_strict_analysis_raises_the_first_error_and_lax_records_it():
    g = small_cnn()
    g.set_attr("fc", "in_features", 5)
    with pytest.raises(ShapeError, match="in_features is 5"):
        analyze(g)
    report = analyze(g, strict=False)
    assert report.errors == ["in_features is 5 but the input's last dimension is 4 (input ['N', 4]), node 'fc' attrs.in_features"]
    assert report.by_name()["y"].shapes is None
    with pytest.raises(ValueError, match="unknown convention"):
        analyze(g, "gflops")


def branchy() -> Graph:
    """A main path with a residual Add and a side branch that does not depend on it."""
    g = Graph("branchy")
    g.add("Input", name="x", attrs={"shape": [3, 16, 16]})
    g.add("Conv2d", ["x"], name="a", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["a"], name="b")
    g.add("Conv2d", ["b"], name="c", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["c"], name="d")
    g.add("Add", ["d", "b"], name="e")
    g.add("GlobalAvgPool", ["e"], name="gap")
    g.add("Flatten", ["gap"], name="flat")
    g.add("Linear", ["flat"], name="fc", attrs={"out_features": 10})
    g.add("Conv2d", ["x"], name="s1", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("GlobalAvgPool", ["s1"], name="s2")
    g.add("Flatten", ["s2"], name="s3")
    g.add("Linear", ["s3"], name="s4", attrs={"out_features": 10})
    g.add("Add", ["fc", "s4"], name="sum")
    g.add("Output", ["sum"], name="y")
    return g


def fresh(graph: Graph, convention: str = "flops", batch=None) -> dict:
    return analyze(graph.copy(), convention, batch, strict=False).as_dict()


@pytest.mark.parametrize("convention,batch", [("flops", None), ("fvcore", 4)])
def test_incremental_recomputes_only_dependants(convention, batch):
    g = branchy()
    analyzer = Analyzer(g, convention, batch)
    assert analyzer.refresh().as_dict() == fresh(g, convention, batch)
    assert len(analyzer.recomputed) == len(g)

    # same output shape: only the edited node
    g.set_attr("c", "bias", False)
    assert analyzer.refresh().as_dict() == fresh(g, convention, batch)
    assert analyzer.recomputed == ["c"]

    # stride 2 halves the main path until the global pool makes the shape 8x1x1 again
    g.set_attr("a", "stride", 2)
    assert analyzer.refresh().as_dict() == fresh(g, convention, batch)
    assert analyzer.recomputed == ["a", "b", "c", "d", "e", "gap"]
    assert set(analyzer.recomputed) <= {"a"} | g.descendants("a")

    # a shape error downstream, then its repair
    g.set_attr("c", "out_channels", 4)
    report = analyzer.refresh()
    assert report.as_dict() == fresh(g, convention, batch)
    assert report.errors and "node 'e'" in report.errors[0]
    assert not {"x", "s1", "s2", "s3", "s4"} & set(analyzer.recomputed)
    g.set_attr("c", "out_channels", 8)
    assert analyzer.refresh().as_dict() == fresh(g, convention, batch)
    assert analyzer.refresh().errors == []
    assert analyzer.recomputed == []
    analyzer.close()


def test_incremental_follows_structure_edits_and_sharing():
    g = branchy()
    analyzer = Analyzer(g)
    analyzer.refresh()
    g.add("ReLU", ["s1"], name="s1_relu")
    g.set_input("s2", 0, "s1_relu")
    assert analyzer.refresh().as_dict() == fresh(g)
    assert "a" not in analyzer.recomputed
    g.set_input("s2", 0, "s1")
    g.erase("s1_relu")
    assert analyzer.refresh().as_dict() == fresh(g)
    g.set_share("fc", "head")
    g.set_share("s4", "head")
    report = analyzer.refresh()
    assert report.as_dict() == fresh(g)
    assert report.by_name()["s4"].params == 0
    g.rename("fc", "head_main")
    assert analyzer.refresh().as_dict() == fresh(g)
    analyzer.close()


def detour(g: Graph) -> None:
    """Put a ReLU between the output 'y' and its producer, or take the one there out again."""
    if "detour" in g.nodes:
        g.set_input("y", 0, g.nodes["detour"].inputs[0])
        g.erase("detour")
    else:
        g.add("ReLU", [g.nodes["y"].inputs[0]], name="detour")
        g.set_input("y", 0, "detour")


EDITS = st.one_of(
    st.tuples(st.sampled_from(["a", "c", "s1"]), st.just("out_channels"), st.sampled_from([4, 8, 16])),
    st.tuples(st.sampled_from(["a", "c", "s1"]), st.just("stride"), st.sampled_from([1, 2, None])),
    st.tuples(st.sampled_from(["a", "c"]), st.just("kernel_size"), st.sampled_from([1, 3, 5])),
    st.tuples(st.sampled_from(["a", "c"]), st.just("bias"), st.booleans()),
    st.tuples(st.sampled_from(["fc", "s4"]), st.just("in_features"), st.sampled_from([8, 16, None])),
    st.tuples(st.sampled_from(["fc", "s4"]), st.just("share"), st.sampled_from(["head", None])),
    st.tuples(st.just("e"), st.just("input 1"), st.sampled_from(["b", "a", "x", "d"])),
    st.tuples(st.just("x"), st.just("shape"), st.sampled_from([[3, 16, 16], [3, 9, 12], [3, 2, 2]])),
    st.tuples(st.sampled_from(["b", "fc", "s4", "renamed"]), st.just("rename"), st.sampled_from(["renamed", "b", "fc", "s4"])),
    st.tuples(st.just("y"), st.just("detour"), st.none()),
)


@settings(max_examples=40, deadline=None)
@given(edits=st.lists(EDITS, min_size=1, max_size=6), batch=st.sampled_from([None, 3]))
def test_incremental_equals_full_after_random_edits(edits, batch):
    """Any sequence of edits, valid or not, leaves the incremental report equal to a fresh analysis."""
    g = branchy()
    analyzer = Analyzer(g, "flops", batch)
    analyzer.refresh()
    for name, key, value in edits:
        if name not in g.nodes or (key == "input 1" and value not in g.nodes):
            continue
        if key == "share":
            g.set_share(name, value)
        elif key == "input 1":
            g.set_input(name, 1, value)
        elif key == "rename":
            if value in g.nodes:
                continue
            g.rename(name, value)
            name = value
        elif key == "detour":
            detour(g)
        else:
            g.set_attr(name, key, value)
        report = analyzer.refresh()
        if key == "share":  # the group's other members may change owner
            assert set(analyzer.recomputed) <= {name, "fc", "s4"} | g.descendants(name)
        elif key == "detour":
            assert set(analyzer.recomputed) <= {"detour", "y"}
        else:
            assert set(analyzer.recomputed) <= {name} | g.descendants(name)
        assert report.as_dict() == fresh(g, "flops", batch)
        assert report.errors == fresh_errors(g)
        assert share_lines(g, report) == fresh_share_lines(g)
    analyzer.close()


def fresh_errors(graph: Graph) -> list[str]:
    return analyze(graph.copy(), strict=False).errors


def share_lines(graph: Graph, report) -> tuple[list[str], dict[str, str]]:
    """The report's lines of sharing-group members that cannot use their owner's parameters, and the nodes' meta holding them."""
    return report.share_errors, {n: node.meta["share_error"] for n, node in graph.nodes.items() if "share_error" in node.meta}


def fresh_share_lines(graph: Graph) -> tuple[list[str], dict[str, str]]:
    copy = graph.copy()
    return share_lines(copy, analyze(copy, strict=False))


def tied_convs() -> Graph:
    """z (8 channels, not shared), then a, b and c sharing group 's' (4 channels each, all reading x), and w (6 channels)."""
    g = Graph("tied")
    g.add("Input", name="x", attrs={"shape": [3, 8, 8]})
    g.add("Conv2d", ["x"], name="z", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1})
    for name in ("a", "b", "c"):
        g.add("Conv2d", ["x"], name=name, attrs={"out_channels": 4, "kernel_size": 3, "padding": 1}, share="s")
    g.add("Conv2d", ["x"], name="w", attrs={"out_channels": 6, "kernel_size": 1})
    g.add("Output", ["a"], name="y")
    return g


def test_a_sharing_group_member_that_cannot_use_the_owners_parameters_is_reported_while_it_cannot():
    """Every way a member comes to need other parameters than its group's owner, and back: its own attributes, the owner's,
    its input, a new owner joining first; leaving the group, being erased or renamed. After each edit the report's lines and
    the nodes' meta equal a fresh analysis's, and name the members expected."""
    g = tied_convs()
    analyzer = Analyzer(g)

    def members_reported(*expected: str) -> list[str]:
        report = analyzer.refresh()
        assert share_lines(g, report) == fresh_share_lines(g)
        assert sorted(analyzer.share_errors) == sorted(expected)
        return report.share_errors

    assert members_reported() == []
    g.set_attr("b", "out_channels", 8)  # a member's own attributes
    assert members_reported("b") == ["node shares 's' with 'a' but its attributes differ, node 'b' share"]
    g.set_attr("b", "out_channels", 4)
    members_reported()
    g.set_attr("a", "kernel_size", 1)  # the owner's
    members_reported("b", "c")
    g.set_attr("a", "kernel_size", 3)
    members_reported()
    g.set_input("b", 0, "w")  # its input: 6 channels in, where the owner takes 3
    assert members_reported("b") == ["shares parameters with 'a' (group 's') but its input makes weight of shape [4, 6, 3, 3], "
                                      "where 'a' has shape [4, 3, 3, 3], node 'b' share"]
    g.set_share("b", None)  # leaving the group
    members_reported()
    g.set_share("b", "s")
    members_reported("b")
    g.set_input("b", 0, "x")
    members_reported()
    g.set_share("z", "s")  # added before a, z owns the group now: every other member differs from it
    members_reported("a", "b", "c")
    g.set_share("z", None)
    members_reported()
    g.set_attr("c", "out_channels", 8)
    members_reported("c")
    g.rename("c", "c2")
    assert members_reported("c2") == ["node shares 's' with 'a' but its attributes differ, node 'c2' share"]
    g.erase("c2")
    members_reported()
    g.set_attr("b", "bias", False)
    members_reported("b")
    with pytest.raises(DesignError, match="node shares 's' with 'a' but its attributes differ"):
        analyze(g.copy())  # strict: the first such member refuses the design
    analyzer.close()
    g.set_attr("b", "bias", True)  # mended while no analysis watched: a new one clears the line the last one left
    assert "share_error" in g.nodes["b"].meta
    fresh_analyzer = Analyzer(g)
    assert fresh_analyzer.refresh().share_errors == [] and "share_error" not in g.nodes["b"].meta
    assert fresh_analyzer.share_changed == {"b"}
    fresh_analyzer.close()


def test_a_sharing_group_whose_owner_has_an_error_of_its_own_is_not_checked_until_the_owner_is_mended():
    """The owner Scale (axis 3) reads a flat input, which has no axis 3: its parameters are not defined, so the member cannot
    be told apart from it yet (and the refresh must not fail asking); once the owner reads a fitting input, the member is."""
    g = Graph("scales")
    g.add("Input", name="x", attrs={"shape": [4, 6, 6]})
    g.add("Flatten", ["x"], name="flat")
    g.add("Scale", ["flat"], name="owner", attrs={"axis": 3}, share="s")
    g.add("Scale", ["x"], name="member", attrs={"axis": 3}, share="s")
    g.add("Output", ["member"], name="y")
    analyzer = Analyzer(g)
    report = analyzer.refresh()
    assert len(report.errors) == 1 and "axis 3 is out of range" in report.errors[0] and report.share_errors == []
    g.add("Conv2d", ["x"], name="wide", attrs={"out_channels": 4, "kernel_size": 1, "padding": 1})  # 4x8x8: weight [8], not [6]
    g.set_input("owner", 0, "wide")
    report = analyzer.refresh()
    assert report.errors == [] and report.share_errors == [
        "shares parameters with 'owner' (group 's') but its input makes weight of shape [6], where 'owner' has shape [8], node 'member' share"]
    assert share_lines(g, report) == fresh_share_lines(g)
    analyzer.close()


def test_sharing_group_reelects_its_owner_without_recomputing_the_rest():
    g = Graph("three")
    for side in ("a", "b", "c"):
        g.add("Input", name=side, attrs={"shape": [32]})
        g.add("Linear", [side], name=f"emb_{side}", attrs={"out_features": 8}, share="emb")
        g.add("Output", [f"emb_{side}"], name=f"out_{side}")
    analyzer = Analyzer(g)
    assert analyzer.refresh().total.params == 264
    g.set_share("emb_a", None)  # emb_b now owns the group's parameters
    report = analyzer.refresh()
    assert sorted(analyzer.recomputed) == ["emb_a", "emb_b"]
    assert report.nodes.get("emb_b").params == 264 and report.nodes.get("emb_c").params == 0
    assert report.total.params == 2 * 264 and report.as_dict() == fresh(g)
    g.set_share("emb_a", "emb")  # back first in insertion order: it owns again
    report = analyzer.refresh()
    assert sorted(analyzer.recomputed) == ["emb_a", "emb_b"]
    assert report.total.params == 264 and report.as_dict() == fresh(g)
    analyzer.close()


def test_report_is_a_view_of_the_latest_refresh():
    g = small_cnn()
    analyzer = Analyzer(g, batch=2)
    first = analyzer.refresh()
    assert len(first.nodes) == len(g) and first.nodes[1].name == "conv"
    assert first.nodes.get("conv").macs == 2 * 6912 and first.nodes.get("absent") is None
    assert [c.name for c in first.nodes[-2:]] == ["fc", "y"]
    assert [c.macs for c in first.nodes] == [c.macs for c in analyze(g.copy(), batch=2).nodes]
    g.set_attr("conv", "bias", False)
    second = analyzer.refresh()
    with pytest.raises(RuntimeError, match="out of date"):
        list(first.nodes)
    with pytest.raises(RuntimeError, match="out of date"):
        first.nodes.get("conv")
    assert second.nodes.get("conv").flops == second.by_name()["conv"].flops == 2 * (14080 - 256)
    analyzer.close()


def test_a_report_does_not_keep_its_analysis_alive():
    """No reference cycle: dropping the analyzer frees it at once (not at the next full garbage collection),
    and its last report stays readable."""
    g = small_cnn()
    analyzer = Analyzer(g)
    report = analyzer.refresh()
    analyzer.close()
    gone = weakref.ref(analyzer)
    gc.disable()
    try:
        del analyzer
        assert gone() is None
    finally:
        gc.enable()
    assert [c.name for c in report.nodes][:2] == ["x", "conv"] and report.nodes.get("fc").macs == 40


def test_top_nodes_are_the_ones_with_the_most_flops():
    report = analyze(small_cnn())
    expected = sorted(report.nodes, key=lambda n: (-n.flops, -n.macs, -n.params))[:3]
    assert [n["name"] for n in report.as_dict(3)["nodes"]] == [n.name for n in expected] == ["conv", "bn", "gap"]
    assert report.as_dict(100)["nodes"] == sorted(report.as_dict()["nodes"], key=lambda n: (-n["flops"], -n["macs"], -n["params"]))


@settings(max_examples=60, deadline=None)
@given(live=st.lists(st.integers(0, 10**6), max_size=40),
       adds=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39), st.integers(-10**5, 10**5)), max_size=30))
def test_live_bytes_tree_matches_a_plain_list(live, adds):
    tree = LiveBytes(list(live))
    plain = list(live)
    assert tree.peak() == max(plain, default=0)
    for a, b, delta in adds if live else ():
        first, last = sorted((a % len(live), b % len(live)))
        delta = max(delta, -min(plain[first:last + 1]))  # a resize never makes live bytes negative
        tree.add(first, last, delta)
        for step in range(first, last + 1):
            plain[step] += delta
        assert tree.peak() == max(plain)


def long_chain(blocks: int) -> Graph:
    """conv -> bn -> relu blocks with generated names, a skip Add every fourth block, then a classifier."""
    g = Graph("long")
    x = g.add("Input", name="x", attrs={"shape": [8, 12, 12]}).name
    for i in range(blocks):
        y = g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}).name
        y = g.add("ReLU", [g.add("BatchNorm2d", [y]).name]).name
        x = g.add("Add", [y, x]).name if i % 4 == 3 else y
    x = g.add("Flatten", [g.add("GlobalAvgPool", [x]).name]).name
    g.add("Output", [g.add("Linear", [x], attrs={"out_features": 10}).name], name="y")
    return g


@settings(max_examples=15, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["out_channels", "bias", "kernel_size", "stride"]),
                                st.sampled_from([1, 2, 3, 8, 16])), min_size=1, max_size=12))
def test_incremental_totals_equal_a_cold_analysis_on_a_long_graph(edits):
    """Running sums, the peak-memory tree and the report view of many small edits on a 1,600-node graph
    equal a cold analysis; an edit recomputes only the nodes its shapes reach."""
    g = long_chain(400)
    convs = [name for name, node in g.nodes.items() if node.op == "Conv2d"]
    analyzer = Analyzer(g)
    analyzer.refresh()
    for pick, key, value in edits:
        name = convs[pick % len(convs)]
        if key == "bias":
            value = bool(value % 2)
        elif key == "stride":
            value = 1 + value % 2
        elif key == "kernel_size":
            value = (1, 3)[value % 2]
        try:
            g.set_attr(name, key, value)
        except DesignError:
            continue
        report = analyzer.refresh()
        assert set(analyzer.recomputed) <= {name} | g.descendants(name)
        if key == "bias":
            assert analyzer.recomputed == [name]
    cold = analyze(g.copy(), strict=False)
    assert report.total == cold.total
    assert report.as_dict() == cold.as_dict() and report.errors == cold.errors
    assert report.total.peak_activation_bytes == schedule_buffers(g, g.topo_order(), analyzer.costs).peak()
    analyzer.close()


def test_running_latency_total_stays_the_exact_sum_through_edits():
    """The latency total is updated by deltas, kept in exact steps: adding and taking away a huge node latency
    leaves the small ones summed exactly (a float running sum would have lost them to rounding)."""
    import math

    from convstudio.ir.latency import LatencyTable, predict

    families = {"conv_dense": [1e17, 0.0, 0.0, 0.0], "conv_pointwise": [0.003, 0.0, 0.0, 0.0], "activation_fused": [0.0007, 0.0, 0.0, 0.0],
                "activation": [0.0011, 0.0, 0.0, 0.0]}
    table = LatencyTable("ort", "cpu", 1, "test", families, overhead_ms=0.05)
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for i in range(20):
        x = g.add("Conv2d", [x], name=f"conv{i}", attrs={"out_channels": 4, "kernel_size": 1}).name
        x = g.add("ReLU", [x]).name
    g.add("Output", [x], name="y")
    analyzer = Analyzer(g, "latency", None, table)
    analyzer.refresh()
    for i in range(20):
        g.set_attr(f"conv{i}", "kernel_size", 3)  # a dense conv: 1e17 ms
        g.set_attr(f"conv{i}", "padding", 1)
        analyzer.refresh()
        g.set_attr(f"conv{i}", "kernel_size", 1)  # back to 0.003 ms
        g.set_attr(f"conv{i}", "padding", 0)
        report = analyzer.refresh()
        exact = math.fsum(c.latency_ms for c in report.nodes) + table.overhead_ms
        assert report.total.latency_ms == exact == predict(g, table, 1)[1]
    assert report.total.latency_ms == pytest.approx(20 * (0.003 + 0.0007) + 0.05, rel=1e-12)


@pytest.mark.parametrize("convention", ["flops", "torchvision", "fvcore"])
def test_full_refresh_of_repeated_blocks_equals_pricing_each_node_alone(convention):
    """A full refresh reuses the shapes and priced cost of nodes with one signature (repeated blocks); every node
    still gets exactly what inferring and pricing it alone gives, sharers included, and the totals are the sums."""
    from convstudio.ir.cost import node_cost
    from convstudio.ir.shapes import infer_one

    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [8, 16, 16]}).name
    for i in range(30):
        a = g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}, share="c" if i % 3 == 0 else None).name
        s = g.add("ChannelSplit", [a], attrs={"parts": 2}).name
        r = g.add("ReLU", [f"{s}:1"]).name
        x = g.add("Concat", [s, r]).name
    g.add("Output", [x], name="y")
    report = analyze(g, convention)
    shapes: dict = {}
    for name in g.topo_order():
        shapes[name], error = infer_one(g, g.nodes[name], shapes)
        assert error is None
        alone = node_cost(g, name, shapes, convention, g.param_owner(name) == name)
        assert report.nodes.get(name) == alone
    assert report.total.params == sum(c.params for c in report.nodes) == 8 * 8 * 9 + 8 + 20 * (8 * 8 * 9 + 8)
    assert report.total.flops == sum(c.flops for c in report.nodes)


def test_a_latency_model_with_non_finite_coefficients_is_refused_in_one_line():
    """Python's JSON reader takes NaN and Infinity: a model holding them is refused when read, before any sum."""
    from convstudio.ir.latency import LatencyTable

    data = {"format": 2, "runtime": "ort", "provider": "cpu", "threads": 1, "machine": "m", "overhead_ms": 0.0, "baseline_ms_per_gmac": 0.0}
    for bad in (float("nan"), float("inf")):
        with pytest.raises(DesignError, match="bad or missing field") as info:
            LatencyTable.from_dict({**data, "families": {"conv_dense": [0.1, bad, 0.0, 0.0]}}, "file 'm.json'")
        assert info.value.line().count("\n") == 0
