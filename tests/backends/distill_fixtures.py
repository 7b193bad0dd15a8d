"""A tiny trained convolutional teacher on a slice of sklearn digits, shared by the distillation, quantization and explore tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convstudio.ir.design import Design, save
from convstudio.ir.templates import Builder

TRAINING = {"epochs": 6, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "val_split": 0.25, "seed": 0}


def digits_npz(folder: Path, count: int = 240) -> Path:
    """The first `count` digits as an .npz (x in [0, 1], 1x8x8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / "digits_small.npz"
    np.savez(path, x=(digits.images[:count] / 16.0).astype(np.float32)[:, None], y=digits.target[:count])
    return path


def conv_design(folder: Path, name: str = "teacher", width: int = 8, outputs: int = 10) -> Path:
    """conv-BN-ReLU twice, 2x2 max pool, linear classifier."""
    b = Builder(name)
    x = b.input("x", (1, 8, 8))
    for i in (1, 2):
        x = b.op("Conv2d", x, f"conv{i}", out_channels=width, kernel_size=3, padding=1)
        x = b.op("BatchNorm2d", x, f"bn{i}")
        x = b.op("ReLU", x, f"relu{i}")
    x = b.op("Flatten", b.op("MaxPool2d", x, "pool", kernel_size=2), "flatten")
    b.output(b.op("Linear", x, "fc", out_features=outputs), "logits")
    path = folder / f"{name}.json"
    save(Design(b.graph, dict(TRAINING)), path)
    return path


def trained_teacher(folder: Path) -> tuple[Path, Path]:
    """(teacher design with its weights beside it, data .npz)."""
    from convstudio.backends.torch.train import RunOptions, fit
    from convstudio.ir.design import load

    data = digits_npz(folder)
    path = conv_design(folder)
    fit(load(path), {"dataset": str(data)}, options=RunOptions(device="cpu"))
    return path, data
