"""The fast paths of a full analysis give what the plain ones give: reusing the results of nodes with one signature
(repeated blocks) equals analysing and predicting every node alone, on templates and on nodes that differ only in one
attribute or in what reads them; the memory plan counted in numpy equals the one in Python's integers; the top nodes
picked from the few that can be top equal a full sort."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstudio.ir.cost import EXACT_FLOAT, Analyzer, Buffers, analyze, node_cost, schedule_buffers
from convstudio.ir.errors import ShapeError
from convstudio.ir.graph import Graph
from convstudio.ir.latency import TAIL_DEPTH, LatencyTable, family, predict
from convstudio.ir.shapes import infer_one
from convstudio.ir.templates import build_template

# every family priced apart, fused tails included, so a latency reused from the wrong node shows
FAMILIES = {name: [0.001 * (i + 1), 0.5 + 0.1 * i, 0.01 * (i + 1), 0.002 * (i + 1)] for i, name in enumerate((
    "conv_dense", "conv_pointwise", "conv_depthwise", "conv_depthwise_large", "conv_grouped", "conv_grouped_pointwise", "conv_large",
    "linear", "norm", "norm_fused", "activation", "activation_fused", "activation_exp", "elementwise", "elementwise_fused",
    "pool", "global_pool", "concat", "shuffle", "memory"))}


class CountingTable(LatencyTable):
    """A latency table that counts the nodes it was asked to predict."""

    calls = 0

    def node_ms(self, graph, node, ins, outs, batch):
        self.calls += 1
        return super().node_ms(graph, node, ins, outs, batch)


def table() -> CountingTable:
    return CountingTable("ort", "cpu", 1, "test", FAMILIES, overhead_ms=0.05, baseline_ms_per_gmac=1.0)


def assert_equals_each_node_alone(graph: Graph, batch: int | None = None) -> CountingTable:
    """Shapes and costs of a full refresh, and its predicted latency at `batch`, equal inferring, pricing and predicting
    each node alone."""
    report = analyze(graph)
    shapes: dict = {}
    for name in graph.topo_order():
        shapes[name], error = infer_one(graph, graph.nodes[name], shapes)
        assert error is None
        assert report.nodes.get(name) == node_cost(graph, name, shapes, "flops", graph.param_owner(name) == name)
    latency = table()
    analyzer = Analyzer(graph, "flops", batch, latency)
    report = analyzer.refresh()
    analyzer.close()
    per_node, total = predict(graph, LatencyTable("ort", "cpu", 1, "test", FAMILIES, overhead_ms=0.05), batch or 1)
    assert {c.name: c.latency_ms for c in report.nodes} == per_node  # bit-identical, not approximately
    assert report.total.latency_ms == total
    return latency


@pytest.mark.parametrize("template", ["resnet18", "mobilenet_v2", "googlenet", "efficientnet_b0", "shufflenet_v2_x1_0", "convnext_tiny"])
def test_memoised_analysis_of_a_template_equals_each_node_alone(template):
    graph = build_template(template, input_shape=[3, 64, 64], num_classes=10)
    latency = assert_equals_each_node_alone(graph, batch=3)
    assert latency.calls < len(graph.nodes)  # repeated blocks were predicted once per signature and fusion


def test_nodes_differing_in_one_attribute_or_in_their_readers_are_not_mixed_up():
    """Blocks alike but for one attribute (kernel, groups, BN eps, stride), and alike blocks whose conv has a second
    reader (its BN and ReLU then run apart, not fused into it)."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [8, 16, 16]}).name
    variants = [{}, {"kernel_size": 1, "padding": 0}, {"groups": 8}, {"groups": 2}, {"stride": 1}]
    for i in range(20):
        conv = {"out_channels": 8, "kernel_size": 3, "padding": 1, **variants[i % len(variants)]}
        c = g.add("Conv2d", [x], name=f"conv{i}", attrs=conv).name
        b = g.add("BatchNorm2d", [c], name=f"bn{i}", attrs={"eps": 1e-3} if i % 3 == 0 else {}).name
        r = g.add("ReLU", [b], name=f"relu{i}").name
        if i % 4 == 1:
            r = g.add("Add", [r, g.add("Sigmoid", [c], name=f"probe{i}").name], name=f"add{i}").name
        x = r
    g.add("Output", [x], name="y")
    latency = assert_equals_each_node_alone(g)
    assert latency.calls < len(g.nodes)
    analyze(g)  # shapes in meta, for `family`
    fused = {family(g, g.nodes[n], [g.nodes["x"].meta["shapes"][0]]) for n in ("bn0", "bn1", "relu0", "relu1")}
    assert fused == {"norm_fused", "norm", "activation_fused", "activation"}


