"""Calibrate, store and apply a per-machine latency model (the table `ir.latency` reads).

Calibration profiles two sets of networks (`backends.profile`):
- synthetic networks built from the blocks templates use: dense, strided, grouped (4 groups and group width 8),
  grouped 1x1 (4 groups), depthwise (3x3, 5x5), pointwise and large-kernel convs with BN and activations (ReLU,
  ReLU6, SiLU, Hardswish), standalone BN and activations, residual adds, max / average / global pooling, SE-style
  scaling, concat, channel shuffle, nearest upsampling and linear layers, over the channel counts templates use
  (mobile nets' narrow layers included), entering at the feature-map sizes of 224, 160 and 64 inputs (112 to 2), at batch 1 and 4; 7x7 and 3x3
  stride-2 stems on 224, 160 and 64 inputs; and ShuffleNet-v1 units (grouped 1x1 convs around a channel shuffle);
- the templates' own layers (TEMPLATES: the shapes, kernels, strides, groups and channel counts they use) at the
  input sizes TEMPLATE_SIZES, 224, 160 and 64, batch 1. `bench/latency_model.py` tests on other input sizes (128 and
  96) and on compressed and fused variants, none of which calibration sees.
Rules:
- Each network is also timed without the profiler (its reference), interleaved with the others
  (`interleaved_ms`): one run per network per round, so every run finds the caches holding the other networks'
  weights, and a busy period of a shared machine slows every network alike. With one thread the reference is the
  fastest run's CPU time of the calling thread, else the fastest wall time.
- A node's sample is its profiled time (with one thread: scaled by each run's CPU over wall time, see
  `ProfileReport.cpu_scaled_ms`; else its fastest run); the time of a fused tail (BN / activation / residual add a
  runtime fuses into a conv) counts for its head; each network's samples are scaled to sum to its reference less the
  time outside the runtime's run. A kernel's time includes the executor's gap before it, so the fixed cost of a
  kernel (dispatch, output allocation) is part of its sample.
- Per family, latency = a + b * GMACs + c * MB of activations + d * MB of weights is fitted by non-negative least
  squares (`_terms`: the memory-bound families fit only a and c, linear layers no c, depthwise convs no d) with rows
  weighted by 1 / (ms + ROW_FLOOR_MS): relative error for layers above the floor, so small layers count, absolute
  below it, so the tiniest do not dominate.
- Per-node samples carry the profiler's cost per kernel, which the unprofiled references lack, and relative least
  squares fits low where samples scatter: over the networks, reference = factor * predicted node sum + k * kernels
  is fitted (relative error), the coefficients are scaled by the factor and k is added to each kernel's fixed cost.
  The per-run overhead is the measured time outside the runtime's run (the Python call, input and output copies),
  left out of the node samples.
The MACs-proportional baseline (total MACs times one constant: the median of reference over MACs) uses the same references.
The model is stored in ``<cache>/latency-<runtime>-<provider>-t<threads>.json``.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convstudio.backends.profile import WARMUP, Cancelled, check_options, prepare, profile_design, random_inputs
from convstudio.backends.roofline import cache_dir, machine_id, write_cache
from convstudio.ir.cost import analyze
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.latency import LatencyTable, family, features, fused_head, read_table
from convstudio.ir.latency import predict as predict_table
from convstudio.ir.templates import build_template
from convstudio.ir.templates.builder import Builder

# (channels, feature-map size, batch) of the calibration networks
FULL_GRID = ((16, 112, 1), (32, 56, 1), (64, 56, 1), (8, 56, 1), (24, 56, 1), (96, 28, 1), (128, 28, 1), (40, 28, 1), (192, 14, 1),
             (256, 14, 1), (80, 14, 1), (112, 14, 1), (384, 7, 1), (512, 7, 1),  # the feature maps of a 224 input
             (16, 80, 1), (24, 80, 1), (32, 40, 1), (48, 40, 1), (64, 20, 1), (160, 20, 1), (128, 10, 1), (320, 10, 1), (512, 5, 1),  # of a 160 input
             (16, 32, 1), (24, 16, 1), (40, 8, 1), (112, 4, 1), (256, 2, 1), (512, 2, 1),  # of a 64 input
             (32, 28, 4), (64, 14, 4), (128, 7, 4), (16, 56, 4))
QUICK_GRID = ((8, 16, 1), (16, 8, 1), (8, 8, 2))
FULL_RUNS, QUICK_RUNS = 10, 1
REFERENCE_RUNS = 30  # unprofiled runs per network, one per round of all networks: the fastest is its reference
ROW_FLOOR_MS = 0.5
STEMS = ((3, 64, 224, 1), (3, 32, 160, 1), (3, 64, 160, 4), (3, 32, 64, 1))  # (input channels, output channels, size, batch) of 7x7 / 3x3 stride-2 stems
QUICK_STEMS = ((3, 8, 16, 1),)
SHUFFLE = ((64, 56), (96, 28), (128, 28), (240, 14), (256, 14), (512, 7))  # (channels, size) of ShuffleNet-v1 units
QUICK_SHUFFLE = ((16, 8),)
# templates whose layers calibration profiles, at input sizes other than those `bench/latency_model.py` tests on
TEMPLATES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
             "shufflenet_v2_x1_0", "squeezenet1_1", "regnet_y_400mf", "googlenet", "densenet121", "resnext50_32x4d")
TEMPLATE_SIZES = (224, 160, 64)


def calibration_networks(quick: bool = False, templates: bool = True) -> list[tuple[Graph, int]]:
    """The networks calibration profiles, each with its batch: the synthetic ones, then (unless `quick` or not
    `templates`) the templates' layers at TEMPLATE_SIZES."""
    out = [(_blocks(c, hw), batch) for c, hw, batch in (QUICK_GRID if quick else FULL_GRID)]
    out += [(_stem(cin, cout, hw), batch) for cin, cout, hw, batch in (QUICK_STEMS if quick else STEMS)]
    out += [(_shuffle_unit(c, hw), 1) for c, hw in (QUICK_SHUFFLE if quick else SHUFFLE)]
    if templates and not quick:
        out += [(build_template(name, input_shape=[3, size, size]), 1) for name in TEMPLATES for size in TEMPLATE_SIZES]
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
    g = _cbr(b, g, c, 1, groups=4, act=None)  # grouped 1x1, as the group_shuffle strategy and ShuffleNet-v1 make
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


