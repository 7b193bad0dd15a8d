"""The latency model: a quick calibration fits every family, the stored file round-trips, `ir` predicts from the
table alone (cost convention latency), and bad model files give one line."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from convstudio.backends import latency_model as lm
from convstudio.ir.cost import LATENCY, Analyzer, analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import parse_ref
from convstudio.ir.latency import LatencyTable, dependents, family, features, fused_head, predict, read_table
from convstudio.ir.templates import build_template


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        table = lm.calibrate("ort", "cpu", threads=1, quick=True)
        yield table, lm.model_path("ort", "cpu", 1)


def test_quick_calibration_fits_and_stores_a_model(calibrated):
    table, path = calibrated
    assert path.is_file()
    for fam in ("conv_dense", "conv_depthwise", "conv_depthwise_large", "conv_pointwise", "conv_grouped", "conv_grouped_pointwise", "conv_large",
                "linear", "pool", "global_pool", "elementwise", "norm", "activation", "activation_exp", "concat", "shuffle", "memory"):
        assert fam in table.families, fam
    assert not any(fam.endswith("_fused") for fam in table.families)  # a fused tail's time is fitted in its head's
    assert all(len(c) == 4 and min(c) >= 0 for c in table.families.values())
    assert table.baseline_ms_per_gmac > 0 and table.overhead_ms >= 0


def test_model_file_round_trips(calibrated, tmp_path):
    table, path = calibrated
    again = read_table(path)
    assert again == table
    assert lm.load_model("ort", "cpu", 1, path=path).to_dict() == json.loads(path.read_text())
    assert LatencyTable.from_dict(table.to_dict(), "x") == table


def test_latency_convention_predicts_per_node_and_total(calibrated):
    table, _ = calibrated
    g = build_template("mobilenet_v2", input_shape=[3, 32, 32])
    report = analyze(g, LATENCY, 4, latency=table)
    data = report.as_dict()
    assert "latency_ms" in data["total"] and all("latency_ms" in n for n in data["nodes"])
    nodes = sum(n["latency_ms"] for n in data["nodes"])
    assert data["total"]["latency_ms"] == pytest.approx(nodes + table.overhead_ms)
    assert data["total"]["flops"] == analyze(g, "flops", 4).total.flops  # full FLOPs beside the prediction
    per_node, total = lm.predict(g, 4, table)
    assert total == pytest.approx(data["total"]["latency_ms"])
    assert per_node == pytest.approx({n["name"]: n["latency_ms"] for n in data["nodes"]})
    assert report.total.latency_ms >= analyze(g, LATENCY, 1, latency=table).total.latency_ms  # a fit from timings under load may be flat
    steep = LatencyTable("ort", "cpu", 1, "x", {fam: [0.01, 1.0, 0.1, 0.1] for fam in table.families}, table.overhead_ms)
    assert analyze(g, LATENCY, 4, latency=steep).total.latency_ms > analyze(g, LATENCY, 1, latency=steep).total.latency_ms  # a bigger batch takes longer
    assert "latency_ms" not in analyze(g, "flops").as_dict()["total"]


def test_incremental_analyzer_keeps_the_latency_total(calibrated):
    table, _ = calibrated
    g = build_template("resnet18", input_shape=[3, 32, 32])
    analyzer = Analyzer(g, LATENCY, None, table)
    before = analyzer.refresh().total.latency_ms
    g.set_attr("x", "shape", [3, 48, 48])
    after = analyzer.refresh().total.latency_ms
    fresh = analyze(g.copy(), LATENCY, None, strict=False, latency=table).total.latency_ms
    analyzer.close()
    assert after == pytest.approx(fresh) and after >= before  # a fit from timings under load may be flat in the input size


def test_families_follow_what_runtimes_fuse():
    g = build_template("mobilenet_v2", input_shape=[3, 32, 32])
    analyze(g, "flops")

    def fam(name):
        node = g.nodes[name]
        return family(g, node, [g.nodes[s].meta["shapes"][k] for s, k in map(parse_ref, node.inputs)])

    assert fam("features_2_conv_1_0") == "conv_depthwise"
    assert fam("features_2_conv_2") == "conv_pointwise"
    assert fam("features_0_0") == "conv_dense"
    assert fam("features_0_1") == "norm_fused" and fam("features_0_2") == "activation_fused"
    assert fam("classifier_1") == "linear" and fam("logits") == "view"
    seen = set()
    for unit in (lm._shuffle_unit(16, 8), lm._blocks(16, 8)):
        analyze(unit, "flops")
        kinds = {name: kind for name, (kind, *_) in lm.node_samples(unit, 1).items()}
        seen |= set(kinds.values())
        for name, node in unit.nodes.items():
            if node.op == "Conv2d":
                a = node.resolved
                depthwise, big = a["groups"] == a["out_channels"] > 1, max(a["kernel_size"]) > 3
                if depthwise:
                    assert kinds[name] == ("conv_depthwise_large" if big else "conv_depthwise"), name
                elif a["groups"] > 1:
                    assert kinds[name] == ("conv_grouped_pointwise" if tuple(a["kernel_size"]) == (1, 1) else "conv_grouped"), name
            elif node.op in ("Concat", "ChannelShuffle"):
                assert kinds[name] == {"Concat": "concat", "ChannelShuffle": "shuffle"}[node.op]
    assert {"conv_depthwise", "conv_depthwise_large", "conv_grouped", "conv_grouped_pointwise", "concat", "shuffle"} <= seen


def test_fused_tails_cost_nothing_and_older_tables_fall_back():
    g = build_template("mobilenet_v2", input_shape=[3, 32, 32])
    analyze(g, "flops")
    table = LatencyTable("ort", "cpu", 1, "m", {"conv_dense": [0.01, 1.0, 0.1, 0.1], "conv_depthwise": [0.02, 2.0, 0.2, 0.2],
                                                "memory": [0.03, 0.0, 0.3, 0.3], "norm": [0.04, 0.0, 0.4, 0.4], "conv_grouped": [0.05, 5.0, 0.5, 0.5],
                                                "activation": [0.06, 0.0, 0.6, 0.0]})
    per_node, _ = predict(g, table, 1)
    assert per_node["features_0_1"] == 0.0 and per_node["features_0_2"] == 0.0  # BN and ReLU6 fused into features_0_0
    assert per_node["features_0_0"] > 0
    assert table.coefficients("conv_depthwise_large") == [0.02, 2.0, 0.2, 0.2] and table.coefficients("concat") == [0.03, 0.0, 0.3, 0.3]
    assert table.coefficients("conv_grouped_pointwise") == [0.05, 5.0, 0.5, 0.5] and table.coefficients("conv_transpose") == [0.01, 1.0, 0.1, 0.1]
    assert table.coefficients("norm") == [0.04, 0.0, 0.4, 0.4] and table.coefficients("norm_fused") == [0.0, 0.0, 0.0, 0.0]
    assert table.coefficients("activation_exp") == [0.06, 0.0, 0.6, 0.0]
    assert fused_head(g, g.nodes["features_0_2"]) == "features_0_0" and fused_head(g, g.nodes["features_0_0"]) is None


def test_calibration_counts_a_fused_tail_in_its_head():
    g = build_template("mobilenet_v2", input_shape=[3, 32, 32])
    analyze(g, "flops")
    kinds = lm.node_samples(g, 1)
    times = {name: 0.0 for name in g.nodes} | {"features_0_0": 1.0, "features_0_1": 0.5, "features_0_2": 0.25, "features_1_conv_0_0": 0.125}
    merged = lm._merged(g, kinds, times)
    assert merged["features_0_0"] == 1.75 and "features_0_1" not in merged and "features_0_2" not in merged
    assert merged["features_1_conv_0_0"] == 0.125 and "x" not in merged  # views are left out
    assert sum(merged.values()) == pytest.approx(sum(times.values()))


def test_latency_convention_needs_a_table_and_bad_files_give_one_line(tmp_path):
    g = build_template("lenet")
    with pytest.raises(DesignError) as e:
        analyze(g, LATENCY)
    assert e.value.where == "--convention latency"
    cases = {"missing.json": None, "bad.json": "{not json", "format.json": json.dumps({"format": 99}),
             "field.json": json.dumps({"format": 2, "runtime": "ort", "families": {"conv_dense": [1, -2, 0, 0]}}),
             "three.json": json.dumps({"format": 2, "runtime": "ort", "provider": "cpu", "threads": 1, "machine": "m", "overhead_ms": 0,
                                       "baseline_ms_per_gmac": 1, "families": {"conv_dense": [1, 2, 0]}}),
             "old.json": json.dumps({"format": 1, "runtime": "ort", "families": {"conv_dense": [1, 2, 0]}})}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(DesignError) as e:
            read_table(path)
        assert e.value.where == f"file '{path}'" and "\n" not in e.value.what
    with pytest.raises(DesignError, match="format 2.*profile --calibrate"):  # a model of the three-coefficient format 1
        read_table(tmp_path / "old.json")


def test_features_split_weights_from_activations():
    g = build_template("resnet18", input_shape=[3, 32, 32])
    analyze(g, "flops")
    node = g.nodes["fc"]
    ins = [g.nodes[s].meta["shapes"][k] for s, k in map(parse_ref, node.inputs)]
    gmacs, act_mb, weight_mb = features(g, node, ins, node.meta["shapes"], 2)
    assert gmacs == pytest.approx(2 * 512 * 1000 / 1e9)
    assert act_mb == pytest.approx(2 * (512 + 1000) * 4 / 1e6)  # per sample, times the batch
    assert weight_mb == pytest.approx((512 * 1000 + 1000) * 4 / 1e6)  # read once per call, whatever the batch


def test_residual_add_and_its_activation_fuse_into_the_conv_and_exp_activations_stand_apart():
    g = build_template("resnet18", input_shape=[3, 32, 32])
    analyze(g, "flops")
    kinds = {name: kind for name, (kind, *_) in lm.node_samples(g, 1).items()}
    adds = [n for n, node in g.nodes.items() if node.op == "Add"]
    assert adds and all(kinds[n] == "elementwise_fused" for n in adds)
    for add in adds:
        (relu, _), = g.users(add)
        assert kinds[relu] == "activation_fused" and fused_head(g, g.nodes[relu]) == fused_head(g, g.nodes[add]) is not None
    unit = lm._blocks(16, 8)
    analyze(unit, "flops")
    kinds = {name: kind for name, (kind, *_) in lm.node_samples(unit, 1).items()}
    assert kinds["silu"] == "activation_exp"  # SiLU after BN: no conv kernel computes it
    assert kinds["pool_relu"] == "activation"  # after an add of two pools: no conv to fuse into
    assert kinds["se_gate"] == "activation_fused"  # Sigmoid right after the SE conv
    assert kinds["relu_1"] == "activation_fused" and fused_head(unit, unit.nodes["relu_1"]) == "conv_3"  # ReLU after the residual add
    assert {"add", "relu_1"} <= dependents(unit, "bn_3")  # a new consumer of the BN changes the add's and the ReLU's family


def test_fit_recovers_known_coefficients():
    truth = {"conv_dense": [0.02, 30.0, 0.05, 0.2], "conv_depthwise": [0.01, 0.0, 0.4, 0.0], "activation": [0.005, 0.0, 0.08, 0.0]}
    rng = np.random.default_rng(1)
    measured = []
    for _ in range(12):
        kinds, node_ms = {}, {}
        for i in range(9):
            fam = list(truth)[i % 3]
            values = [float(rng.uniform(0.001, 0.3)) if fam == "conv_dense" else 0.0, float(rng.uniform(0.05, 8)), float(rng.uniform(0, 3))]
            if fam != "conv_dense":
                values[2] = 0.0
            kinds[f"n{i}"] = (fam, *values)
            node_ms[f"n{i}"] = lm._dot(truth[fam], [1.0, *values])
        outside = 0.1
        measured.append((kinds, node_ms, sum(node_ms.values()) + outside, outside))
    families, overhead, baseline = lm.fit_model(measured)
    for fam, coef in truth.items():
        assert families[fam] == pytest.approx(coef, rel=1e-6, abs=1e-9), fam
    assert overhead == pytest.approx(0.1)
    macs = [sum(v[1] for v in kinds.values()) for kinds, *_ in measured]
    assert baseline == pytest.approx(statistics.median(ref / m for (_, _, ref, _), m in zip(measured, macs)))


def test_fit_takes_the_profilers_per_kernel_cost_back_out_at_the_network_level():
    """Node samples that each carry a fixed extra cost the unprofiled references lack: the network-level fit finds that
    cost per kernel, takes it off each kernel's fixed cost (never below zero) and then predicts the references."""
    truth = {"conv_dense": [0.05, 30.0, 0.05, 0.2], "activation": [0.02, 0.0, 0.08, 0.0]}
    extra = 0.01  # ms the profiler adds to every kernel's sample
    rng = np.random.default_rng(2)
    measured = []
    for n in range(4, 16):
        kinds, node_ms = {}, {}
        for i in range(n):
            fam = "conv_dense" if i % 2 == 0 else "activation"
            values = [float(rng.uniform(0.001, 0.3)) if fam == "conv_dense" else 0.0, float(rng.uniform(0.05, 8)), 0.0]
            if fam == "conv_dense":
                values[2] = float(rng.uniform(0, 3))
            kinds[f"n{i}"] = (fam, *values)
            node_ms[f"n{i}"] = lm._dot(truth[fam], [1.0, *values])
        reference = sum(node_ms.values()) + 0.1
        measured.append((kinds, {k: ms + extra for k, ms in node_ms.items()}, reference, 0.1))
    families, _, _ = lm.fit_model(measured)
    for fam, coef in truth.items():
        assert families[fam] == pytest.approx(coef, rel=1e-6, abs=1e-9), fam
    factor, per_kernel = lm._network_fit({f: [c[0] + extra, *c[1:]] for f, c in truth.items()}, measured)
    assert (factor, per_kernel) == pytest.approx((1.0, -extra), abs=1e-9)
    two = [({"a": ("conv_dense", 0.0, 0.0, 0.0)}, {}, ref, 0.0) for ref in (2.0, 4.0)]  # too few networks: the median ratio
    assert lm._network_fit({"conv_dense": [1.0, 0.0, 0.0, 0.0]}, two) == (3.0, 0.0)


