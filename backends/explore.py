"""Sweep compression variants of a trained design into an accuracy-versus-cost table and Pareto chart (GUI-free).

Each variant is a compression strategy with parameters (`prune:0.5`, `lowrank:energy=0.9`, `separable`) or
`int8` (the baseline's ONNX export quantized by ONNX Runtime). A strategy variant is built from the trained
weights, saved with them in the output folder, fine-tuned with distillation from the original, and measured:
accuracy on the validation split, params, MACs and latency (predicted by this machine's latency model, else
measured end to end in ONNX Runtime on one thread). Variants run in worker processes; every finished one is
appended to `results.jsonl` in the output folder, so a run started again skips what is done.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, load, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.passes.compress import STRATEGIES, parse_param_text
from convstudio.ir.passes.compress.common import check_params

INT8 = "int8"
RESULTS = "results.jsonl"
LATENCY_MODES = ("auto", "predicted", "measured")
LATENCY_RUNS = 50


@dataclass(frozen=True)
class Variant:
    """A strategy with its parameters, or int8."""

    strategy: str
    params: tuple = ()  # ((key, value), ...) in the order given

    @property
    def name(self) -> str:
        return self.strategy + (":" + "+".join(f"{k}={v}" for k, v in self.params) if self.params else "")

    @property
    def stem(self) -> str:
        """A file name for the variant's design: prune_ratio0.5."""
        return "_".join([self.strategy, *(f"{k}{v}" for k, v in self.params)]).replace("/", "-")


def parse_variants(items: list[str], where: str = "--variants") -> list[Variant]:
    """`NAME[:V,V,...]` items: each V is one variant, `k=v` pairs joined by '+' or a bare value of the strategy's first parameter."""
    out: list[Variant] = []
    for item in items:
        name, _, values = item.partition(":")
        if name == INT8:
            if values:
                raise DesignError("int8 takes no parameters", f"{where} {item}")
            out.append(Variant(INT8))
            continue
        strategy = STRATEGIES.get(name)
        if strategy is None:
            raise DesignError(f"unknown variant '{name}' (strategies: {', '.join(STRATEGIES)}, or int8)", f"{where} {item}")
        for value in values.split(",") if values else [""]:
            params = []
            for part in filter(None, value.split("+")):
                key, sep, text = part.partition("=")
                if not sep:
                    if not strategy.params:
                        raise DesignError(f"strategy '{name}' has no parameters", f"{where} {item}")
                    key, text = next(iter(strategy.params)), part
                try:
                    params.append((key, parse_param_text(strategy.params, key, text)))
                    check_params(name, strategy.params, dict(params))
                except DesignError as e:
                    raise DesignError(e.what, f"{where} {item}") from None
            if values and not params:
                raise DesignError("empty parameter value", f"{where} {item}")
            out.append(Variant(name, tuple(params)))
    unique = list(dict.fromkeys(out))
    if not unique:
        raise DesignError("no variants given", where)
    return unique


@dataclass
class Settings:
    """What every variant of one sweep shares."""

    design: Path
    data: str
    out_dir: Path
    weights: Path | None = None  # default: the design's paired weights
    epochs: int = 1
    alpha: float = 0.5
    temperature: float = 4.0
    latency: str = "auto"  # auto | predicted | measured
    seed: int = 0
    overrides: dict = field(default_factory=dict)  # training-section overrides for fine-tuning (lr, batch_size, ...)


def check_settings(settings: Settings) -> None:
    from convstudio.backends.torch.distill import check_distill_options

    check_distill_options(settings.alpha, settings.temperature)
    if settings.epochs < 0:
        raise DesignError(f"must be 0 or more, got {settings.epochs}", "--finetune-epochs")
    if settings.latency not in LATENCY_MODES:
        raise DesignError(f"must be one of {', '.join(LATENCY_MODES)}, got '{settings.latency}'", "--latency")
    if settings.out_dir.exists() and not settings.out_dir.is_dir():
        raise DesignError("is a file, not a folder", f"--out-dir '{settings.out_dir}'")


