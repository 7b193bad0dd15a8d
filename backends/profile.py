"""Measured cost: per-design-node latency on ONNX Runtime (its own profiler) and PyTorch (an fx interpreter).

Rules:
- A run warms up, then times `runs` runs; end-to-end is the wall time of each run (median, min, max).
- ONNX Runtime runs at its default optimization level, as users run it. Its profiler names each kernel
  after the ONNX node it runs; the exporter names ONNX nodes after design nodes (``X``, ``X/label``,
  ``X_k``). ORT's own fusions keep the name of one fused node plus a suffix (``relu_nchwc``): the ONNX
  nodes that have no kernel of their own were fused, each into the kernel of the heavy op (conv, gemm,
  matmul) it follows or, for a heavy op, the kernel it flows into. A kernel's time (its duration plus the executor's
  gap since the previous kernel: output allocation and dispatch) is split over its design nodes by their FLOPs (an
  equal split when none has FLOPs); layout kernels ORT inserts (ReorderInput/ReorderOutput) count for the node they
  feed or are fed by. Every kernel is accounted for.
- PyTorch: end to end is the lowered module's own forward. After each timed run, a copy of that forward with a time
  stamp at each design node's boundary runs (`_stamped`): a node's time is everything between its stamp and the next
  one (its calls and the freeing of the values it was the last to read), so only the module's call and return stay
  unattributed. Torch's thread count is set for both; on CUDA each stamp synchronises first.
- Per node: latency (mean over the middle half of the runs), share of the summed node time, achieved GFLOP/s, bytes moved
  (inputs, outputs, weights), arithmetic intensity (FLOPs per byte), peak memory and the roofline bound when a
  roofline is given. Peak memory is computed from the schedule, not measured: the activation bytes live while the
  node runs (its inputs, its outputs and every earlier output a later node still reads, `ir.cost.schedule_buffers`)
  plus its own weights. `unattributed_ms` is end-to-end minus the node sum: on ONNX Runtime the Python call with its
  input and output copies (`outside_run_ms`) and the run's start and end around the kernels; on PyTorch the module's
  call and return, and the spread between the timed runs and the stamped runs (most of it on a busy machine).
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

import numpy as np

from convstudio.ir.cost import BYTES_PER_ELEMENT, analyze, schedule_buffers
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, parse_ref
from convstudio.ir.ops.registry import numel
from convstudio.ir.passes.fuse import fuse as fuse_pass

RUNTIMES = ("ort", "torch", "both")
PROVIDERS = ("auto", "cpu", "cuda")
HEAVY_ONNX = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "DeformConv", "FusedConv", "FusedGemm", "FusedMatMul"})
ORT_SUFFIX = re.compile(r"(_nchwc|_fused|_token_\d+|_\d+)$")
WARMUP = 2
MAX_RUNS = 10_000


class Cancelled(Exception):
    """The caller's `cancel()` returned true."""


@dataclass
class NodeTime:
    """Measured cost of one design node."""

    name: str
    op: str
    latency_ms: float
    share: float
    gflops_per_s: float
    bytes: int
    intensity: float
    peak_bytes: int = 0
    bound: str | None = None
    flops: int = 0

    def as_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "latency_ms": self.latency_ms, "share": self.share, "gflops_per_s": self.gflops_per_s,
                "bytes": self.bytes, "intensity": self.intensity, "peak_bytes": self.peak_bytes, "bound": self.bound}


@dataclass
class ProfileReport:
    """One runtime's profile of a design."""

    runtime: str
    provider: str
    batch: int
    threads: int
    times_ms: list[float]
    nodes: list[NodeTime]
    fused_by_runtime: dict[str, list[str]] = field(default_factory=dict)  # runtime kernel -> design nodes it ran
    note: str | None = None
    fastest_ms: dict[str, float] = field(default_factory=dict)  # design node -> its fastest run (least disturbed by other processes)
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time of each timed run: with one thread, the run without the waits other processes cause
    run_ms: list[float] = field(default_factory=list)  # the runtime's own time of each timed run (ONNX Runtime's model_run), when it reports one
    cpu_scaled_ms: dict[str, float] = field(default_factory=dict)  # design node -> mean over runs of its time times the run's CPU / wall time

    @property
    def end_to_end(self) -> dict:
        return {"median": statistics.median(self.times_ms), "min": min(self.times_ms), "max": max(self.times_ms), "runs": len(self.times_ms)}

    @property
    def node_sum_ms(self) -> float:
        return sum(n.latency_ms for n in self.nodes)

    @property
    def unattributed_ms(self) -> float:
        return self.end_to_end["median"] - self.node_sum_ms

    @property
    def outside_run_ms(self) -> float | None:
        """Median time of a timed run spent outside the runtime's own run (the Python call, input and output copies)."""
        return statistics.median(w - r for w, r in zip(self.times_ms, self.run_ms)) if self.run_ms else None

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "provider": self.provider, "batch": self.batch, "threads": self.threads,
                "end_to_end_ms": self.end_to_end, "nodes": [n.as_dict() for n in self.nodes], "unattributed_ms": self.unattributed_ms}


