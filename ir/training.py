"""The design's `training` section: schema, defaults and validation (no torch here)."""

from __future__ import annotations

import math
from typing import Any

from convstudio.ir.errors import DesignError
from convstudio.ir.ops.registry import approx

LOSSES = ("cross_entropy", "bce", "l1", "mse", "smooth_l1", "triplet")
OPTIMIZERS = ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw")
SCHEDULERS = ("none", "step", "exponential", "plateau", "cyclic", "cosine")

LR_MAX = 100.0  # a larger learning rate only diverges (and above ~3e38 it no longer fits in float32)

# number field -> (lowest, highest, lowest excluded, highest excluded, whole number); torch's defaults are followed
RANGES: dict[str, tuple[float, float, bool, bool, bool]] = {
    "lr": (0.0, LR_MAX, True, False, False),
    "momentum": (0.0, 1.0, False, True, False),
    "weight_decay": (0.0, 1.0, False, False, False),
    "l1": (0.0, 1.0, False, False, False),
    "triplet_margin": (0.0, 1e6, False, False, False),
    "epochs": (1, 10**6, False, False, True),
    "batch_size": (1, 10**9, False, False, True),
    "val_split": (0.0, 0.9, False, False, False),
    "seed": (0, 2**31 - 1, False, False, True),
    "step_size": (1, 10**9, False, False, True),
    "gamma": (0.0, 10.0, True, False, False),
    "factor": (0.0, 1.0, True, True, False),
    "patience": (0, 10**9, False, False, True),
    "base_lr": (0.0, LR_MAX, True, False, False),
    "max_lr": (0.0, LR_MAX, True, False, False),
    "step_size_up": (1, 10**9, False, False, True),
    "t_max": (0, 10**9, False, False, True),
}

# scheduler name -> its numeric parameters and defaults
SCHEDULER_PARAMS: dict[str, dict[str, float]] = {
    "none": {},
    "step": {"step_size": 10, "gamma": 0.1},
    "exponential": {"gamma": 0.95},
    "plateau": {"factor": 0.1, "patience": 2},
    "cyclic": {"base_lr": 1e-4, "max_lr": 1e-2, "step_size_up": 100},
    "cosine": {"t_max": 0},
}

DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 1e-3, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "l1": 0.0,
    "scheduler": {"name": "none"},
    "epochs": 10,
    "batch_size": 32,
    "val_split": 0.2,
    "seed": 0,
    "triplet_margin": 1.0,
}


def _shown(value: float) -> str:
    return approx(value) if isinstance(value, int) else f"{value:g}"


def _in_range(value: Any, field: str, path: str) -> None:
    """A number field of RANGES: the right type, finite, and inside its range."""
    lo, hi, lo_open, hi_open, integer = RANGES[field]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):  # ints are finite (and may not fit a float)
        raise DesignError(f"must be {'an integer' if integer else 'a finite number'}, got {value!r}", path)
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        low, high = "(" if lo_open else "[", ")" if hi_open else "]"
        raise DesignError(f"must be in {low}{_shown(lo)}, {_shown(hi)}{high}, got {_shown(value)}", path)


def validate_training(section: Any, where: str = "training") -> dict:
    """Check a training section; returns it unchanged (defaults are applied by `training_config`)."""
    if not isinstance(section, dict):
        raise DesignError(f"must be an object, got {type(section).__name__}", where)
    known = set(DEFAULTS)
    for key in section:
        if key not in known:
            raise DesignError(f"unknown training field '{key}' (known: {', '.join(sorted(known))})", f"{where}.{key}")
    if "dataset" in section and not isinstance(section["dataset"], str):
        raise DesignError("must be 'digits', a .npz file or an image folder", f"{where}.dataset")
    if "loss" in section and section["loss"] not in LOSSES:
        raise DesignError(f"must be one of {', '.join(LOSSES)}, got {section['loss']!r}", f"{where}.loss")
    if "optimizer" in section:
        opt = section["optimizer"]
        if not isinstance(opt, dict):
            raise DesignError("must be an object with a name", f"{where}.optimizer")
        for key, value in opt.items():
            p = f"{where}.optimizer.{key}"
            if key == "name":
                if value not in OPTIMIZERS:
                    raise DesignError(f"must be one of {', '.join(OPTIMIZERS)}, got {value!r}", p)
            elif key == "nesterov":
                if not isinstance(value, bool):
                    raise DesignError(f"must be true or false, got {value!r}", p)
            elif key in ("lr", "momentum", "weight_decay"):
                _in_range(value, key, p)
            else:
                raise DesignError(f"unknown optimizer field '{key}'", p)
    if "scheduler" in section:
        sched = section["scheduler"]
        if not isinstance(sched, dict) or sched.get("name", "none") not in SCHEDULERS:
            raise DesignError(f"must be an object whose name is one of {', '.join(SCHEDULERS)}", f"{where}.scheduler")
        name = sched.get("name", "none")
        for key, value in sched.items():
            if key == "name":
                continue
            if key not in SCHEDULER_PARAMS[name]:
                owners = [s for s, params in SCHEDULER_PARAMS.items() if key in params]
                hint = f" ({key} is a parameter of {', '.join(owners)})" if owners else ""
                raise DesignError(f"scheduler '{name}' has no parameter '{key}'{hint}", f"{where}.scheduler.{key}")
            _in_range(value, key, f"{where}.scheduler.{key}")
    for key in ("l1", "epochs", "batch_size", "val_split", "seed", "triplet_margin"):
        if key in section and not (key == "batch_size" and section[key] == "full"):
            _in_range(section[key], key, f"{where}.{key}")
    return section


def training_config(section: dict | None) -> dict:
    """The full training configuration: the section over the defaults (nested dicts merged)."""
    section = section or {}
    out = {}
    for key, default in DEFAULTS.items():
        value = section.get(key, default)
        if isinstance(default, dict):
            merged = dict(default)
            merged.update(value)
            if key == "scheduler":
                merged = {**SCHEDULER_PARAMS[merged["name"]], **merged}
            value = merged
        out[key] = value
    return out
