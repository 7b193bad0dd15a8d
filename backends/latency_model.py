"""Calibrate, store and apply a per-machine latency model (the table `ir.latency` reads).

Calibration profiles small synthetic networks (`backends.profile`) built from the blocks templates use:
dense, strided, grouped (4 groups and group width 8), depthwise (3x3, 5x5), pointwise and large-kernel convs
with BN and activations (ReLU, ReLU6, SiLU, Hardswish), standalone BN and activations, residual adds, max /
average / global pooling, SE-style scaling, concat, channel shuffle, nearest upsampling and linear layers, over
the channel counts and feature-map sizes templates reach (mobile nets' narrow layers included), at batch 1 and 4;
and ShuffleNet-v1 units (grouped 1x1 convs around a channel shuffle and a depthwise conv).
Rules:
- Each network is also timed without the profiler (`profile.measure_latency`, its reference): the profiler's own
  cost per kernel and the waits other processes cause do not reach the model.
- A node's sample is its profiled time (with one thread: scaled by each run's CPU over wall time, see
  `ProfileReport.cpu_scaled_ms`; else its fastest run); the time of a fused tail (BN / activation / add a
  runtime fuses into a conv) counts for its head; each network's samples are scaled to sum to its reference.
- Per family, latency = a + b * GMACs + c * MB is fitted by non-negative least squares with rows weighted by
  1 / (ms + ROW_FLOOR_MS): relative error for layers above the floor, so small layers count, absolute below it,
  so the tiniest do not dominate.
- Relative least squares fits low where samples scatter: one factor (the median over the networks of reference
  over predicted node sum) corrects it. The per-run overhead is the measured time outside the runtime's run (the
  Python call, input and output copies), left out of the node samples.
The MACs-proportional baseline (total MACs times one constant: the median of reference over MACs) uses the same references.
The model is stored in ``<cache>/latency-<runtime>-<provider>-t<threads>.json``.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convstudio.backends.profile import Cancelled, check_options, measure_latency, profile_design
from convstudio.backends.roofline import cache_dir, machine_id, write_cache
from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.latency import LatencyTable, family, features, fused_head, read_table
from convstudio.ir.latency import predict as predict_table
from convstudio.ir.templates.builder import Builder

# (channels, feature-map size, batch) of the calibration networks
FULL_GRID = ((16, 112, 1), (32, 56, 1), (64, 56, 1), (96, 28, 1), (128, 28, 1), (192, 14, 1), (256, 14, 1), (384, 7, 1), (512, 7, 1),
             (24, 64, 1), (48, 32, 1), (160, 16, 1), (320, 8, 1), (32, 28, 4), (64, 14, 4), (128, 7, 4), (16, 56, 4),
             (8, 56, 1), (24, 56, 1), (40, 28, 1), (80, 14, 1), (112, 14, 1), (16, 32, 1), (32, 16, 1), (64, 8, 1))
QUICK_GRID = ((8, 16, 1), (16, 8, 1), (8, 8, 2))
FULL_RUNS, QUICK_RUNS = 10, 1
REFERENCE_RUNS = 30  # unprofiled runs per network: the fastest is its reference
ROW_FLOOR_MS = 0.5
STEMS = ((3, 64, 224, 1), (3, 32, 112, 1), (3, 64, 128, 4))  # (input channels, output channels, size, batch) of 7x7 / 3x3 stride-2 stems
QUICK_STEMS = ((3, 8, 16, 1),)
SHUFFLE = ((64, 56), (96, 28), (128, 28), (240, 14), (256, 14), (512, 7))  # (channels, size) of ShuffleNet-v1 units
QUICK_SHUFFLE = ((16, 8),)


def calibration_networks(quick: bool = False) -> list[tuple[Graph, int]]:
    """The synthetic networks calibration profiles, each with its batch."""
    out = [(_blocks(c, hw), batch) for c, hw, batch in (QUICK_GRID if quick else FULL_GRID)]
    out += [(_stem(cin, cout, hw), batch) for cin, cout, hw, batch in (QUICK_STEMS if quick else STEMS)]
    out += [(_shuffle_unit(c, hw), 1) for c, hw in (QUICK_SHUFFLE if quick else SHUFFLE)]
    return out


def _cbr(b: Builder, x: str, out: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "ReLU") -> str:
    x = b.op("Conv2d", x, "conv", out_channels=out, kernel_size=k, stride=stride, padding=k // 2, groups=groups, bias=False)
    x = b.op("BatchNorm2d", x, "bn")
    return b.op(act, x, act.lower()) if act else x


def _blocks(c: int, hw: int) -> Graph:
    b = Builder(f"calibrate_c{c}_s{hw}")
    x = b.input("x", [c, hw, hw])
    a = _cbr(b, x, c, 3)
    d = _cbr(b, a, c, 3, groups=c, act="ReLU6")
    e = _cbr(b, d, 2 * c, 1, act="SiLU")
    p = _cbr(b, e, c, 1, act=None)
    r = b.op("ReLU", b.op("Add", [p, a], "add"), "relu")
    d5 = _cbr(b, r, c, 5, groups=c, act="Hardswish")
    gate = b.op("Sigmoid", b.op("Conv2d", b.op("GlobalAvgPool", d5, "se_pool"), "se_fc", out_channels=c, kernel_size=1), "se_gate")
    m = b.op("Mul", [d5, gate], "scale")
    g = _cbr(b, m, c, 3, groups=4 if c % 4 == 0 else 1)
    g = _cbr(b, g, c, 3, groups=c // 8 if c % 8 == 0 else 1)  # group width 8, as RegNet and ResNeXt use
    cat = b.op("ChannelShuffle", b.op("Concat", [g, r], "concat", dim=1), "shuffle", groups=2)
    s = _cbr(b, cat, 2 * c, 3, stride=2)
    mp = b.op("MaxPool2d", s, "maxpool", kernel_size=3, stride=2, padding=1)
    ap = b.op("AvgPool2d", s, "avgpool", kernel_size=3, stride=2, padding=1)
    both = b.op("ReLU", b.op("Add", [mp, ap], "pool_add"), "pool_relu")
    bn = b.op("BatchNorm2d", both, "bn_alone")
    lk = _cbr(b, bn, c, 5)
    pooled = b.op("Flatten", b.op("GlobalAvgPool", lk, "gap"), "flatten")
    b.output(b.op("Linear", pooled, "fc", out_features=10 * c))
    return b.graph


def _stem(cin: int, cout: int, hw: int) -> Graph:
    b = Builder(f"calibrate_stem_{cout}_s{hw}")
    x = b.input("x", [cin, hw, hw])
    y = _cbr(b, x, cout, 7, stride=2)
    z = _cbr(b, x, cout // 2, 3, stride=2)
    y = b.op("MaxPool2d", y, "maxpool", kernel_size=3, stride=2, padding=1)
    z = b.op("MaxPool2d", z, "maxpool", kernel_size=3, stride=2, padding=1)
    up = b.op("Upsample", b.op("Concat", [y, z], "concat", dim=1), "upsample", scale_factor=2, mode="nearest")
    flat = b.op("Flatten", b.op("GlobalAvgPool", up, "gap"), "flatten")
    b.output(b.op("Linear", flat, "fc", out_features=256))
    return b.graph


def _shuffle_unit(c: int, hw: int) -> Graph:
    """A ShuffleNet-v1 unit: grouped 1x1 conv, channel shuffle, depthwise 3x3, grouped 1x1 conv, residual add."""
    b = Builder(f"calibrate_shuffle_c{c}_s{hw}")
    x = b.input("x", [c, hw, hw])
    y = b.op("ChannelShuffle", _cbr(b, x, c, 1, groups=4), "shuffle", groups=4)
    y = _cbr(b, _cbr(b, y, c, 3, groups=c, act=None), c, 1, groups=4, act=None)
    b.output(b.op("ReLU", b.op("Add", [y, x], "add"), "relu"))
    return b.graph


def reference_ms(report) -> float:
    """The end-to-end figure of a report: with one thread the fastest run's CPU time (the waits other processes
    cause left out), else the fastest wall time."""
    return min(report.cpu_ms) if report.threads == 1 and report.provider == "cpu" else min(report.times_ms)


def model_path(runtime: str, provider: str = "cpu", threads: int = 0) -> Path:
    return cache_dir() / f"latency-{runtime}-{provider}-t{threads}.json"


def _nnls(rows: list[list[float]], target: list[float], floor: float) -> list[float]:
    """Non-negative least squares with rows weighted by 1 / (target + floor)."""
    from scipy.optimize import nnls

    a = np.asarray(rows, dtype=float)
    y = np.asarray(target, dtype=float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)  # columns of very different magnitude: fit on scaled columns
    weights = 1.0 / (np.maximum(y, 0.0) + floor)
    coef, _ = nnls(a / scale * weights[:, None], y * weights)
    return [float(x) for x in coef / scale]


def node_samples(graph: Graph, batch: int) -> dict[str, tuple[str, float, float]]:
    """family, GMACs and MB of every node of an analyzed graph at `batch`."""
    out = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        ins = [graph.nodes[src].meta["shapes"][k] for src, k in map(parse_ref, node.inputs)]
        out[name] = (family(graph, node, ins), *features(graph, node, ins, node.meta["shapes"], batch))
    return out


def _merged(graph: Graph, kinds: dict[str, tuple[str, float, float]], node_ms: dict[str, float]) -> dict[str, float]:
    """Node times with each fused tail's time counted for its head; views and tails left out."""
    out: dict[str, float] = {}
    for name, (fam, _, _) in kinds.items():
        if fam == "view":
            continue
        head = fused_head(graph, graph.nodes[name]) if fam.endswith("_fused") else None
        key = head if head is not None else name
        out[key] = out.get(key, 0.0) + node_ms.get(name, 0.0)
    return out


