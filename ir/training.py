"""The design's `training` section: schema, defaults and validation (no torch here)."""

from __future__ import annotations

import math
from typing import Any

from convstudio.ir.errors import DesignError

LOSSES = ("cross_entropy", "bce", "l1", "mse", "smooth_l1", "triplet")
OPTIMIZERS = ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw")
SCHEDULERS = ("none", "step", "exponential", "plateau", "cyclic", "cosine")

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
    "optimizer": {"name": "adam", "lr": 1e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "l1": 0.0,
    "scheduler": {"name": "none"},
    "epochs": 10,
    "batch_size": 32,
    "val_split": 0.2,
    "seed": 0,
    "triplet_margin": 1.0,
}


def _number(value: Any, path: str, lo: float | None = None, hi: float | None = None, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise DesignError(f"must be {'an integer' if integer else 'a number'}, got {value!r}", path)
    if lo is not None and value < lo:
        raise DesignError(f"must be >= {lo}, got {value}", path)
    if hi is not None and value > hi:
        raise DesignError(f"must be <= {hi}, got {value}", path)


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
                _number(value, p, lo=0.0)
            else:
                raise DesignError(f"unknown optimizer field '{key}'", p)
    if "scheduler" in section:
        sched = section["scheduler"]
        if not isinstance(sched, dict) or sched.get("name", "none") not in SCHEDULERS:
            raise DesignError(f"must be an object whose name is one of {', '.join(SCHEDULERS)}", f"{where}.scheduler")
        allowed = SCHEDULER_PARAMS[sched.get("name", "none")]
        for key, value in sched.items():
            if key == "name":
                continue
            if key not in allowed:
                raise DesignError(f"scheduler '{sched.get('name')}' has no parameter '{key}'", f"{where}.scheduler.{key}")
            _number(value, f"{where}.scheduler.{key}", lo=0.0)
    if "l1" in section:
        _number(section["l1"], f"{where}.l1", lo=0.0)
    if "epochs" in section:
        _number(section["epochs"], f"{where}.epochs", lo=1, integer=True)
    if "batch_size" in section and section["batch_size"] != "full":
        _number(section["batch_size"], f"{where}.batch_size", lo=1, integer=True)
    if "val_split" in section:
        _number(section["val_split"], f"{where}.val_split", lo=0.0, hi=0.9)
    if "seed" in section:
        _number(section["seed"], f"{where}.seed", lo=0, integer=True)
    if "triplet_margin" in section:
        _number(section["triplet_margin"], f"{where}.triplet_margin", lo=0.0)
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
