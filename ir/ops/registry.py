"""The op registry: each op is declared once with its attributes, arity, parameters, shapes and cost.

Shapes handled here are per-sample (no batch dimension). Cost functions return per-sample counts;
the cost pass multiplies by the batch size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError

Shape = tuple[int, ...]
REQUIRED = object()
MAX_NUMEL = 2**40  # elements; larger tensors, parameters or attribute values are rejected as absurd

ATTR_KINDS = ("int", "float", "bool", "choice", "pair", "padding", "ints", "scale", "float_or_none", "str", "json")


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind, default, and range or choices."""

    name: str
    kind: str
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    optional: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any, where: str) -> Any:
        """Validate `value`, returning its JSON form (lists, not tuples)."""
        if value is None and self.optional:
            return None
        fieldname = f"{where} attrs.{self.name}"
        kind = self.kind
        if kind == "int":
            self._int(value, fieldname)
            self._range(value, fieldname)
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise AttrError(f"{self.name} must be a number, got {value!r}", fieldname)
            self._range(value, fieldname)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise AttrError(f"{self.name} must be true or false, got {value!r}", fieldname)
            return value
        if kind == "choice":
            if value not in self.choices:
                raise AttrError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}", fieldname)
            return value
        if kind == "padding" and isinstance(value, str):
            if value not in ("same", "valid"):
                raise AttrError(f"{self.name} must be an integer, a pair, 'same' or 'valid', got {value!r}", fieldname)
            return value
        if kind in ("pair", "padding"):
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    raise AttrError(f"{self.name} must be an integer or a pair, got {list(value)!r}", fieldname)
                for v in value:
                    self._int(v, fieldname)
                    self._range(v, fieldname)
                return list(value)
            self._int(value, fieldname)
            self._range(value, fieldname)
            return value
        if kind == "ints":
            if not isinstance(value, (list, tuple)):
                raise AttrError(f"{self.name} must be a list of integers, got {value!r}", fieldname)
            for v in value:
                self._int(v, fieldname)
                self._range(v, fieldname)
            return list(value)
        if kind == "scale":
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(values) not in (1, 2):
                raise AttrError(f"{self.name} must be a number or a pair, got {value!r}", fieldname)
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise AttrError(f"{self.name} must be positive numbers, got {value!r}", fieldname)
                if v > MAX_NUMEL:
                    raise AttrError(f"{self.name} is absurdly large ({v:.3g})", fieldname)
            return list(value) if isinstance(value, (list, tuple)) else value
        if kind == "str":
            if not isinstance(value, str):
                raise AttrError(f"{self.name} must be a string, got {value!r}", fieldname)
            return value
        if kind == "json":
            try:
                return json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError):
                raise AttrError(f"{self.name} must be plain JSON data, got {value!r}", fieldname) from None
        raise AssertionError(f"unknown attribute kind {kind}")

    def _int(self, value: Any, fieldname: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AttrError(f"{self.name} must be an integer, got {value!r}", fieldname)
        if abs(value) > MAX_NUMEL:
            raise AttrError(f"{self.name} is absurdly large ({approx(value)})", fieldname)

    def _range(self, value: float, fieldname: str) -> None:
        if self.min is not None and value < self.min:
            raise AttrError(f"{self.name} must be >= {self.min}, got {value}", fieldname)
        if self.max is not None and value > self.max:
            raise AttrError(f"{self.name} must be <= {self.max}, got {value}", fieldname)

    def normalize(self, value: Any) -> Any:
        """Resolved form: pairs and scales as tuples."""
        if value is None:
            return None
        if self.kind in ("pair", "padding") and not isinstance(value, str):
            return tuple(value) if isinstance(value, (list, tuple)) else (value, value)
        if self.kind == "scale":
            return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value), float(value))
        if self.kind == "ints":
            return tuple(value)
        return value


@dataclass
class OpCost:
    """Per-sample cost terms of one node. `formulas` maps convention -> the formula that was used."""

    macs: int = 0
    flops: int = 0
    fvcore: int = 0
    formulas: dict[str, str] = field(default_factory=dict)


def _no_params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    return {}


def _one_output(a: dict) -> int:
    return 1


def _no_check(a: dict) -> None:
    return None


def _zero_cost(a: dict, ins: list[Shape], outs: list[Shape]) -> OpCost:
    text = "0 (data movement only)"
    return OpCost(0, 0, 0, {"macs": "0", "flops": text, "fvcore": text})