@dataclass
class NodeWork:
    """What one design node computes at the profiled batch: FLOPs, bytes moved and peak memory."""

    op: str
    flops: int
    bytes: int
    peak_bytes: int = 0


def live_bytes(graph: Graph, order: list[str], costs: dict) -> dict[str, int]:
    """Activation bytes per sample live at each node's step of the schedule `order` (its inputs, its outputs and
    every earlier buffer a later node still reads)."""
    buffers = schedule_buffers(graph, order, costs)
    delta = [0] * (len(order) + 1)
    for size, first, last in zip(buffers.sizes, buffers.born, buffers.last_use):
        delta[first] += size
        delta[min(last, len(order) - 1) + 1] -= size
    return dict(zip(order, accumulate(delta[:len(order)])))


def node_work(graph: Graph, batch: int) -> dict[str, NodeWork]:
    """FLOPs (full convention), bytes moved (inputs, outputs, weights) and peak memory (live activations at its step
    and its weights) of every node at `batch`; shapes inferred."""
    report = analyze(graph, "flops", None, strict=True)
    costs = report.by_name()
    live = live_bytes(graph, list(costs), costs)
    work = {}
    for cost in costs.values():
        node = graph.nodes[cost.name]
        ins = 0
        for ref in node.inputs:
            src, k = parse_ref(ref)
            ins += numel(graph.nodes[src].meta["shapes"][k])
        outs = sum(map(numel, cost.shapes or []))
        weights = cost.params * BYTES_PER_ELEMENT
        moved = (ins + outs) * batch * BYTES_PER_ELEMENT + weights
        work[cost.name] = NodeWork(cost.op, cost.flops * batch, 0 if node.opdef.alias else moved, live[cost.name] * batch + weights)
    return work


def check_options(runtime: str, provider: str, batch: int, threads: int, runs: int) -> None:
    """One DesignError line for a bad option."""
    if runtime not in RUNTIMES:
        raise DesignError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}", "--runtime")
    if provider not in PROVIDERS:
        raise DesignError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}", "--provider")
    if batch < 1 or batch > 4096:
        raise DesignError(f"batch must be between 1 and 4096, got {batch}", "--batch")
    if threads < 0 or threads > 1024:
        raise DesignError(f"threads must be between 0 (the runtime's default) and 1024, got {threads}", "--threads")
    if runs < 1 or runs > MAX_RUNS:
        raise DesignError(f"runs must be between 1 and {MAX_RUNS}, got {runs}", "--runs")


def _tick(progress: Callable | None, cancel: Callable | None, done: int, total: int) -> None:
    if cancel is not None and cancel():
        raise Cancelled()
    if progress is not None:
        progress(done, total)


def prepare(graph: Graph, fuse: bool) -> Graph:
    """The graph to profile: a copy, fused when asked, shapes inferred."""
    g = fuse_pass(graph).graph if fuse else graph.copy()
    analyze(g, "flops", None, strict=True)
    return g