def measure_networks(runtime: str, provider: str, threads: int, quick: bool, progress: Callable | None = None,
                     cancel: Callable | None = None) -> tuple[list[tuple[dict, dict[str, float], float, float]], str]:
    """Profile the calibration networks: per network (family, GMACs, MB of each node; its sample ms, fused tails in
    their heads; its reference ms; the part of it outside the runtime's run), and the provider used."""
    networks = calibration_networks(quick)
    runs = QUICK_RUNS if quick else FULL_RUNS
    out, used = [], provider
    for i, (graph, batch) in enumerate(networks):
        if cancel is not None and cancel():
            raise Cancelled()
        report = profile_design(graph, runtime, provider, batch, threads, runs)[0]
        used = report.provider
        if runtime == "ort":  # the profiled runs carry the profiler's cost per kernel: time the network without it
            reference = measure_latency(graph, batch, threads, QUICK_RUNS if quick else REFERENCE_RUNS, used)["reference"]
        else:  # torch times its plain forward; the per-node interpreter runs are separate
            reference = reference_ms(report)
        g = graph.copy()
        analyze(g, "flops", None, strict=True)
        kinds = node_samples(g, batch)
        node_ms = report.cpu_scaled_ms if report.cpu_scaled_ms and threads == 1 and used == "cpu" else report.fastest_ms
        merged = _merged(g, kinds, node_ms)
        outside = min(report.outside_run_ms or 0.0, reference / 2)  # the Python call around the runtime's run: no node's
        total = sum(merged.values())
        scale = (reference - outside) / total if total > 0 else 1.0  # samples share the rest of the network's reference time
        out.append(({name: kinds[name] for name in merged}, {name: ms * scale for name, ms in merged.items()}, reference, outside))
        if progress is not None:
            progress(i + 1, len(networks))
    return out, used