def node_samples(graph: Graph, batch: int) -> dict[str, tuple[str, float, float, float]]:
    """family, GMACs, MB of activations and MB of weights of every node of an analyzed graph at `batch`."""
    out = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        ins = [graph.nodes[src].meta["shapes"][k] for src, k in map(parse_ref, node.inputs)]
        out[name] = (family(graph, node, ins), *features(graph, node, ins, node.meta["shapes"], batch))
    return out


def _merged(graph: Graph, kinds: dict[str, tuple], node_ms: dict[str, float]) -> dict[str, float]:
    """Node times with each fused tail's time counted for its head; views and tails left out."""
    out: dict[str, float] = {}
    for name, (fam, *_) in kinds.items():
        if fam == "view":
            continue
        head = fused_head(graph, graph.nodes[name]) if fam.endswith("_fused") else None
        key = head if head is not None else name
        out[key] = out.get(key, 0.0) + node_ms.get(name, 0.0)
    return out


def interleaved_ms(graphs: list[tuple[Graph, int]], threads: int = 1, runs: int = REFERENCE_RUNS, provider: str = "cpu",
                   cancel: Callable | None = None) -> list[float]:
    """End-to-end ms of each (graph, batch) on ONNX Runtime without the profiler, after a warm-up: `runs` rounds that
    each run every graph once in turn, so each run finds the caches holding the other graphs' weights and a busy period
    slows every graph alike. With one thread on CPU the fastest run's CPU time of the calling thread (the waits other
    processes cause left out), else the fastest wall time."""
    from convstudio.backends.onnx.export import build
    from convstudio.backends.onnx.runtime import open_session, run

    check_options("ort", provider, 1, threads, runs)
    sessions = []
    for graph, batch in graphs:
        g = prepare(graph, False)
        session = open_session(build(g)[2], provider, True, threads)[0]
        feeds = random_inputs(g, batch)
        for _ in range(WARMUP):
            run(session, feeds)
        sessions.append((session, feeds))
    clock = time.thread_time if threads == 1 and provider == "cpu" else time.perf_counter
    best = [math.inf] * len(sessions)
    for _ in range(runs):
        for i, (session, feeds) in enumerate(sessions):
            if cancel is not None and cancel():
                raise Cancelled()
            start = clock()
            run(session, feeds)
            best[i] = min(best[i], (clock() - start) * 1e3)
    return best


