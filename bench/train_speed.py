"""Training-step and eval-forward time: the lowered resnet18 template against a hand-written nn.Module.

Both modules hold the same weights (checked: equal outputs). Steps of the two are interleaved in one
run (the order alternates every repetition). The table reports the median and the fastest time of
each and both ratios lowered / hand-written (target: at most 1.05); the fastest times are the ones
least disturbed by other jobs on the machine.

    python bench/train_speed.py [--size 64] [--batch 8] [--reps 30] [--threads N] [--device cpu|cuda]

On a machine shared with other jobs, `--threads 1` keeps the two modules from competing for cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from convstudio.backends.torch import lower
from convstudio.ir.templates import build_template


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18, written out by hand."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def copy_weights(lowered: nn.Module, hand: nn.Module) -> None:
    """Hand-written module path 'layer1.0.conv1' holds what node 'layer1_0_conv1' holds."""
    source = lowered.state_dict()
    target = hand.state_dict()
    with torch.no_grad():
        for key, tensor in target.items():
            path, _, param = key.rpartition(".")
            node_key = f"{path.replace('.', '_')}.{param}"
            if node_key in source:
                tensor.copy_(source[node_key])
            elif param != "num_batches_tracked":
                raise KeyError(f"no tensor for {key} ({node_key}) in the lowered module")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def eval_forward(model: nn.Module, x: torch.Tensor):
    def forward():
        with torch.no_grad():
            model(x)

    return forward


def interleaved(a, b, reps: int, warmup: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Seconds of each repetition of a and b, run alternately (a-b, b-a, ...)."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for r in range(reps):
        if r % 2 == 0:
            ta.append(timed(a, device))
            tb.append(timed(b, device))
        else:
            tb.append(timed(b, device))
            ta.append(timed(a, device))
    return ta, tb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    lowered = lower(build_template("resnet18", (3, args.size, args.size), args.classes), seed=0).to(device)
    hand = ResNet18(args.classes).to(device)
    copy_weights(lowered, hand)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    lowered.eval()
    hand.eval()
    with torch.no_grad():
        diff = (lowered(x) - hand(x)).abs().max().item()

    rows = []
    lowered_eval, hand_eval = interleaved(eval_forward(lowered, x), eval_forward(hand, x), args.reps, args.warmup, device)
    rows.append(("eval forward", lowered_eval, hand_eval))
    lowered.train()
    hand.train()
    opt_lowered = torch.optim.SGD(lowered.parameters(), lr=0.01, momentum=0.9)
    opt_hand = torch.optim.SGD(hand.parameters(), lr=0.01, momentum=0.9)
    lowered_step, hand_step = interleaved(train_step(lowered, opt_lowered, x, y), train_step(hand, opt_hand, x, y),
                                          args.reps, args.warmup, device)
    rows.append(("training step", lowered_step, hand_step))

    print(f"resnet18 at {args.batch}x3x{args.size}x{args.size}, {args.classes} classes, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} interleaved repetitions")
    print(f"same weights: max |lowered - hand-written| of eval outputs = {diff:.2e}")
    print(f"{'':15}{'statistic':>10}{'lowered (ms)':>14}{'hand-written (ms)':>19}{'ratio':>8}")
    for name, t_lowered, t_hand in rows:
        for statistic, fn in (("median", statistics.median), ("fastest", min)):
            ratio = fn(t_lowered) / fn(t_hand)
            verdict = "ok" if ratio <= 1.05 else "above 1.05"
            print(f"{name:15}{statistic:>10}{1e3 * fn(t_lowered):14.2f}{1e3 * fn(t_hand):19.2f}{ratio:8.3f}  {verdict}")


if __name__ == "__main__":
    main()
