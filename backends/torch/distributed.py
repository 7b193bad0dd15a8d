"""DistributedDataParallel plumbing: the process context torchrun sets up, and its launch command.

A process started by torchrun (`torch.distributed.run`) finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment; `context()` joins the process group (gloo on CPU, nccl on GPU). Rank 0 alone writes files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def context(device: torch.device) -> Context:
    """Join the process group when launched by torchrun (once); a single process gets rank 0 of 1."""
    if not launched_by_torchrun():
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size())


def all_sum(values: list[float], ctx: Context, device: torch.device) -> list[float]:
    """Sum numbers over all processes (identity for one process)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch_command(nproc: int, module: str, args: list[str]) -> list[str]:
    """The command that runs `python -m module args` in `nproc` processes on this machine via torchrun.

    The `--` keeps torchrun from reading the module's flags as abbreviations of its own (e.g. --log).
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module, "--", *args]


@dataclass
class LaunchResult:
    """How a torchrun launch ended: its exit code, the workers' distinct `error: ...` lines, whether
    Ctrl-C was pressed, and the rest of what went to stderr (torchrun's own reports)."""

    code: int
    errors: list[str]
    interrupted: bool
    other: list[str]


def run_launcher(command: list[str]) -> LaunchResult:
    """Run a torchrun command with stdout passed through and stderr read here.

    The workers print a bad-input error once each; it is kept once. torchrun's own banner, logs and
    failure report stay out of the user's way. Ctrl-C reaches the workers (they save a checkpoint and
    stop); here it is only noted.
    """
    interrupted = [False]

    def note_ctrl_c(signum, frame):
        interrupted[0] = True

    previous = signal.signal(signal.SIGINT, note_ctrl_c)
    errors: list[str] = []
    other: list[str] = []
    try:
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace") as launcher:
            for line in launcher.stderr:
                line = line.rstrip("\n")
                if line.startswith("error: "):
                    if line not in errors:
                        errors.append(line)
                elif line.strip():
                    other.append(line)
            code = launcher.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return LaunchResult(code, errors, interrupted[0], other)