def measure_networks(runtime: str, provider: str, threads: int, quick: bool, progress: Callable | None = None, cancel: Callable | None = None,
                     templates: bool = True, alongside: list[tuple[Graph, int]] | tuple = ()) -> tuple[list[tuple], str, list[float]]:
    """Profile the calibration networks: per network (family and features of each node; its sample ms, fused tails in
    their heads; its reference ms; the part of it outside the runtime's run), the provider used, and the ms of the
    (graph, batch) pairs `alongside` (ONNX Runtime only), timed in the same interleaved rounds as the references."""
    networks = calibration_networks(quick, templates)
    runs = QUICK_RUNS if quick else FULL_RUNS
    steps = len(networks) + (runtime == "ort")
    profiled, used = [], provider
    for i, (graph, batch) in enumerate(networks):
        if cancel is not None and cancel():
            raise Cancelled()
        report = profile_design(graph, runtime, provider, batch, threads, runs)[0]
        used = report.provider
        profiled.append(report)
        if progress is not None:
            progress(i + 1, steps)
    others: list[float] = []
    if runtime == "ort":  # the profiled runs carry the profiler's cost per kernel: time the networks without it
        references = interleaved_ms([*networks, *alongside], threads, QUICK_RUNS if quick else REFERENCE_RUNS, used, cancel)
        references, others = references[:len(networks)], references[len(networks):]
        if progress is not None:
            progress(steps, steps)
    else:  # torch times its plain forward; the per-node interpreter runs are separate
        references = [reference_ms(report) for report in profiled]
    samples = [network_samples(graph, batch, report, reference) for (graph, batch), report, reference in zip(networks, profiled, references)]
    return samples, used, others


def network_samples(graph: Graph, batch: int, report, reference: float) -> tuple[dict, dict[str, float], float, float]:
    """One network's calibration data from its profile and reference: (family and features of each node; its sample
    ms, fused tails in their heads; the reference ms; the part of it outside the runtime's run)."""
    g = graph.copy()
    analyze(g, "flops", None, strict=True)
    kinds = node_samples(g, batch)
    scaled = report.cpu_scaled_ms and report.threads == 1 and report.provider == "cpu"
    merged = _merged(g, kinds, report.cpu_scaled_ms if scaled else report.fastest_ms)
    outside = min(report.outside_run_ms or 0.0, reference / 2)  # the Python call around the runtime's run: no node's
    total = sum(merged.values())
    scale = (reference - outside) / total if total > 0 else 1.0  # samples share the rest of the network's reference time
    return {name: kinds[name] for name in merged}, {name: ms * scale for name, ms in merged.items()}, reference, outside


def fit_model(measured: list[tuple[dict, dict[str, float], float, float]]) -> tuple[dict[str, list[float]], float, float]:
    """Per family [a, b, c, d], the per-run overhead and the MACs-proportional baseline from `measure_networks`' data."""
    samples: dict[str, list[tuple[list[float], float]]] = {}
    for kinds, node_ms, _, _ in measured:
        for name, ms in node_ms.items():
            fam, *values = kinds[name]
            samples.setdefault(fam, []).append(([x if used else 0.0 for x, used in zip([1.0, *values], _terms(fam))], ms))
    families = {fam: _nnls([row for row, _ in rows], [ms for _, ms in rows], ROW_FLOOR_MS) for fam, rows in samples.items()}
    factor, per_kernel = _network_fit(families, measured)
    families = {fam: [max(factor * coef[0] + (per_kernel if _is_kernel(fam) else 0.0), 0.0), *(factor * x for x in coef[1:])]
                for fam, coef in families.items()}
    overhead = statistics.median(outside for _, _, _, outside in measured)
    macs = [sum(values[1] for values in kinds.values()) for kinds, _, _, _ in measured]
    baseline = statistics.median(reference / max(m, 1e-12) for (_, _, reference, _), m in zip(measured, macs))
    return families, overhead, baseline


