"""The analyzer's predicted latency stays equal to a prediction from scratch through edits that change which
nodes a runtime fuses (a conv gaining or losing a reader), while recomputing only the nodes around the edit."""

import pytest

from convstudio.ir.cost import Analyzer
from convstudio.ir.latency import LatencyTable, dependents, predict
from convstudio.ir.templates import build_template

# fused and standalone families priced far apart, so a stale family shows
FAMILIES = {
    "conv_dense": [0.02, 1.0, 0.01, 0.01], "conv_pointwise": [0.01, 1.2, 0.01, 0.01], "linear": [0.01, 0.5, 0.02, 0.02],
    "norm": [0.03, 0.0, 0.05, 0.05], "norm_fused": [0.001, 0.0, 0.001, 0.001], "activation": [0.02, 0.0, 0.04, 0.04],
    "activation_fused": [0.0005, 0.0, 0.0005, 0.0005], "elementwise": [0.02, 0.0, 0.04, 0.04], "elementwise_fused": [0.001, 0.0, 0.001, 0.001],
    "pool": [0.01, 0.0, 0.03, 0.03], "global_pool": [0.005, 0.0, 0.02, 0.02], "memory": [0.01, 0.0, 0.03, 0.03],
}
TABLE = LatencyTable("ort", "cpu", 1, "test", FAMILIES, overhead_ms=0.05, baseline_ms_per_gmac=1.0)


def assert_matches_scratch(analyzer: Analyzer) -> None:
    report = analyzer.refresh()
    per_node, total = predict(analyzer.graph, TABLE, 1)
    live = {c.name: c.latency_ms for c in report.nodes}
    assert live == pytest.approx(per_node, rel=1e-12, abs=1e-15)
    assert report.total.latency_ms == pytest.approx(total)


def test_latency_follows_fusion_changes_incrementally():
    graph = build_template("resnet18", input_shape=[3, 32, 32], num_classes=10)
    analyzer = Analyzer(graph, "flops", None, TABLE)
    assert_matches_scratch(analyzer)
    size = len(graph.nodes)
    assert dependents(graph, "conv1") == {"bn1", "relu", "maxpool"}  # through BN and ReLU, then the pool that reads them

    graph.add("ReLU", ["conv1"], name="probe")  # conv1 gains a reader: bn1 and relu no longer run fused into it
    assert_matches_scratch(analyzer)
    assert {"probe", "bn1", "relu"} <= set(analyzer.recomputed) and len(analyzer.recomputed) < size // 4
    graph.set_input("probe", 0, "bn1")  # now bn1 has two readers
    assert_matches_scratch(analyzer)
    graph.rename("probe", "probe2")
    assert_matches_scratch(analyzer)
    graph.erase("probe2")  # back to one reader each: fused again
    assert_matches_scratch(analyzer)
    assert "relu" in analyzer.recomputed and len(analyzer.recomputed) < size // 4
    graph.set_attr("conv1", "stride", 1)  # every shape below changes
    assert_matches_scratch(analyzer)
    analyzer.close()
