"""`convstudio infer model.onnx`: run an ONNX model in ONNX Runtime, summarize outputs and latency."""

from __future__ import annotations

import math
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from convstudio.backends.onnx import runtime
from convstudio.backends.onnx.memory import check_model_memory, read_structure
from convstudio.backends.onnx.runtime import MAX_INPUT_ELEMENTS, PROVIDERS, open_session
from convstudio.designer.cli.common import Progress, add_memory_argument, check_batch, choose_input, print_json
from convstudio.ir.errors import DesignError

VERB = "infer"
HELP = "run an ONNX model in ONNX Runtime (CUDA when usable, else CPU): output summary and latency"
TIME_LIMIT = 60.0  # seconds a whole infer run (session, warmup, timed runs) may take unless --time-limit says otherwise

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def add_arguments(parser) -> None:
    parser.add_argument("model", help="ONNX model file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", action="append", metavar="[NAME=]X.npy", help="input array (.npy); repeat with NAME= for several inputs")
    source.add_argument("--random", action="store_true", help="standard-normal inputs (dynamic batch = --batch)")
    parser.add_argument("--batch", type=int, default=1, help="batch size for --random (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    parser.add_argument("--provider", choices=PROVIDERS, default="auto", help="auto: CUDA when usable, else CPU")
    parser.add_argument("--runs", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--no-optimize", action="store_true", help="turn ONNX Runtime's graph optimizations off")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, metavar="SECONDS",
                        help=f"stop the run after SECONDS, all runs together (default {TIME_LIMIT:g})")
    add_memory_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _dims(shape) -> list:
    return [d if isinstance(d, int) else None for d in shape]


def _dtype(meta) -> type:
    if meta.type not in ORT_DTYPES:
        raise DesignError(f"input '{meta.name}' has element type {meta.type}, which infer cannot feed", "model inputs")
    return ORT_DTYPES[meta.type]


def _load_npy(text: str, metas: list) -> tuple[str, np.ndarray]:
    name, _, path_text = ("", "", text) if Path(text).is_file() else text.partition("=")
    name = choose_input(name, [m.name for m in metas], "model", "NAME=X.npy")
    path = Path(path_text)
    where = f"file '{path}'"
    if not path.is_file():
        raise DesignError("no such file", where)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DesignError(f"not a readable .npy array ({str(err).splitlines()[0][:120]})", where) from None
    if not isinstance(array, np.ndarray):
        raise DesignError("holds several arrays (.npz); give one .npy array", where)
    return name, array


def _check(meta, array: np.ndarray, where: str) -> None:
    want = _dtype(meta)
    if array.dtype != want:
        raise DesignError(f"input '{meta.name}' must be {np.dtype(want).name}, got {array.dtype.name}", where)
    dims = _dims(meta.shape)
    shown = "x".join(str(d) if d is not None else "N" for d in dims)
    if array.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, array.shape)):
        raise DesignError(f"input '{meta.name}' must have shape {shown}, got {'x'.join(map(str, array.shape))}", where)
    if array.size == 0:
        raise DesignError(f"input '{meta.name}' is empty", where)