def profile_design(graph: Graph, runtime: str = "ort", provider: str = "auto", batch: int = 1, threads: int = 0, runs: int = 10,
                   fuse: bool = False, progress: Callable | None = None, cancel: Callable | None = None,
                   roofline: Callable | None = None) -> list[ProfileReport]:
    """Profile `graph` on random input; one report per runtime ('both': ONNX Runtime then PyTorch).

    `progress(done, total)` is called after each run; `cancel()` returning true stops with `Cancelled`.
    `roofline(runtime, provider, threads)` returns a `backends.roofline.Roofline` to classify nodes.
    """
    check_options(runtime, provider, batch, threads, runs)
    g = prepare(graph, fuse)
    work = node_work(g, batch)
    names = ("ort", "torch") if runtime == "both" else (runtime,)
    total = (WARMUP + runs) * len(names)
    reports = []
    for i, name in enumerate(names):
        step = (lambda d, t, base=i * (WARMUP + runs): _tick(progress, cancel, base + d, total))
        measure = profile_ort if name == "ort" else profile_torch
        report = measure(g, work, provider, batch, threads, runs, step)
        if roofline is not None:
            classify(report, roofline(name, report.provider, threads))
        reports.append(report)
    return reports


def classify(report: ProfileReport, roof) -> None:
    """Set each node's bound ('memory' or 'compute') from the roofline's ridge point."""
    for n in report.nodes:
        n.bound = roof.bound(n.intensity) if n.bytes or n.flops else None


def _node_times(work: dict[str, NodeWork], per_run: list[dict[str, float]], walls: list[float] | None = None) -> list[NodeTime]:
    """Per node: the mean over the middle runs (ranked by `walls` when the node times come from the timed runs themselves,
    else by their summed time), with share, GFLOP/s and intensity; nodes in `work` order.

    Per-node medians would not add up: a run disturbed by another process is slow in a few nodes only.
    """
    keys = walls if walls is not None else [sum(run.values()) for run in per_run]
    ranked = [run for _, run in sorted(zip(keys, per_run), key=lambda pair: pair[0])]
    quarter = len(ranked) // 4
    middle = ranked[quarter:len(ranked) - quarter] or ranked
    means = {name: sum(run.get(name, 0.0) for run in middle) / len(middle) for name in work}
    total = sum(means.values()) or 1.0
    out = []
    for name, w in work.items():
        if w.op in ("Input", "Output") and not means[name]:
            continue
        ms = means[name]
        rate = w.flops / (ms * 1e6) if ms > 0 else 0.0
        out.append(NodeTime(name, w.op, ms, ms / total, rate, w.bytes, w.flops / w.bytes if w.bytes else 0.0, w.peak_bytes, flops=w.flops))
    return out


def _fastest(work: dict[str, NodeWork], per_run: list[dict[str, float]]) -> dict[str, float]:
    return {name: min(run.get(name, 0.0) for run in per_run) for name in work}


def _cpu_scaled(work: dict[str, NodeWork], per_run: list[dict[str, float]], walls: list[float], cpu: list[float]) -> dict[str, float]:
    """Per node: the mean over runs of its (wall-clock) time times its run's CPU time over wall time.

    With one thread, other processes preempt a run at random moments, so each node's time stretches in proportion to
    its length on average: the scaled mean is the node's time without those waits, from every run rather than the luckiest.
    """
    ratios = [min(1.0, c / w) if w > 0 else 1.0 for w, c in zip(walls, cpu)]
    return {name: sum(run.get(name, 0.0) * r for run, r in zip(per_run, ratios)) / len(per_run) for name in work}


def random_inputs(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal([batch, *graph.nodes[name].meta["shapes"][0]]).astype(np.float32) for name in graph.inputs}


# ---- ONNX Runtime -------------------------------------------------------------------------------------------------


def design_node_of(onnx_name: str, design: set[str]) -> str | None:
    """The design node an exported ONNX node was named after (``X``, ``X/label``, ``X_k``)."""
    base = onnx_name.split("/", 1)[0]
    while base not in design:
        stripped = re.sub(r"_\d+$", "", base)
        if stripped == base:
            return None
        base = stripped
    return base


def _onnx_anchor(kernel: str, onnx_names: dict[str, str]) -> str | None:
    """The ONNX node whose name (or output's name) an ORT kernel carries, after ORT's suffixes (``_nchwc``) and
    path parts (``/QuickGeluFusion/``) are taken off."""
    name = kernel.rsplit(" ", 1)[-1].rstrip("/")
    while name not in onnx_names:
        stripped = ORT_SUFFIX.sub("", name)
        if stripped == name:
            if "/" not in name:
                return None
            stripped = name.rsplit("/", 1)[0]
        name = stripped
    return onnx_names[name]