def _is_kernel(fam: str) -> bool:
    """Whether a family's nodes run as kernels of their own (not views, not tails fused into a head)."""
    return fam != "view" and not fam.endswith("_fused")


def _network_fit(families: dict[str, list[float]], measured: list[tuple]) -> tuple[float, float]:
    """(factor, ms per kernel) with reference - outside = factor * node sum + ms per kernel * kernels, fitted over the
    networks by least squares of relative error. Node samples come from profiled runs, whose per-kernel profiler cost
    the fixed coefficients absorb and the references lack: the per-kernel term takes it back out, which matters for
    small networks of many small kernels. Fewer than three networks, or a fit with no positive factor: the median
    ratio alone."""
    rows, ratios = [], []
    for kinds, _, reference, outside in measured:
        total = sum(_dot(families[f], [1.0, *values]) for f, *values in kinds.values())
        kernels = sum(1 for f, *_ in kinds.values() if _is_kernel(f))
        target = max(reference - outside, 1e-9)
        rows.append([total / target, kernels / target])
        ratios.append(target / max(total, 1e-9))
    if len(rows) >= 3:
        (factor, per_kernel), *_ = np.linalg.lstsq(np.asarray(rows), np.ones(len(rows)), rcond=None)
        if factor > 0 and math.isfinite(factor) and math.isfinite(per_kernel):
            return float(factor), float(per_kernel)
    return statistics.median(ratios), 0.0


def _terms(fam: str) -> tuple[bool, bool, bool, bool]:
    """Which of (a, b, c, d) a family fits: convs all four; depthwise convs no weights (they hardly have any); linear
    no activations (a vector per sample); the memory-bound rest only a and c."""
    if fam.startswith("conv_depthwise"):
        return True, True, True, False
    if fam.startswith("conv_"):
        return True, True, True, True
    if fam == "linear":
        return True, True, False, True
    return True, False, True, False


def _dot(coef: list[float], values: list[float]) -> float:
    return sum(c * v for c, v in zip(coef, values))


def calibrate(runtime: str = "ort", provider: str = "cpu", threads: int = 0, quick: bool = False, progress: Callable | None = None,
              cancel: Callable | None = None, save: bool = True, templates: bool = True) -> LatencyTable:
    """Profile the calibration networks, fit the model and (with `save`) store it in the cache; returns it.
    `templates` false: the synthetic networks only.

    `progress(done, total)` after each network and after the references; `cancel()` returning true stops with `Cancelled`.
    """
    return _calibrate(runtime, provider, threads, quick, progress, cancel, save, templates, ())[0]


def calibrate_and_time(designs: list[tuple[Graph, int]], threads: int = 1, quick: bool = False, templates: bool = True) -> tuple[LatencyTable, list[float]]:
    """Calibrate ONNX Runtime on CPU (stored as `calibrate` stores it) and time each (graph, batch) of `designs` in the
    same interleaved rounds as the calibration references: a machine whose speed drifts (other work starting or
    ending) then shifts the model and the measurements alike. Returns the model and the designs' ms."""
    return _calibrate("ort", "cpu", threads, quick, None, None, True, templates, designs)


def _calibrate(runtime: str, provider: str, threads: int, quick: bool, progress: Callable | None, cancel: Callable | None, save: bool,
               templates: bool, alongside) -> tuple[LatencyTable, list[float]]:
    if runtime not in ("ort", "torch"):
        raise DesignError(f"calibration is per runtime: ort or torch, got {runtime!r}", "--runtime")
    check_options(runtime, provider, 1, threads, 1)
    measured, used, others = measure_networks(runtime, provider, threads, quick, progress, cancel, templates, alongside)
    families, overhead, baseline = fit_model(measured)
    table = LatencyTable(runtime, used, threads, machine_id(), families, overhead, baseline,
                         {"networks": len(measured), "runs": QUICK_RUNS if quick else FULL_RUNS, "quick": quick,
                          "templates": templates and not quick, "python": platform.python_version()})
    if save:
        write_cache(model_path(runtime, used, threads).name, table.to_dict())
    return table, others


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
