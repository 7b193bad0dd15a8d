"""Cost analysis: totals, conventions, peak activation memory, sharing, batch scaling, incremental updates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.cost import Analyzer, analyze, peak_activation_bytes
from convstudio.ir.errors import ShapeError
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


EDITS = st.one_of(
    st.tuples(st.sampled_from(["a", "c", "s1"]), st.just("out_channels"), st.sampled_from([4, 8, 16])),
    st.tuples(st.sampled_from(["a", "c", "s1"]), st.just("stride"), st.sampled_from([1, 2, None])),
    st.tuples(st.sampled_from(["a", "c"]), st.just("kernel_size"), st.sampled_from([1, 3, 5])),
    st.tuples(st.sampled_from(["a", "c"]), st.just("bias"), st.booleans()),
    st.tuples(st.sampled_from(["fc", "s4"]), st.just("in_features"), st.sampled_from([8, 16, None])),
    st.tuples(st.sampled_from(["fc", "s4"]), st.just("share"), st.sampled_from(["head", None])),
    st.tuples(st.just("e"), st.just("input 1"), st.sampled_from(["b", "a", "x", "d"])),
    st.tuples(st.just("x"), st.just("shape"), st.sampled_from([[3, 16, 16], [3, 9, 12], [3, 2, 2]])),
)


@settings(max_examples=40, deadline=None)
@given(edits=st.lists(EDITS, min_size=1, max_size=6), batch=st.sampled_from([None, 3]))
def test_incremental_equals_full_after_random_edits(edits, batch):
    """Any sequence of edits, valid or not, leaves the incremental report equal to a fresh analysis."""
    g = branchy()
    analyzer = Analyzer(g, "flops", batch)
    analyzer.refresh()
    for name, key, value in edits:
        if key == "share":
            g.set_share(name, value)
        elif key == "input 1":
            g.set_input(name, 1, value)
        else:
            g.set_attr(name, key, value)
        report = analyzer.refresh()
        assert set(analyzer.recomputed) <= {name} | g.descendants(name)
        assert report.as_dict() == fresh(g, "flops", batch)
        assert report.errors == fresh_errors(g)
    analyzer.close()


def fresh_errors(graph: Graph) -> list[str]:
    return analyze(graph.copy(), strict=False).errors