class KernelMap:
    """Which design nodes each ORT kernel ran, from the exported model and ORT's optimized model."""

    def __init__(self, exported, optimized, design: Graph):
        names = set(design.nodes)
        self.onnx_design = {n.name: design_node_of(n.name, names) for n in exported.graph.node}
        onnx_names = {v: n.name for n in exported.graph.node for v in n.output} | {n.name: n.name for n in exported.graph.node}
        producers = {v: n for n in exported.graph.node for v in n.output}
        consumers: dict[str, list] = {}
        for n in exported.graph.node:
            for v in n.input:
                consumers.setdefault(v, []).append(n)
        self.kernels: dict[str, list[str]] = {}
        anchors: dict[str, str] = {}
        opt_nodes = list(optimized.graph.node)
        for n in opt_nodes:
            anchor = _onnx_anchor(n.name, onnx_names)
            if anchor is not None:
                anchors[n.name] = anchor
        owner = {a: k for k, a in anchors.items()}  # ONNX node -> kernel that carries its name
        # layout kernels: the anchored kernel they feed or are fed by, through the optimized graph
        opt_prod = {v: n for n in opt_nodes for v in n.output}
        opt_cons: dict[str, list] = {}
        for n in opt_nodes:
            for v in n.input:
                opt_cons.setdefault(v, []).append(n)
        for n in opt_nodes:
            if n.name in anchors:
                continue
            near = [opt_prod[v].name for v in n.input if v in opt_prod and opt_prod[v].name in anchors]
            near = near or [c.name for v in n.output for c in opt_cons.get(v, []) if c.name in anchors]
            near = near or [p.name for v in n.output if v in producers for p in [producers[v]] if p.name in owner]
            if near:
                anchors[n.name] = anchors.get(near[0], near[0])
        self.fused: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {k: [a] for k, a in anchors.items()}
        for n in exported.graph.node:
            if n.name in owner:
                continue
            kernel = self._absorber(n, owner, producers, consumers)
            if kernel is not None:
                groups[kernel].append(n.name)
        for kernel, members in groups.items():
            design_nodes = list(dict.fromkeys(d for m in members if (d := self.onnx_design.get(m)) is not None))
            if not design_nodes:
                design_nodes = [d for d in [design_node_of(kernel, names)] if d]
            self.kernels[kernel] = design_nodes
            if len(design_nodes) > 1:
                self.fused[kernel] = design_nodes

    def _absorber(self, node, owner: dict[str, str], producers: dict, consumers: dict) -> str | None:
        """The kernel an ONNX node without one of its own was fused into."""
        seen = set()
        current = node
        heavy = node.op_type in HEAVY_ONNX
        while current is not None and current.name not in seen:
            seen.add(current.name)
            if current.name in owner and current is not node:
                return owner[current.name]
            if heavy:  # a heavy op is the head of its fused kernel: follow its only consumer chain
                outs = [c for v in current.output for c in consumers.get(v, [])]
                current = outs[0] if len(outs) == 1 else None
                continue
            if current.op_type in HEAVY_ONNX:  # the head this elementwise op was fused behind
                heavy, seen = True, set()
                continue
            inputs = [producers[v] for v in current.input if v in producers]
            single = [p for p in inputs if sum(len(consumers.get(v, [])) for v in p.output) == 1]
            current = (single or inputs or [None])[0]
        return None

    def design_nodes(self, kernel: str) -> list[str]:
        return self.kernels.get(kernel, [])


def _ort_session(data: bytes, provider: str, threads: int, folder: str, optimized_path: str):
    """A profiling session at ORT's default optimization level: (session, provider used, note)."""
    import onnxruntime as ort

    from convstudio.backends.onnx import runtime as rt

    wants_cuda = provider in ("auto", "cuda") and rt.CUDA in ort.get_available_providers()
    if provider == "cuda" and not wants_cuda:
        raise DesignError("CUDA is not usable: this onnxruntime build has no CUDA provider", "--provider cuda")
    options = ort.SessionOptions()
    options.log_severity_level = rt.QUIET
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / "ort")
    options.optimized_model_filepath = optimized_path
    providers = [rt.CUDA, rt.CPU] if wants_cuda else [rt.CPU]
    try:
        with rt.captured_stderr() as log:
            session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        raise DesignError(f"onnxruntime cannot load the design: {' '.join(str(err).split())[:240]}", "--runtime ort") from None
    used = session.get_providers()[0]
    if provider == "cuda" and used != rt.CUDA:
        raise DesignError(f"CUDA is not usable: {rt._reason(''.join(log))}", "--provider cuda")
    note = None
    if provider == "auto" and used != rt.CUDA:
        reason = rt._reason("".join(log)) if wants_cuda else "this onnxruntime build has no CUDA provider"
        note = f"CUDA is not usable ({reason}); running on CPU"
    return session, ("cuda" if used == rt.CUDA else "cpu"), note