def test_an_analysis_without_a_memory_plan_reports_the_same_but_the_peak():
    graph = build_template("resnet18", input_shape=[3, 32, 32], num_classes=10)
    full, lean = analyze(graph.copy()), analyze(graph.copy(), memory=False)
    assert lean.total.peak_activation_bytes is None and full.total.peak_activation_bytes > 0
    assert {**lean.as_dict(), "total": None} == {**full.as_dict(), "total": None}
    assert {**lean.total.as_dict(), "peak_activation_bytes": 0} == {**full.total.as_dict(), "peak_activation_bytes": 0}
    analyzer = Analyzer(graph, memory=False)  # edits refresh without a plan too
    analyzer.refresh()
    graph.set_attr("conv1", "out_channels", 32)
    graph.add("ReLU", ["conv1"], name="probe")
    report = analyzer.refresh()
    analyzer.close()
    cold = analyze(graph.copy(), strict=False)
    assert report.total.params == cold.total.params and report.total.flops == cold.total.flops
    assert report.total.peak_activation_bytes is None


@pytest.mark.parametrize("name", ["tails", "triplet_net", "googlenet"])
def test_an_analysis_without_per_node_costs_reports_the_same_totals_shapes_and_errors(name):
    """`nodes=False` keeps shapes, errors and totals as a full analysis has them (shared parameters and errors included), no
    per-node costs, and removes a cost an earlier analysis left in a node's meta."""
    full_graph, lean_graph = GRAPHS[name](), GRAPHS[name]()
    analyze(lean_graph, strict=False)  # leaves a cost in every node's meta, which the lean analysis must not keep
    full = analyze(full_graph, strict=False, memory=False)
    lean = analyze(lean_graph, strict=False, memory=False, nodes=False)
    assert lean.total == full.total and lean.errors == full.errors and lean.input_shapes == full.input_shapes
    assert lean.nodes == [] and lean.as_dict()["nodes"] == []
    for node in lean_graph.nodes.values():
        assert "cost" not in node.meta
        assert (node.meta["shapes"], node.meta["error"]) == (full_graph.nodes[node.name].meta["shapes"], full_graph.nodes[node.name].meta["error"])
    latency = LatencyTable("ort", "cpu", 1, "test", FAMILIES)
    lean_timed = analyze(GRAPHS[name](), strict=False, memory=False, latency=latency, nodes=False)
    assert lean_timed.total == analyze(GRAPHS[name](), strict=False, memory=False, latency=latency).total
    if name == "tails":
        with pytest.raises(ShapeError) as lean_error:
            analyze(GRAPHS[name](), memory=False, nodes=False)
        with pytest.raises(ShapeError) as full_error:
            analyze(GRAPHS[name](), memory=False)
        assert lean_error.value.line() == full_error.value.line()
    with pytest.raises(ValueError, match="nodes=False needs memory=False"):
        analyze(GRAPHS[name](), nodes=False)


@pytest.mark.parametrize("top", [1, 3, 10, 50, 200])
def test_top_nodes_among_many_ties_are_the_first_in_schedule_order(top):
    """Most nodes of a long chain tie on FLOPs: the top nodes are those a full sort gives, ties in schedule order."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for i in range(150):
        x = g.add("Conv2d", [x], attrs={"out_channels": 4, "kernel_size": 3, "padding": 1, "bias": i % 2 == 0}).name
        x = g.add("ReLU", [x]).name
    g.add("Output", [x], name="y")
    for batch in (None, 2):
        report = analyze(g, batch=batch)
        expected = sorted(report.as_dict()["nodes"], key=lambda n: (-n["flops"], -n["macs"], -n["params"]))[:top]
        assert report.as_dict(top)["nodes"] == expected


def ties_graph() -> Graph:
    """A long chain whose convs tie on FLOPs and split on MACs and parameters (bias or not), with sharing groups whose later
    members count no parameters, and a ChannelSplit whose second output is read."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for i in range(150):
        x = g.add("Conv2d", [x], attrs={"out_channels": 4, "kernel_size": 3, "padding": 1, "bias": i % 2 == 0},
                  share=f"s{i % 3}" if i % 5 == 0 else None).name
        x = g.add("ReLU", [x]).name
    x = g.add("Concat", [f"{g.add('ChannelSplit', [x], attrs={'sections': [2, 2]}).name}:1", x]).name
    g.add("Output", [x], name="y")
    return g