def fit_model(measured: list[tuple[dict, dict[str, float], float, float]]) -> tuple[dict[str, list[float]], float, float]:
    """Per family [a, b, c], the per-run overhead and the MACs-proportional baseline from `measure_networks`' data."""
    samples: dict[str, list[tuple[float, float, float]]] = {}
    for kinds, node_ms, _, _ in measured:
        for name, ms in node_ms.items():
            fam, gmacs, mb = kinds[name]
            samples.setdefault(fam, []).append((gmacs, mb, ms))
    families = {fam: _nnls([[1.0, m, b] for m, b, _ in rows], [ms for _, _, ms in rows], ROW_FLOOR_MS) for fam, rows in samples.items()}
    sums = [sum(families[f][0] + families[f][1] * m + families[f][2] * b for f, m, b in kinds.values()) for kinds, _, _, _ in measured]
    factor = statistics.median((reference - outside) / max(s, 1e-9) for (_, _, reference, outside), s in zip(measured, sums))
    families = {fam: [factor * x for x in coef] for fam, coef in families.items()}
    overhead = statistics.median(outside for _, _, _, outside in measured)
    macs = [sum(m for _, m, _ in kinds.values()) for kinds, _, _, _ in measured]
    baseline = statistics.median(reference / max(m, 1e-12) for (_, _, reference, _), m in zip(measured, macs))
    return families, overhead, baseline


