"""Training on CUDA: lenet and resnet18 for a few steps each, step times on the GPU beside the CPU.

For a machine with a GPU. Each model is lowered from its template, trained for `--steps` SGD steps
on random batches on CUDA and on CPU (same weights, same data), and the median step time of each is
printed; then `convstudio train examples/lenet_digits.json --device cuda` runs one real epoch on
the digits. Without a usable GPU it prints one `error:` line and exits 2.

    python bench/train_cuda.py [--steps 20] [--batch 32]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from convstudio.backends.torch import lower
from convstudio.designer.cli.common import format_shape
from convstudio.designer.cli.main import main as convstudio
from convstudio.ir.templates import build_template

MODELS = {"lenet": (1, 8, 8), "resnet18": (3, 64, 64)}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lenet_digits.json"


def step_times(name: str, shape: tuple, device: str, steps: int, batch: int) -> list[float]:
    """Seconds per training step (forward, cross-entropy, backward, SGD update) on `device`."""
    module = lower(build_template(name, shape, 10), seed=0).to(device).train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    times = []
    for step in range(steps + 3):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 3:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model and device")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: CUDA is not available to torch on this machine, device cuda", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {args.batch}, {args.steps} timed steps")
    print(f"{'model':<10} {'input':<10} {'cuda ms/step':>13} {'cpu ms/step':>12} {'cpu/cuda':>9}")
    for name, shape in MODELS.items():
        gpu = statistics.median(step_times(name, shape, "cuda", args.steps, args.batch)) * 1e3
        cpu = statistics.median(step_times(name, shape, "cpu", max(3, args.steps // 4), args.batch)) * 1e3
        print(f"{name:<10} {format_shape(shape):<10} {gpu:>13.2f} {cpu:>12.2f} {cpu / gpu:>8.1f}x", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        design = Path(folder) / EXAMPLE.name
        shutil.copy(EXAMPLE, design)
        print("--- convstudio train examples/lenet_digits.json --device cuda --epochs 1", flush=True)
        return convstudio(["train", str(design), "--device", "cuda", "--epochs", "1", "--from-scratch"])


if __name__ == "__main__":
    sys.exit(main())