def profile_ort(g: Graph, work: dict[str, NodeWork], provider: str, batch: int, threads: int, runs: int, step: Callable) -> ProfileReport:
    """Profile on ONNX Runtime; per-kernel times from its profiler mapped to design nodes."""
    import onnx

    from convstudio.backends.onnx.export import build
    from convstudio.backends.onnx.runtime import run

    exported, _, data = build(g)
    feeds = random_inputs(g, batch)
    with tempfile.TemporaryDirectory(prefix="convstudio-profile-") as folder:
        optimized_path = str(Path(folder) / "optimized.onnx")
        session, used, note = _ort_session(data, provider, threads, folder, optimized_path)
        walls, cpu = [], []
        for i in range(WARMUP + runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            run(session, feeds)
            walls.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
            step(i + 1, WARMUP + runs)
        trace = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(optimized_path, load_external_data=False)
    kmap = KernelMap(exported, optimized, g)
    per_run, run_ms = _split_runs(trace, kmap, work)
    if len(per_run) != runs + WARMUP:
        raise DesignError(f"onnxruntime's profile holds {len(per_run)} runs, expected {runs + WARMUP}", "--runtime ort")
    per_run, walls, cpu = per_run[WARMUP:], walls[WARMUP:], cpu[WARMUP:]
    return ProfileReport("ort", used, batch, threads, walls, _node_times(work, per_run, walls), kmap.fused, note, _fastest(work, per_run),
                         cpu, run_ms[WARMUP:], _cpu_scaled(work, per_run, walls, cpu))


def kernel_events(trace: list[dict]) -> list[dict]:
    return [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]


def _split_runs(trace: list[dict], kmap: KernelMap, work: dict[str, NodeWork]) -> tuple[list[dict[str, float]], list[float]]:
    """Per run: design node -> milliseconds, and the run's own time in onnxruntime (its ``model_run`` event).

    A kernel's time is its duration plus the executor's gap since the previous kernel ended (output allocation and
    dispatch of this kernel), split over its design nodes by FLOPs; what is left of the run is before the first
    kernel and after the last (binding inputs and outputs).
    """
    bounds = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    per_run: list[dict[str, float]] = [{} for _ in bounds]
    ends: list[float | None] = [None for _ in bounds]  # end of each run's latest kernel so far
    for e in sorted(kernel_events(trace), key=lambda e: e["ts"]):
        kernel = e["name"][: -len("_kernel_time")]
        nodes = kmap.design_nodes(kernel)
        if not nodes:
            raise DesignError(f"onnxruntime kernel '{kernel}' maps to no design node", "--runtime ort")
        index = next((i for i, (lo, hi) in enumerate(bounds) if lo <= e["ts"] <= hi), None)
        if index is None:
            continue
        gap = max(0.0, e["ts"] - ends[index]) if ends[index] is not None else 0.0
        ends[index] = max(ends[index] or 0.0, e["ts"] + e["dur"])
        ms = (e["dur"] + gap) / 1e3
        flops = [work[n].flops if n in work else 0 for n in nodes]
        weights = flops if sum(flops) else [1] * len(nodes)
        total = sum(weights)
        run = per_run[index]
        for n, w in zip(nodes, weights):
            run[n] = run.get(n, 0.0) + ms * w / total
    return per_run, [(hi - lo) / 1e3 for lo, hi in bounds]


def measure_latency(graph: Graph, batch: int = 1, threads: int = 0, runs: int = 10, provider: str = "cpu") -> dict:
    """End-to-end ms of `graph` on ONNX Runtime at its default optimization level, without the profiler:
    {"median", "min", "max", "runs"} over `runs` timed runs after a warm-up, and "reference": with one thread the
    fastest run's process CPU time (the waits other processes cause left out), else the fastest wall time."""
    from convstudio.backends.onnx.export import build
    from convstudio.backends.onnx.runtime import open_session, run

    check_options("ort", provider, batch, threads, runs)
    g = prepare(graph, False)
    _, _, data = build(g)
    session = open_session(data, provider, True, threads)[0]
    feeds = random_inputs(g, batch)
    times, cpu = [], []
    for i in range(WARMUP + runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        run(session, feeds)
        if i >= WARMUP:
            times.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
    reference = min(cpu) if threads == 1 and provider == "cpu" else min(times)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": runs, "reference": reference}


# ---- PyTorch ------------------------------------------------------------------------------------------------------


def profile_torch(g: Graph, work: dict[str, NodeWork], provider: str, batch: int, threads: int, runs: int, step: Callable) -> ProfileReport:
    """Profile on PyTorch: end to end from the lowered module's own forward; per node from a copy of its forward with a
    time stamp at each design node's boundary (`_stamped`), run after each timed run."""
    import torch

    from convstudio.backends.torch.lower import lower

    cuda = provider in ("auto", "cuda") and torch.cuda.is_available()
    if provider == "cuda" and not cuda:
        raise DesignError("CUDA is not usable: torch.cuda.is_available() is false on this machine", "--provider cuda")
    note = "torch sees no CUDA device; running on CPU" if provider == "auto" and not cuda else None
    device = torch.device("cuda" if cuda else "cpu")
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        module = lower(g).eval().to(device)
        design = set(g.nodes)
        owner = {n.name: _fx_design_node(n.name, design) for n in module.graph.nodes}
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        feeds = [torch.from_numpy(a).to(device) for a in random_inputs(g, batch).values()]
        stamps: list[float] = []

        def stamp() -> None:
            sync()
            stamps.append(time.perf_counter())

        timed, charged = _stamped(module, owner, stamp)
        walls, cpu, per_run = [], [], []
        with torch.inference_mode():
            for i in range(WARMUP + runs):
                sync()
                start, start_cpu = time.perf_counter(), time.process_time()
                module(*feeds)
                sync()
                walls.append((time.perf_counter() - start) * 1e3)
                cpu.append((time.process_time() - start_cpu) * 1e3)
                stamps.clear()
                timed(*feeds)
                timings: dict[str, float] = {}
                for k, name in enumerate(charged):
                    if name is not None:
                        timings[name] = timings.get(name, 0.0) + (stamps[k + 1] - stamps[k]) * 1e3
                per_run.append(timings)
                step(i + 1, WARMUP + runs)
    except RuntimeError as err:
        raise DesignError(f"PyTorch cannot run the design: {str(err).splitlines()[0][:240]}", "--runtime torch") from None
    finally:
        torch.set_num_threads(saved)
    per_run = per_run[WARMUP:]
    return ProfileReport("torch", "cuda" if cuda else "cpu", batch, threads, walls[WARMUP:], _node_times(work, per_run), {}, note,
                         _fastest(work, per_run), cpu[WARMUP:])


def _stamped(module, owner: dict[str, str | None], stamp: Callable) -> tuple:
    """A GraphModule sharing `module`'s submodules whose forward is `module`'s generated code with a call to `stamp()`
    before each design node's first fx node and before the return, and the design node charged with each interval
    between two stamps (None: fx nodes of no design node, left unattributed).

    The code between two stamps is the node's calls and the freeing of the values it was the last to read, as in the
    plain forward, so the intervals add up to the forward's time less its call and return.
    """
    import torch.fx as fx

    graph = copy.deepcopy(module.graph)
    charged: list[str | None] = []
    body = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    for i, n in enumerate(body):
        name = owner.get(n.name)
        if i == 0 or name != charged[-1]:
            with graph.inserting_before(n):
                graph.call_function(stamp)
            charged.append(name)
    with graph.inserting_before(graph.find_nodes(op="output")[0]):
        graph.call_function(stamp)
    return fx.GraphModule(module, graph), charged


def _fx_design_node(fx_name: str, design: set[str]) -> str | None:
    """The design node an fx node was emitted for: the longest design name its name starts with."""
    if fx_name in design:
        return fx_name
    best = None
    for cut in range(len(fx_name) - 1, 0, -1):
        if fx_name[:cut] in design:
            best = fx_name[:cut]
            break
    return best