@pytest.mark.parametrize("name", ["ties", "tails", "resnet18", "googlenet", "triplet_net"])
def test_an_analysis_keeping_the_top_nodes_alone_picks_what_a_full_report_picks(name):
    """`nodes=K` keeps the costs of the K nodes `as_dict(top=K)` picks from a full report, equal field by field (predicted
    latency included), under every convention and batch, and the same totals and peak memory."""
    make = ties_graph if name == "ties" else GRAPHS[name]
    for top in (1, 7, 50, 10_000):
        for convention, batch, latency in (("flops", None, None), ("latency", 2, table()), ("fvcore", None, table()), ("torchvision", 3, None)):
            full = analyze(make(), convention, batch, strict=False, latency=latency)
            lean = analyze(make(), convention, batch, strict=False, latency=latency, nodes=top)
            assert lean.total == full.total and lean.errors == full.errors and lean.input_shapes == full.input_shapes
            assert lean.as_dict(top) == full.as_dict(top)
            picked = [n.name for n in lean.nodes]
            assert len(picked) == min(top, len(full.nodes)) and picked == [n.name for n in full.nodes if n.name in set(picked)]  # schedule order
            for cost in lean.nodes:
                assert cost == full.nodes.get(cost.name)
    with pytest.raises(ValueError, match="K >= 1"):
        analyze(make(), nodes=0)


@settings(max_examples=60, deadline=None)
@given(buffers=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 30), st.integers(0, 31)), max_size=40),
       adds=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 10**5)), max_size=10))
def test_the_memory_plan_counted_in_numpy_equals_counting_in_python_integers(buffers, adds):
    """Sizes whose sum is below 2**53 are counted in numpy; scaled by 2**60 the same plan is counted in Python's integers
    (float64 and int64 would lose them): every step's live bytes, the peak and later resizes scale alike."""
    steps = 31
    plans = []
    for scale in (1, 2**60):
        sizes = [size * scale for size, _, _ in buffers]
        born = [min(start, stop) for _, start, stop in buffers]
        last_use = [max(start, stop) for _, start, stop in buffers]
        plan = Buffers({}, set(), sizes, born, last_use, steps)
        plan.tally()
        plans.append(plan)
    small, huge = plans
    assert sum(small.sizes) < EXACT_FLOAT <= sum(huge.sizes) or not any(small.sizes)
    assert huge.live.tree == [v * 2**60 for v in small.live.tree] and huge.peak() == small.peak() * 2**60
    live = [sum(size for size, first, last in zip(small.sizes, small.born, small.last_use) if first <= step <= last) for step in range(steps)]
    assert small.peak() == max(live, default=0)
    for sid, grow in adds if buffers else ():
        sid %= len(buffers)
        small.resize(sid, small.sizes[sid] + grow)
        huge.resize(sid, huge.sizes[sid] + grow * 2**60)
        assert huge.peak() == small.peak() * 2**60