def calibrate(runtime: str = "ort", provider: str = "cpu", threads: int = 0, quick: bool = False, progress: Callable | None = None,
              cancel: Callable | None = None, save: bool = True) -> LatencyTable:
    """Profile the calibration networks, fit the model and (with `save`) store it in the cache; returns it.

    `progress(done, total)` after each network; `cancel()` returning true stops with `Cancelled`.
    """
    if runtime not in ("ort", "torch"):
        raise DesignError(f"calibration is per runtime: ort or torch, got {runtime!r}", "--runtime")
    check_options(runtime, provider, 1, threads, 1)
    measured, used = measure_networks(runtime, provider, threads, quick, progress, cancel)
    families, overhead, baseline = fit_model(measured)
    table = LatencyTable(runtime, used, threads, machine_id(), families, overhead, baseline,
                         {"networks": len(measured), "runs": QUICK_RUNS if quick else FULL_RUNS, "quick": quick,
                          "python": platform.python_version()})
    if save:
        write_cache(model_path(runtime, used, threads).name, table.to_dict())
    return table


def stored_path(runtime: str = "ort", provider: str = "cpu", threads: int | None = None) -> Path:
    """Where the model for a runtime, provider and thread count is stored; threads None: the default-threads model
    when there is one, else the most recently calibrated one."""
    if threads is not None:
        return model_path(runtime, provider, threads)
    default = model_path(runtime, provider, 0)
    others = sorted(cache_dir().glob(f"latency-{runtime}-{provider}-t*.json"), key=lambda p: p.stat().st_mtime)
    return default if default.is_file() or not others else others[-1]


def load_model(runtime: str = "ort", provider: str = "cpu", threads: int | None = None, path: Path | str | None = None) -> LatencyTable:
    """The stored model for this runtime, provider and thread count (see `stored_path`), or the file at `path`."""
    return read_table(path if path is not None else stored_path(runtime, provider, threads))


def find_model(runtime: str = "ort", provider: str = "cpu", threads: int | None = None) -> LatencyTable | None:
    """The stored model when one exists and reads, else None (for optional latency columns)."""
    path = stored_path(runtime, provider, threads)
    if not path.is_file():
        return None
    try:
        return read_table(path)
    except DesignError:
        return None


def predict(graph: Graph, batch: int = 1, model: LatencyTable | None = None) -> tuple[dict[str, float], float]:
    """Predicted ms per node and end to end for `graph` (not changed) with the stored model unless one is given."""
    model = model or load_model()
    g = graph.copy()
    analyze(g, "flops", None, strict=True)
    return predict_table(g, model, batch)


def baseline(graph: Graph, batch: int = 1, model: LatencyTable | None = None) -> float:
    """The MACs-proportional prediction: total MACs times the model's one constant."""
    model = model or load_model()
    return analyze(graph.copy(), "flops", batch, strict=True).total.macs / 1e9 * model.baseline_ms_per_gmac
