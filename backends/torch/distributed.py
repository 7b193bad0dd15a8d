"""DistributedDataParallel plumbing: the process context torchrun sets up, and its launch command.

A process started by torchrun (`torch.distributed.run`) finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment; `context()` joins the process group (gloo on CPU, nccl on GPU). Rank 0 alone writes files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world` processes and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

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
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


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