def tails_graph() -> Graph:
    """Tails of every length up to past TAIL_DEPTH behind convs and a linear, some read twice, Mul and Add tails, a split whose
    second output is read, views, a node whose shape fails and its readers."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [8, 8, 8]}).name
    for depth in range(TAIL_DEPTH + 3):
        head = g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}).name
        y = head
        for i in range(depth):
            y = g.add(("BatchNorm2d", "ReLU", "SiLU", "Hardswish")[i % 4], [y]).name
        if depth % 2:
            g.add("Identity", [y])  # a second reader: no tail fuses past it
        y = g.add("Mul", [y, x]).name if depth % 3 == 0 else g.add("Add", [y, x]).name
        x = g.add("ReLU", [y]).name
    halves = g.add("ChannelSplit", [x], attrs={"sections": [4, 4]}).name
    second = g.add("Conv2d", [f"{halves}:1"], attrs={"out_channels": 8, "kernel_size": 1}).name
    both = g.add("Concat", [f"{halves}:0", second]).name
    flat = g.add("Flatten", [g.add("GlobalAvgPool", [both]).name]).name
    g.add("Output", [g.add("ReLU", [g.add("Linear", [flat], attrs={"out_features": 4}).name]).name], name="y")
    g.add("Output", [g.add("Linear", [g.add("Conv2d", [x], attrs={"out_channels": 2, "kernel_size": 9}).name], attrs={"out_features": 3}).name],
          name="broken")  # 9x9 kernel on 8x8: no shape, nor for its reader
    return g


GRAPHS = {"tails": tails_graph, **{t: (lambda t=t: build_template(t, input_shape=[3, 64, 64], num_classes=10))
                                   for t in ("resnet18", "shufflenet_v2_x1_0", "googlenet", "efficientnet_b0", "triplet_net")}}


@pytest.mark.parametrize("name", GRAPHS)
def test_the_plan_made_during_a_full_analysis_equals_planning_after_it(name):
    """The full pass places each node's buffers as it computes the node, inlining the common case; planning the finished results
    again (`schedule_buffers`, every node through `BufferPlanner.place`) agrees."""
    graph = GRAPHS[name]()
    analyzer = Analyzer(graph)
    report = analyzer.refresh()
    analyzer.close()
    during, after = analyzer._buffers, schedule_buffers(graph, analyzer._order, analyzer.costs)
    for key in ("values", "views", "sizes", "born", "last_use", "steps"):
        assert getattr(during, key) == getattr(after, key), key
    assert during.live.tree == after.live.tree and report.total.peak_activation_bytes == after.peak() > 0
    assert (name == "tails") == bool(report.errors)


def long_tails_graph() -> Graph:
    """Runs of identical tails (BN, activations, adds) twice as long as TAIL_DEPTH behind convs, so nodes of one signature
    sit at every distance from their head, within and past the depth a runtime fuses; one run has a second reader midway."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for pattern in (("ReLU",), ("BatchNorm2d", "ReLU"), ("ReLU", "Add", "SiLU"), ("Hardswish",)):
        for _ in range(2):
            y = g.add("Conv2d", [x], attrs={"out_channels": 4, "kernel_size": 1}).name
            for i in range(2 * TAIL_DEPTH + 1):
                op = pattern[i % len(pattern)]
                y = g.add(op, [y, x] if op == "Add" else [y]).name
                if pattern == ("Hardswish",) and i == TAIL_DEPTH // 2:
                    g.add("Identity", [y])
            x = y
    g.add("Output", [x], name="y")
    return g


@pytest.mark.parametrize("batch", [None, 3])
def test_tails_at_every_distance_from_their_head_are_predicted_as_each_alone(batch):
    """The full pass takes the first step of each tail's walk to its head and goes on from its producer's walk: every node's
    predicted latency equals predicting it alone, though nodes of one signature are fused in one place and not in another."""
    assert_equals_each_node_alone(long_tails_graph(), batch)


def test_nodes_of_one_signature_share_one_list_of_shapes():
    """A long chain of repeated blocks keeps a few lists of shapes, not one per node (fewer objects to make and free)."""
    graph = GRAPHS["tails"]()
    x = "x"
    for _ in range(300):
        x = graph.add("ReLU", [graph.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}).name]).name
    report = analyze(graph, strict=False)
    lists = {id(node.meta["shapes"]) for node in graph.nodes.values() if node.meta["shapes"] is not None}
    assert len(graph.nodes) > 600 and len(lists) < 60
    assert all(report.nodes.get(n).shapes is graph.nodes[n].meta["shapes"] for n in graph.nodes)


def test_a_full_analysis_with_latency_of_unconnected_tails_reports_them():
    """Tails and an add whose inputs were disconnected: the error lines, no prediction for them, the rest predicted."""
    g = Graph()
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    c = g.add("Conv2d", [x], name="c", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1}).name
    r = g.add("ReLU", [g.add("BatchNorm2d", [c], name="b").name], name="r").name
    g.add("Output", [g.add("Add", [r, x], name="a").name], name="y")
    g.set_input("b", 0, None)
    g.set_input("a", 1, None)
    report = analyze(g, strict=False, latency=table())
    assert report.errors == ["input 0 is not connected, node 'b'", "input 1 is not connected, node 'a'"]
    assert {n.name for n in report.nodes if n.latency_ms is None} == {"b", "r", "a", "y"} and report.nodes.get("c").latency_ms > 0