def source_digest(settings: Settings) -> str:
    """Fingerprint of the design, its weights and the settings: results of another sweep are never reused."""
    design = load(settings.design)
    weights = settings.weights or design.weights_path()
    h = hashlib.sha256(settings.design.read_bytes())
    if weights is not None and Path(weights).is_file():
        h.update(Path(weights).read_bytes())
    h.update(json.dumps([settings.data, settings.epochs, settings.alpha, settings.temperature, settings.latency, settings.seed,
                         settings.overrides], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ----- measuring one design -----


def load_trained(path: Path, weights: Path | None) -> Design:
    from convstudio.backends.weights import load_design_weights

    design = load(path)
    load_design_weights(design, weights, required=True)
    return design


def eval_config(design: Design, settings: Settings) -> dict:
    from convstudio.backends.torch.train import merged_config

    return merged_config(design.training, {**settings.overrides, "dataset": settings.data})


def torch_accuracy(design: Design, settings: Settings) -> float | None:
    """Validation accuracy of a design holding its weights (the split fine-tuning uses)."""
    from convstudio.backends.torch.train import RunOptions, Trainer

    trainer = Trainer(design, {**settings.overrides, "dataset": settings.data}, RunOptions(device="cpu"))
    return trainer.evaluate()[1]


def measured_latency(model: bytes, runs: int = LATENCY_RUNS) -> float:
    """Median ms of one-sample runs of an ONNX model in ONNX Runtime on one CPU thread."""
    from convstudio.backends.onnx.quantize import model_input
    from convstudio.backends.onnx.runtime import open_session, run
    from convstudio.backends.onnx.safety import read_model

    name, shape = model_input(read_model(model)[0], "model")
    session, _, _ = open_session(model, provider="cpu", threads=1)
    x = {name: np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)}
    times = []
    for i in range(runs + 5):
        start = time.perf_counter()
        run(session, x)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def latency_of(design: Design, mode: str, onnx_model: bytes | None = None) -> tuple[float, str]:
    """(ms for one sample, 'predicted' or 'measured')."""
    if mode == "predicted":
        from convstudio.backends.latency_model import find_model, predict

        table = find_model()
        if table is None:
            raise DesignError("no latency model is calibrated on this machine (run `convstudio profile --calibrate`)", "--latency predicted")
        return predict(design.graph, 1, table)[1], "predicted"
    if onnx_model is None:
        from convstudio.backends.onnx.export import export_model

        onnx_model = export_model(design.graph).SerializeToString()
    return measured_latency(onnx_model), "measured"


def costs(design: Design) -> dict:
    total = analyze(design.graph.copy(), "flops", None, strict=True).total
    return {"params": int(total.params), "macs": int(total.macs)}


# ----- one variant (runs in a worker process) -----


def measure_baseline(settings: Settings, mode: str) -> dict:
    design = load_trained(settings.design, settings.weights)
    latency, source = latency_of(design, mode)
    return {"name": "baseline", **costs(design), "latency_ms": latency, "latency_source": source, "accuracy": torch_accuracy(design, settings),
            "design": str(settings.design)}


def build_int8(settings: Settings) -> dict:
    from convstudio.backends.onnx.export import export_model
    from convstudio.backends.onnx.quantize import CALIB_SAMPLES, accuracy, dataset_arrays, model_input, quantize_model
    from convstudio.backends.onnx.runtime import open_session

    design = load_trained(settings.design, settings.weights)
    cfg = eval_config(design, settings)
    proto = export_model(design.graph)
    name, shape = model_input(proto, "model")
    data = dataset_arrays(settings.data, shape, cfg["val_split"], cfg["seed"])
    float_model = proto.SerializeToString()
    int8 = quantize_model(float_model, data["x"][data["calib"][:CALIB_SAMPLES]])
    path = settings.out_dir / f"{INT8}.onnx"
    write_atomic(path, int8)
    session, _, _ = open_session(int8, provider="cpu", threads=1)
    rows = data["eval"]
    return {**costs(design), "latency_ms": measured_latency(int8), "latency_source": "measured",
            "accuracy": accuracy(session, name, data["x"][rows], data["labels"][rows]), "bytes": len(int8), "float_bytes": len(float_model),
            "design": str(path)}


def build_variant(settings: Settings, variant: Variant, mode: str) -> dict:
    """Compress, save, fine-tune with distillation and measure one strategy variant."""
    from convstudio.backends.torch.distill import finetune
    from convstudio.backends.torch.train import RunOptions
    from convstudio.backends.weights import init_params, save_design_and_weights

    teacher = load_trained(settings.design, settings.weights)
    result = STRATEGIES[variant.strategy].apply(teacher.graph, None, **dict(variant.params))
    if not result.changed:
        declined = result.data.get("declined") or []
        example = f" ({declined[0]['node']}: {declined[0]['reason']})" if declined else ""
        raise DesignError(f"{variant.strategy} applies nowhere in the design{example}", f"variant '{variant.name}'")
    fresh = init_params(result.graph, settings.seed)
    path = settings.out_dir / f"{variant.stem}.json"
    save_design_and_weights(Design(result.graph, teacher.training), path, result.graph)
    student = load_trained(path, None)
    row = {**costs(student), "fresh_weights": fresh, "design": str(path)}
    if settings.epochs > 0:
        checkpoint = path.with_suffix(".ckpt")
        tuned = finetune(student, teacher, {**settings.overrides, "dataset": settings.data, "epochs": settings.epochs},
                         RunOptions(device="cpu", checkpoint=checkpoint), settings.alpha, settings.temperature)
        checkpoint.unlink(missing_ok=True)
        row.update(accuracy_before=tuned["accuracy_before"], accuracy=tuned["accuracy_after"])
    else:
        row["accuracy"] = torch_accuracy(student, settings)
    row["latency_ms"], row["latency_source"] = latency_of(student, mode)
    return row


def run_task(settings: Settings, variant: Variant | None, mode: str, key: str) -> dict:
    """A worker's job: one variant (None: the baseline) measured; a failure becomes the row's `error`."""
    import torch

    torch.set_num_threads(1)
    name = "baseline" if variant is None else variant.name
    started = time.perf_counter()
    try:
        if variant is None:
            row = measure_baseline(settings, mode)
        elif variant.strategy == INT8:
            row = build_int8(settings)
        else:
            row = build_variant(settings, variant, mode)
    except DesignError as e:
        row = {"error": e.line()}
    except Exception as e:  # a variant that breaks is reported and the sweep goes on
        row = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    return {"name": name, "key": key, **row, "seconds": round(time.perf_counter() - started, 2)}


# ----- the sweep -----


def read_results(path: Path) -> dict[str, dict]:
    """key -> row of the variants finished without error (a torn last line from an interruption is skipped)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "key" in row and "error" not in row:
            done[row["key"]] = row
    return done


def append_result(path: Path, row: dict) -> None:
    """One line more; a line torn by an interruption is ended first so that it cannot swallow this one."""
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" * torn + json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: true where no other point is at least as cheap and as accurate, and better in one."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


def mark_pareto(rows: list[dict]) -> None:
    """`pareto` (accuracy against MACs) and `pareto_latency` (accuracy against latency) on the rows that were measured."""
    ok = [r for r in rows if r.get("accuracy") is not None]
    for key, flag in (("macs", "pareto"), ("latency_ms", "pareto_latency")):
        for row, front in zip(ok, pareto_flags([(r[key], r["accuracy"]) for r in ok])):
            row[flag] = front
    for row in rows:
        row.setdefault("pareto", False)
        row.setdefault("pareto_latency", False)


def latency_mode(settings: Settings, variants: list[Variant]) -> str:
    """'auto': predicted when this machine has a latency model and no variant is int8 (the model has no int8 kernels)."""
    if settings.latency != "auto":
        return settings.latency
    from convstudio.backends.latency_model import find_model

    return "predicted" if find_model() is not None and all(v.strategy != INT8 for v in variants) else "measured"


def task_keys(settings: Settings, variants: list[Variant]) -> dict[Variant | None, str]:
    """The results-file key of each task (None: the baseline): the source's digest and the variant's name."""
    digest = source_digest(settings)
    return {v: f"{digest}:{'baseline' if v is None else v.name}" for v in [None, *variants]}


def explore(settings: Settings, variants: list[Variant], jobs: int = 1, on_result: Callable[[dict, int, int], None] | None = None) -> dict:
    """Run the sweep; returns {baseline, variants, latency_source, results}. `on_result(row, done, total)` follows progress."""
    check_settings(settings)
    if jobs < 1:
        raise DesignError(f"must be at least 1, got {jobs}", "--jobs")
    load_trained(settings.design, settings.weights)  # the design and its weights are readable before any worker starts
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    results = settings.out_dir / RESULTS
    keys, mode = task_keys(settings, variants), latency_mode(settings, variants)
    done = read_results(results)
    pending = [v for v in keys if keys[v] not in done]
    total, finished = len(keys), len(keys) - len(pending)
    rows = {keys[v]: done[keys[v]] for v in keys if keys[v] in done}
    with ProcessPoolExecutor(max_workers=min(jobs, max(len(pending), 1)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_task, settings, v, mode, keys[v]): v for v in pending}
        for future in as_completed(futures):
            v = futures[future]
            try:
                row = future.result()
            except BrokenProcessPool:
                row = {"name": "baseline" if v is None else v.name, "key": keys[v], "error": "the worker process died (out of memory or killed)"}
            append_result(results, row)
            rows[keys[v]] = row
            finished += 1
            if on_result:
                on_result(row, finished, total)
    ordered = [rows[keys[v]] for v in keys]
    mark_pareto(ordered)
    return {"baseline": ordered[0], "variants": ordered[1:], "latency_source": mode, "results": str(results)}


def write_chart(summary: dict, path: Path | str) -> None:
    """A PNG: accuracy against MACs and against latency, the Pareto front joined; points are numbered, the key beside them."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [r for r in [summary["baseline"], *summary["variants"]] if r.get("accuracy") is not None]
    macs_scale, macs_unit = next(((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if max(r["macs"] for r in rows) >= s), (1.0, ""))
    fig = Figure(figsize=(14, 5.2), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, key, flag, label in zip(axes, ("macs", "latency_ms"), ("pareto", "pareto_latency"),
                                    (f"MACs ({macs_unit or 'count'})", f"latency (ms, {summary['latency_source']})")):
        scale = macs_scale if key == "macs" else 1.0
        labels: dict[tuple, list[str]] = {}
        for number, row in enumerate(rows):
            point = (row[key] / scale, 100 * row["accuracy"])
            marker = "*" if number == 0 else "o"
            ax.scatter(*point, marker=marker, s=140 if number == 0 else 40, color="tab:red" if row[flag] else "tab:blue", zorder=3)
            labels.setdefault(point, []).append(str(number))
        for point, numbers in labels.items():  # variants with the same cost and accuracy share one label
            ax.annotate(",".join(numbers), point, textcoords="offset points", xytext=(5, 3), fontsize=8)
        front = sorted((r[key] / scale, 100 * r["accuracy"]) for r in rows if r[flag])
        if front:
            ax.step(*zip(*front), where="post", color="tab:red", alpha=0.5, label="Pareto front (red points)")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    key_text = "\n".join(f"{n:>2}  {r['name']}" for n, r in enumerate(rows))
    fig.text(0.815, 0.88, key_text, va="top", ha="left", family="monospace", fontsize=8)
    fig.suptitle(f"accuracy against cost: {Path(summary['baseline']['design']).stem}")
    fig.subplots_adjust(left=0.065, right=0.8, wspace=0.22, top=0.9, bottom=0.11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())

