"""Run ONNX models in ONNX Runtime: CUDA when onnxruntime can use a GPU, CPU otherwise.

Models are read through `backends.onnx.safety` (corrupt files, external data outside the model's
folder and invalid graphs are refused) and handed to onnxruntime as self-contained bytes.

onnxruntime prints provider load failures from C++ straight to stderr; session creation runs with
file descriptor 2 redirected, and the first useful line of what it printed becomes the one-line note
that says why CUDA was not used. Sessions and runs log at severity fatal, so a failing run prints no
coloured `[E:onnxruntime:...]` line of its own: every failure reaches the user as our one `error:` line.

A run of an untrusted model has no bound of its own (a Loop may iterate 2^62 times, and onnxruntime's
run cannot be interrupted from Python): `call_with_time_limit` runs such work in a child process and
stops it at the limit.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import onnx

from convstudio.backends.onnx.safety import load_external_data, read_model
from convstudio.ir.errors import DesignError

PROVIDERS = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MAX_INPUT_ELEMENTS = 2**31  # larger inputs are refused rather than allocated
QUIET = 4  # onnxruntime's log severity "fatal": it prints nothing of its own for errors


@contextlib.contextmanager
def captured_stderr():
    """Redirect file descriptor 2 into a temporary file; yields a list that receives its text."""
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            saved = os.dup(2)
        except OSError:
            yield text
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def _reason(log: str) -> str:
    """The most telling line of onnxruntime's CUDA failure output."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in log.splitlines()]
    for ln in lines:
        if "with error:" in ln:
            return ln.rsplit("with error:", 1)[1].strip()[:200]
    for ln in lines:
        if "Require" in ln or "CUDA" in ln:
            return ln.split("] ", 1)[-1].split(" Please ")[0].strip()[:200]
    return "onnxruntime could not start its CUDA provider"


def _model_bytes(model: str | bytes | Path | onnx.ModelProto) -> tuple[bytes, str]:
    """The model as self-contained bytes (external data checked and read in) and its name for errors."""
    if isinstance(model, onnx.ModelProto):
        load_external_data(model, None, "model")  # refuses tensors kept in external files
        return model.SerializeToString(), "model"
    if isinstance(model, str):
        model = Path(model)
    if isinstance(model, Path) and model.is_dir():
        raise DesignError("is a folder, not an ONNX model", f"file '{model}'")
    proto, where = read_model(model)
    return proto.SerializeToString(), where


def _session(source: bytes, providers: list[str], optimize: bool, threads: int):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only, into the captured stderr: why the CUDA provider failed to load
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def open_session(model: str | bytes | Path | onnx.ModelProto, provider: str = "auto", optimize: bool = True, threads: int = 0):
    """(session, provider used, note): `note` says in one line why CUDA was not used, else None.

    `threads` sets onnxruntime's intra-op threads (0: its default, one per core).
    """
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise DesignError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}", "--provider")
    source, where = _model_bytes(model)
    wants_cuda = provider in ("auto", "cuda") and CUDA in ort.get_available_providers()
    providers = [CUDA, CPU] if wants_cuda else [CPU]
    try:
        with captured_stderr() as log:
            session = _session(source, providers, optimize, threads)
    except Exception as err:  # onnxruntime raises its own exception types for invalid graphs
        detail = " ".join(str(err).split())
        detail = detail.split(" : ")[-1] if " : " in detail else detail
        raise DesignError(f"onnxruntime cannot load the model: {detail[:240]}", where) from None
    used = session.get_providers()[0]
    if provider == "cpu":
        return session, CPU, None
    if used == CUDA:
        return session, CUDA, None
    reason = _reason("".join(log)) if wants_cuda else "this onnxruntime build has no CUDA provider"
    if provider == "cuda":
        raise DesignError(f"CUDA is not usable: {reason}", "--provider cuda")
    return session, CPU, f"CUDA is not usable ({reason}); running on CPU"


def run(session, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the session on named inputs; returns the outputs in the model's order."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = QUIET
    try:
        return session.run(None, inputs, options)
    except Exception as err:  # onnxruntime's InvalidArgument / Fail
        raise DesignError(f"inference failed: {_run_failure(str(err))}", "inputs") from None


def _run_failure(text: str) -> str:
    """onnxruntime's run error without its C++ source locations and check expressions, naming the failing node."""
    text = " ".join(text.split())
    node = re.search(r"while running (\S+) node\. Name:'([^']*)'", text)
    detail = text.split("Status Message: ")[-1] if "Status Message: " in text else text.split(" : ")[-1]
    detail = detail.split(" was false. ")[-1]  # ORT_ENFORCE: "<condition> was false. <message>"
    detail = re.sub(r"^\S+\.(?:cc|h):\d+ (?:[^:]* : )?", "", detail)
    where = f" (in {node.group(1)} node '{node.group(2)}')" if node and node.group(2) else f" (in a {node.group(1)} node)" if node else ""
    return f"{detail[:240]}{where}"


def _child(fd: int) -> None:
    """The child process: read (target, args, ticks) from stdin, run `target(*args, tick)` and send ('tick',)
    messages on file descriptor `fd`, then ('done', result) or what went wrong."""
    conn = Connection(fd, readable=False)
    target, args, ticks = pickle.load(sys.stdin.buffer)
    tick = (lambda: conn.send(("tick",))) if ticks else None
    try:
        message = ("done", target(*args, tick))
    except DesignError as e:
        message = ("error", e.what, e.where)
    except MemoryError:
        message = ("memory",)
    except BaseException:  # a bug: the parent raises it with this traceback
        message = ("bug", traceback.format_exc())
    conn.send(message)


def call_with_time_limit(target: Callable, args: tuple, seconds: float, what: str, where: str, on_tick: Callable | None = None):
    """`target(*args, tick)` run in a child process that is killed after `seconds`; returns its result.

    `target` and `args` must pickle (a module-level function). The target's DesignError is raised here
    as it was; `tick()` in the child (None when `on_tick` is None) calls `on_tick()` here. At the limit:
    DesignError "`what` exceeded the time limit of N s". The child is a fresh interpreter (no fork of a
    caller holding threads, no re-run of the caller's main script) in its own session, so Ctrl-C reaches
    only this process, which then stops the child.
    """
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, "-c", f"from convstudio.backends.onnx.runtime import _child; _child({write_fd})"]
    deadline = time.monotonic() + seconds
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env, start_new_session=True)
    finally:
        os.close(write_fd)
    receive = Connection(read_fd, writable=False)
    try:
        with contextlib.suppress(BrokenPipeError):  # a child that died at start shows as end of file below
            process.stdin.write(pickle.dumps((target, args, on_tick is not None)))
            process.stdin.close()
        while True:
            if not receive.poll(max(deadline - time.monotonic(), 0)):
                raise DesignError(f"{what} exceeded the time limit of {seconds:g} s (raise it with --time-limit)", where)
            try:
                message = receive.recv()
            except EOFError:
                code = process.wait()
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise DesignError(f"{what} stopped: the process running it {how}", where) from None
            if message[0] != "tick":
                break
            on_tick()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        receive.close()
    if message[0] == "error":
        raise DesignError(message[1], message[2])
    if message[0] == "memory":
        raise MemoryError(f"{what} ran out of memory")
    if message[0] == "bug":
        raise RuntimeError(f"{what} failed in its child process:\n{message[1]}")
    return message[1]