@dataclass(frozen=True)
class OpDef:
    """Everything about one op, side by side."""

    name: str
    category: str
    attrs: tuple[Attr, ...]
    arity: tuple[int, int | None]
    infer: Callable[[dict, list[Shape]], list[Shape]]
    cost: Callable[[dict, list[Shape], list[Shape]], OpCost] = _zero_cost
    params: Callable[[dict, list[Shape]], dict[str, Shape]] = _no_params
    buffers: Callable[[dict, list[Shape]], dict[str, Shape]] = _no_params
    num_outputs: Callable[[dict], int] = _one_output
    check: Callable[[dict], None] = _no_check
    alias: bool = False
    doc: str = ""

    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(name)

    def check_arity(self, count: int, where: str) -> None:
        """Raise a GraphError naming `where` when `count` inputs do not fit this op."""
        lo, hi = self.arity
        if lo <= count and (hi is None or count <= hi):
            return
        if lo == hi:
            expected = f"{lo} input" + ("" if lo == 1 else "s")
        else:
            expected = f"{lo} to {hi} inputs" if hi is not None else f"{lo} or more inputs"
        raise GraphError(f"{self.name} takes {expected}, has {count}", where)

    def validate(self, attrs: dict, where: str = "") -> dict:
        """Check explicit attributes against the schema; returns them in JSON form."""
        if not isinstance(attrs, dict):
            raise AttrError(f"attrs must be an object, got {type(attrs).__name__}", f"{where} attrs")
        known = {a.name: a for a in self.attrs}
        out = {}
        for key, value in attrs.items():
            if key not in known:
                hint = f" (known: {', '.join(known)})" if known else " (it takes none)"
                raise AttrError(f"{self.name} has no attribute '{key}'{hint}", f"{where} attrs.{key}")
            out[key] = known[key].check(value, where)
        for a in self.attrs:
            if a.required and a.name not in out:
                raise AttrError(f"{self.name} needs attribute '{a.name}'", f"{where} attrs.{a.name}")
        try:
            self.check(self.resolve(out))
        except DesignError as e:
            raise e.at(where) from None
        return out

    def resolve(self, attrs: dict) -> dict:
        """All attributes with defaults and normalized values."""
        out = {}
        for a in self.attrs:
            value = attrs.get(a.name, None if a.required else a.default)
            out[a.name] = a.normalize(value)
        return out


_REGISTRY: dict[str, OpDef] = {}
CATEGORIES: dict[str, set[str]] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    CATEGORIES.setdefault(opdef.category, set()).add(opdef.name)
    return opdef


def get(name: str, where: str = "") -> OpDef:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise AttrError(f"unknown op '{name}'", where or "op") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# ---- helpers shared by op declarations -----------------------------------------------------------


def numel(shape: Shape) -> int:
    return math.prod(shape)


def approx(n: int) -> str:
    """A huge integer in short scientific form (exact for small ones); never overflows a float."""
    digits = str(abs(n))
    if len(digits) <= 15:
        return f"{n:,}"
    return f"{'-' if n < 0 else ''}{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def checked(shapes: list[Shape], field: str = "output") -> list[Shape]:
    """Reject empty or absurdly large outputs; `field` names what the error points at."""
    for s in shapes:
        if any(d <= 0 for d in s):
            raise ShapeError(f"output shape {list(s)} has an empty dimension", field)
        if numel(s) > MAX_NUMEL:
            raise ShapeError(f"output shape {list(s)} is absurdly large ({approx(numel(s))} elements)", field)
    return shapes


def check_param_sizes(params: dict[str, Shape]) -> None:
    """Reject parameters too large to allocate (e.g. a Linear with 10^12 outputs)."""
    for name, shape in params.items():
        if numel(shape) > MAX_NUMEL:
            raise ShapeError(f"parameter {name} {list(shape)} is absurdly large ({approx(numel(shape))} elements)", f"params.{name}")


def need_rank(shape: Shape, rank: int, what: str = "input") -> None:
    if len(shape) != rank:
        full = ["N", *shape]
        raise ShapeError(f"{what} must be {rank + 1}-d (N{'CHW'[-rank:] if rank <= 3 else ''}), got {full}", "inputs")


def fmt(*factors: int) -> str:
    return "·".join(str(f) for f in factors)
