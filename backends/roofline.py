"""This machine's roofline: peak compute from a matmul probe, memory bandwidth from a copy probe.

Probes run once per machine, runtime, provider and thread count and are cached in
``$XDG_CACHE_HOME/convstudio/roofline.json`` (``~/.cache/convstudio`` by default). A node whose
arithmetic intensity (FLOPs per byte moved) is below the ridge point (peak / bandwidth) is memory-bound.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from convstudio.ir.design import write_atomic
from convstudio.ir.errors import DesignError

MATMUL_SIZE = 1024
COPY_BYTES = 64 * 2**20
PROBE_RUNS = 3


@dataclass
class Roofline:
    """Peak GFLOP/s and bandwidth GB/s of one machine, runtime, provider and thread count."""

    peak_gflops: float
    bandwidth_gbs: float
    key: str

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the memory roof meets the compute roof."""
        return self.peak_gflops / self.bandwidth_gbs

    def bound(self, intensity: float) -> str:
        return "memory" if intensity < self.ridge else "compute"

    def attainable(self, intensity: float) -> float:
        return min(self.peak_gflops, self.bandwidth_gbs * intensity)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/convstudio, else ~/.cache/convstudio."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convstudio"


def machine_id() -> str:
    """Host name, processor and core count: what the cached figures belong to."""
    return f"{platform.node()}/{platform.machine()}/{platform.processor() or 'cpu'}/{os.cpu_count()}"


def read_cache(name: str) -> dict:
    """A JSON cache file as a dict ({} when missing or unreadable: it is measured again)."""
    path = cache_dir() / name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(name: str, data: dict) -> Path:
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1).encode())
    except OSError as err:
        raise DesignError(f"cannot write the cache file: {err.strerror}", f"file '{path}'") from None
    return path


def _best_ms(fn, runs: int = PROBE_RUNS) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def _matmul_ort(threads: int, provider: str) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = MATMUL_SIZE
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "probe",
                              [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n, n]) for v in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ms = _best_ms(lambda: session.run(None, {"a": a, "b": a}))
    return 2 * n**3 / (ms * 1e6)


def _matmul_torch(threads: int, provider: str) -> float:
    import torch

    n = MATMUL_SIZE
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = "cuda" if provider == "cuda" else "cpu"
        a = torch.randn(n, n, device=device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def step():
            torch.mm(a, a)
            sync()

        ms = _best_ms(step)
    finally:
        torch.set_num_threads(saved)
    return 2 * n**3 / (ms * 1e6)


def _copy_gbs() -> float:
    """Bytes read plus bytes written per second by a large array copy."""
    src = np.ones(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    ms = _best_ms(lambda: np.copyto(dst, src))
    return 2 * COPY_BYTES / (ms * 1e6)


def measure(runtime: str, provider: str = "cpu", threads: int = 0) -> Roofline:
    """Run both probes now (no cache)."""
    peak = _matmul_ort(threads, provider) if runtime == "ort" else _matmul_torch(threads, provider)
    return Roofline(peak, _copy_gbs(), f"{machine_id()}|{runtime}|{provider}|{threads}")


def roofline(runtime: str, provider: str = "cpu", threads: int = 0, refresh: bool = False) -> Roofline:
    """This machine's roofline for a runtime, provider and thread count, from the cache or measured once."""
    key = f"{machine_id()}|{runtime}|{provider}|{threads}"
    cache = read_cache("roofline.json")
    entry = cache.get(key)
    if not refresh and isinstance(entry, dict):
        try:
            return Roofline(float(entry["peak_gflops"]), float(entry["bandwidth_gbs"]), key)
        except (KeyError, TypeError, ValueError):
            pass
    roof = measure(runtime, provider, threads)
    cache[key] = {k: v for k, v in asdict(roof).items() if k != "key"}
    write_cache("roofline.json", cache)
    return roof


def plot(reports, roofs: dict, path: str | Path) -> None:
    """Draw each report's nodes on its runtime's roofline (log-log) into a PNG, written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    markers = {"ort": "o", "torch": "s"}
    points = [n.intensity for r in reports for n in r.nodes if n.intensity > 0] or [1.0]
    lo, hi = min(points + [0.05]) / 2, max(points + [100.0]) * 2
    xs = np.logspace(np.log10(lo), np.log10(hi), 200)
    for r in reports:
        roof = roofs[r.runtime]
        ax.plot(xs, [roof.attainable(x) for x in xs], lw=2, label=f"{r.runtime} roof: {roof.peak_gflops:.0f} GFLOP/s, {roof.bandwidth_gbs:.1f} GB/s")
        nodes = [n for n in r.nodes if n.intensity > 0 and n.gflops_per_s > 0]
        colors = ["tab:red" if n.bound == "memory" else "tab:blue" for n in nodes]
        sizes = [20 + 400 * n.share for n in nodes]
        ax.scatter([n.intensity for n in nodes], [n.gflops_per_s for n in nodes], c=colors, s=sizes, alpha=0.6,
                   marker=markers.get(r.runtime, "o"), edgecolors="black", linewidths=0.4)
        for n in sorted(nodes, key=lambda n: -n.share)[:5]:
            ax.annotate(n.name, (n.intensity, n.gflops_per_s), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("roofline: red = memory-bound, blue = compute-bound, size = share of time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(Path(path), buffer.getvalue())


def summary(roof: Roofline) -> str:
    return f"peak {roof.peak_gflops:.1f} GFLOP/s, bandwidth {roof.bandwidth_gbs:.1f} GB/s, ridge {roof.ridge:.1f} FLOP/B"