def test_calibration_covers_the_templates_layers_at_sizes_the_benchmark_does_not_test():
    full = lm.calibration_networks()
    synthetic = lm.calibration_networks(templates=False)
    assert len(full) == len(synthetic) + len(lm.TEMPLATES) * len(lm.TEMPLATE_SIZES)
    sizes = {g.nodes[x].resolved["shape"][-1] for g, _ in full for x in g.inputs}
    assert not sizes & {128, 96}  # the benchmark's test sizes
    assert {(g.name, g.nodes[g.inputs[0]].resolved["shape"][-1]) for g, _ in full[len(synthetic):]} >= {("resnet18", 224), ("mobilenet_v2", 160)}
    assert not {g.name for g, _ in lm.calibration_networks(quick=True)} & set(lm.TEMPLATES)  # the quick grid stays tiny


def test_interleaved_measurement_times_every_design_and_can_be_cancelled():
    nets = [(lm._blocks(8, 8), 1), (lm._shuffle_unit(16, 8), 2)]
    times = lm.interleaved_ms(nets, threads=1, runs=3)
    assert len(times) == 2 and all(0 < t < 10_000 for t in times)
    with pytest.raises(lm.Cancelled):
        lm.interleaved_ms(nets, threads=1, runs=3, cancel=lambda: True)
    with pytest.raises(DesignError) as e:
        lm.interleaved_ms(nets, threads=1, runs=0)
    assert e.value.where == "--runs"


def test_calibrate_and_time_measures_designs_in_the_calibration_rounds(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    designs = [(lm._shuffle_unit(16, 8), 1), (build_template("lenet"), 2)]
    table, times = lm.calibrate_and_time(designs, threads=1, quick=True)
    assert lm.model_path("ort", "cpu", 1).is_file() and read_table(lm.model_path("ort", "cpu", 1)) == table
    assert len(times) == 2 and all(t > 0 for t in times)
    assert table.meta["templates"] is False  # the quick grid never profiles the templates
