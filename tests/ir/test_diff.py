"""Design diff: matching by name then by structure, added/removed/changed nodes, cost deltas that sum to the totals' difference."""

from __future__ import annotations

from convstudio.ir.diff import METRICS, diff, match_nodes
from convstudio.ir.graph import Graph
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import build_template


def chain() -> Graph:
    g = Graph("chain")
    g.add("Input", name="x", attrs={"shape": [3, 16, 16]})
    g.add("Conv2d", ["x"], name="conv_a", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1})
    g.add("ReLU", ["conv_a"], name="relu_a")
    g.add("Conv2d", ["relu_a"], name="conv_b", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1})
    g.add("GlobalAvgPool", ["conv_b"], name="pool")
    g.add("Flatten", ["pool"], name="flat")
    g.add("Linear", ["flat"], name="fc", attrs={"out_features": 10})
    g.add("Output", ["fc"], name="logits")
    return g


def assert_deltas_sum_to_totals(d) -> None:
    for m in METRICS:
        assert sum(getattr(n, m) for n in d.nodes) == d.total_b[m] - d.total_a[m]


def test_identical_designs_have_only_same_nodes():
    d = diff(chain(), chain())
    assert d.counts() == {"added": 0, "removed": 0, "changed": 0, "same": 8}
    assert d.delta == {"params": 0, "macs": 0, "flops": 0}


def test_resnet18_vs_separable_variant():
    a = build_template("resnet18")
    b = STRATEGIES["separable"].apply(a).graph
    d = diff(a, b)
    convs = [n for n, node in a.nodes.items() if node.op == "Conv2d" and node.resolved["kernel_size"] != (1, 1)]
    assert {n.name for n in d.of("changed")} == set(convs)  # each kxk conv became the pointwise 1x1
    added = {n.name for n in d.of("added")}
    assert added == set(b.nodes) - set(a.nodes)
    assert {f"{c}_dw" for c in convs} <= added and {f"{c}_dw_bn" for c in convs} <= added
    assert d.of("removed") == []
    change = next(n for n in d.nodes if n.name == "layer1_0_conv1")
    assert "kernel_size 3x3 -> 1x1" in change.changes
    assert change.params == 64 * 64 * 1 - 64 * 64 * 9 and change.macs < 0
    dw = next(n for n in d.nodes if n.name == "layer1_0_conv1_dw")
    assert dw.params == 64 * 9 and dw.macs == 64 * 9 * 56 * 56
    assert_deltas_sum_to_totals(d)
    assert d.delta["params"] < 0 and d.delta["macs"] < 0


def test_fused_variant_removes_bn_and_relu():
    a = build_template("resnet18")
    b = fuse(a).graph
    d = diff(a, b)
    removed = {n.name for n in d.of("removed")}
    assert {"bn1", "relu", "layer1_0_bn1", "layer1_0_relu1"} <= removed
    assert all(a.nodes[n].op in ("BatchNorm2d", "ReLU") for n in removed)
    assert d.of("added") == []
    assert any("activation none -> relu" in c for n in d.of("changed") for c in n.changes)
    assert_deltas_sum_to_totals(d)


def test_renamed_nodes_match_by_structure():
    a = chain()
    b = chain()
    b.rename("conv_b", "conv_second")
    b.rename("relu_a", "act")
    b.set_attr("conv_second", "out_channels", 16)
    matched = match_nodes(a, b)
    assert matched["conv_b"] == "conv_second" and matched["relu_a"] == "act"
    d = diff(a, b)
    assert d.counts()["added"] == 0 and d.counts()["removed"] == 0
    conv = next(n for n in d.nodes if n.b == "conv_second")
    assert conv.changes == ["renamed from conv_b", "out_channels 8 -> 16"]
    assert conv.params == (16 * 8 * 9 + 16) - (8 * 8 * 9 + 8)
    assert_deltas_sum_to_totals(d)


def test_removed_nodes_listed_after_their_matched_predecessor():
    a = chain()
    b = chain()
    b.set_input("conv_b", 0, "conv_a")
    b.erase("relu_a")
    d = diff(a, b)
    assert [n.name for n in d.nodes[:4]] == ["x", "conv_a", "relu_a", "conv_b"]
    assert d.nodes[2].status == "removed" and d.nodes[2].a == "relu_a" and d.nodes[2].b is None
    assert next(n for n in d.nodes if n.name == "conv_b").changes == ["inputs relu_a -> conv_a"]
    data = d.as_dict()
    assert data["counts"]["removed"] == 1 and len(data["nodes"]) == 2