def _random_shape(meta, batch: int) -> list[int]:
    shape = []
    for k, d in enumerate(_dims(meta.shape)):
        if d is None and k > 0:
            raise DesignError(f"input '{meta.name}' has a dynamic dimension {k}; give it with --input", "--random")
        shape.append(batch if d is None else d)
    if any(d < 1 for d in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMENTS:
        raise DesignError(f"input '{meta.name}' of shape {shape} is empty or too large to generate", "--random")
    return shape


def _random(meta, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = _dtype(meta)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 10, shape).astype(dtype)


def feeds(session, args, check_shapes=None) -> dict[str, np.ndarray]:
    """The input arrays, checked against the model's input names, shapes and element types.

    `check_shapes({name: shape})` runs once the shapes are known, before random input is generated.
    """
    metas = session.get_inputs()
    if args.random:
        check_batch(args.batch, "--batch")
        shapes = {m.name: _random_shape(m, args.batch) for m in metas}
        if check_shapes:
            check_shapes(shapes)
        rng = np.random.default_rng(args.seed)
        return {m.name: _random(m, shapes[m.name], rng) for m in metas}
    out = {}
    for text in args.input:
        name, array = _load_npy(text, metas)
        _check(next(m for m in metas if m.name == name), array, f"--input {text}")
        out[name] = array
    missing = [m.name for m in metas if m.name not in out]
    if missing:
        raise DesignError(f"no array given for input {', '.join(missing)}", "--input")
    if check_shapes:
        check_shapes({name: array.shape for name, array in out.items()})
    return out


def summarize(name: str, value: np.ndarray) -> dict:
    entry = {"name": name, "shape": list(value.shape), "dtype": value.dtype.name}
    if value.size and np.issubdtype(value.dtype, np.number):
        entry.update(min=float(value.min()), max=float(value.max()), mean=float(value.mean()))
        if value.ndim == 1:
            entry["argmax"] = int(value.argmax())
        elif value.ndim == 2:
            entry["argmax"] = [int(i) for i in value.argmax(axis=1)]
    return entry


def run_args(args, on_run=None) -> dict:
    """`measure(args, on_run)` in a child process stopped after `args.time_limit` seconds: a model may run without end."""
    limit = args.time_limit
    if not (math.isfinite(limit) and limit > 0):
        raise DesignError(f"time limit must be a positive number of seconds, got {limit:g}", "--time-limit")
    plain = Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("_")})
    return runtime.call_with_time_limit(measure, (plain,), limit, "running the model in ONNX Runtime", f"file '{args.model}'", on_run)


def measure(args, on_run=None) -> dict:
    """Open the model, feed it, run it warmup + runs times (`on_run()` after each run) and summarize."""
    if args.runs < 1 or args.warmup < 0:
        raise DesignError("runs must be at least 1 and warmup at least 0", "--runs/--warmup")
    session, provider, note = open_session(args.model, args.provider, optimize=not args.no_optimize)
    structure = read_structure(args.model)  # a regular, readable model file: open_session checked it

    def check_shapes(shapes: dict) -> None:  # before ONNX Runtime allocates a single activation
        batch = next(iter(shapes.values()))[0] if shapes else 1
        check_model_memory(structure, {k: tuple(v) for k, v in shapes.items()}, batch, args.max_memory, f"file '{args.model}'")

    inputs = feeds(session, args, check_shapes)
    for _ in range(args.warmup):
        runtime.run(session, inputs)
        if on_run:
            on_run()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        outputs = runtime.run(session, inputs)
        times.append((time.perf_counter() - start) * 1000)
        if on_run:
            on_run()
    names = [o.name for o in session.get_outputs()]
    return {
        "model": str(args.model),
        "provider": provider,
        "note": note,
        "inputs": {k: list(v.shape) for k, v in inputs.items()},
        "outputs": [summarize(n, v) for n, v in zip(names, outputs)],
        "runs": args.runs,
        "latency_ms": {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)), "min": float(min(times))},
    }


def output_line(o: dict, digits: int = 6) -> str:
    """One output's summary: name, shape, dtype, then min/max/mean and argmax where `summarize` gave them."""
    line = f"{o['name']}: shape {'x'.join(map(str, o['shape']))} {o['dtype']}"
    if "min" in o:
        line += f", min {o['min']:.{digits}g}, max {o['max']:.{digits}g}, mean {o['mean']:.{digits}g}"
    if "argmax" in o:
        line += f", argmax {o['argmax']}"
    return line


def run(args) -> int:
    with Progress(f"running {Path(args.model).name}", total=args.warmup + args.runs, show=not args.json) as progress:
        result = run_args(args, progress.advance)
    if args.json:
        print_json(result)
        return 0
    if result["note"]:
        print(result["note"])
    for o in result["outputs"]:
        print(output_line(o))
    lat = result["latency_ms"]
    print(f"latency over {result['runs']} runs: median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms ({result['provider']})")
    return 0
