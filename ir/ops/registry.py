"""The op registry: each op is declared once with its attributes, arity, parameters, shapes and cost.

Shapes handled here are per-sample (no batch dimension). Cost functions return per-sample counts;
the cost pass multiplies by the batch size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError

Shape = tuple[int, ...]
REQUIRED = object()
MAX_NUMEL = 2**40  # elements; larger tensors, parameters or attribute values are rejected as absurd
MEMO_SIZE = 4096  # distinct attribute sets an op remembers as validated before it starts over

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
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMEL:
                raise AttrError(f"{self.name} is absurdly large ({approx(value)})", fieldname)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise AttrError(f"{self.name} must be a number, got {shown(value)}", fieldname)
            self._range(value, fieldname)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise AttrError(f"{self.name} must be true or false, got {shown(value)}", fieldname)
            return value
        if kind == "choice":
            if value not in self.choices:
                raise AttrError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {shown(value)}", fieldname)
            return value
        if kind == "padding" and isinstance(value, str):
            if value not in ("same", "valid"):
                raise AttrError(f"{self.name} must be an integer, a pair, 'same' or 'valid', got {shown(value)}", fieldname)
            return value
        if kind in ("pair", "padding"):
            if isinstance(value, (list, tuple)):
                if len(value) != 2 and not (kind == "padding" and len(value) == 4):
                    four = ", or [top, left, bottom, right]" if kind == "padding" else ""
                    raise AttrError(f"{self.name} must be an integer or a pair{four}, got {shown(list(value))}", fieldname)
                for v in value:
                    self._int(v, fieldname)
                    self._range(v, fieldname)
                return list(value)
            self._int(value, fieldname)
            self._range(value, fieldname)
            return value
        if kind == "ints":
            if not isinstance(value, (list, tuple)):
                raise AttrError(f"{self.name} must be a list of integers, got {shown(value)}", fieldname)
            for v in value:
                self._int(v, fieldname)
                self._range(v, fieldname)
            return list(value)
        if kind == "scale":
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(values) not in (1, 2):
                raise AttrError(f"{self.name} must be a number or a pair, got {shown(value)}", fieldname)
            for v in values:
                if isinstance(v, int) and not isinstance(v, bool) and v > MAX_NUMEL:
                    raise AttrError(f"{self.name} is absurdly large ({approx(v)})", fieldname)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise AttrError(f"{self.name} must be positive numbers, got {shown(value)}", fieldname)
                if v > MAX_NUMEL:
                    raise AttrError(f"{self.name} is absurdly large ({v:.3g})", fieldname)
            return list(value) if isinstance(value, (list, tuple)) else value
        if kind == "str":
            if not isinstance(value, str):
                raise AttrError(f"{self.name} must be a string, got {shown(value)}", fieldname)
            return value
        if kind == "json":
            try:
                return json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError):
                raise AttrError(f"{self.name} must be plain JSON data, got {shown(value)}", fieldname) from None
        raise AssertionError(f"unknown attribute kind {kind}")

    def _int(self, value: Any, fieldname: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AttrError(f"{self.name} must be an integer, got {shown(value)}", fieldname)
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

    @cached_property
    def _known(self) -> dict[str, Attr]:
        return {a.name: a for a in self.attrs}

    @cached_property
    def _required(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attrs if a.required)

    @cached_property
    def _defaults(self) -> dict:
        """The resolved attributes of a node that sets none."""
        return {a.name: a.normalize(None if a.required else a.default) for a in self.attrs}

    @cached_property
    def _checked(self) -> dict[tuple, tuple[dict, dict, bool]]:
        """Attributes already validated for this op: memo key -> (JSON form, resolved, whether the JSON form holds lists)."""
        return {}

    def checked(self, attrs: dict, name: str) -> tuple[dict, dict, bool]:
        """`validate_resolved` for node `name`, remembering attribute sets that passed: designs repeat a few layer
        configurations, so most nodes of a large graph are checked once per distinct set. Returns (JSON form, resolved,
        whether the JSON form holds lists) as remembered: shared by every node of that set, never to be modified."""
        if type(attrs) is not dict:
            key = None
        elif not attrs:
            key = _NO_ATTRS
        else:  # `_memo_key`'s common case inline: this runs once per node of a large graph
            kinds = tuple(map(type, attrs.values()))
            key = (tuple(attrs.items()), kinds) if PLAIN_KINDS.issuperset(kinds) else _memo_key(attrs)
        found = self._checked.get(key) if key is not None else None
        if found is None:
            out, resolved = self.validate_resolved(attrs, f"node '{name}'")
            found = (out, resolved, any(type(v) is list for v in out.values()))
            if key is not None:
                if len(self._checked) >= MEMO_SIZE:
                    self._checked.clear()
                self._checked[key] = found
        return found

    def validate_node(self, attrs: dict, name: str) -> tuple[dict, dict]:
        """`checked`, as fresh dicts: the JSON form and the resolved attributes."""
        out, resolved, lists = self.checked(attrs, name)
        return own_attrs(out, lists), dict(resolved)

    def validate(self, attrs: dict, where: str = "") -> dict:
        """Check explicit attributes against the schema; returns them in JSON form."""
        return self.validate_resolved(attrs, where)[0]

    def validate_resolved(self, attrs: dict, where: str = "") -> tuple[dict, dict]:
        """`validate`, also returning the resolved attributes it checked."""
        if not isinstance(attrs, dict):
            raise AttrError(f"attrs must be an object, got {type(attrs).__name__}", f"{where} attrs")
        known = self._known
        out = {}
        for key, value in attrs.items():
            if key not in known:
                hint = f" (known: {', '.join(known)})" if known else " (it takes none)"
                raise AttrError(f"{self.name} has no attribute '{key}'{hint}", f"{where} attrs.{key}")
            out[key] = known[key].check(value, where)
        for required in self._required:
            if required not in out:
                raise AttrError(f"{self.name} needs attribute '{required}'", f"{where} attrs.{required}")
        resolved = self.resolve(out)
        try:
            self.check(resolved)
        except DesignError as e:
            raise e.at(where) from None
        return out, resolved

    def resolve(self, attrs: dict) -> dict:
        """All attributes with defaults and normalized values."""
        out = dict(self._defaults)
        known = self._known
        for key, value in attrs.items():
            if key in known:
                out[key] = known[key].normalize(value)
        return out


PLAIN_KINDS = frozenset((int, bool, str, type(None)))
_NO_ATTRS = ((), ())  # `_memo_key({})`, the key of most nodes (BatchNorm, ReLU, Add, ...)


def own_attrs(out: dict, lists: bool) -> dict:
    """A node's own copy of the attributes `out` in JSON form (`lists`: whether some are lists, which are copied too)."""
    return {k: list(v) if type(v) is list else v for k, v in out.items()} if lists else dict(out)


def _memo_key(attrs: dict) -> tuple | None:
    """A hashable key telling apart every attribute set that validates differently, or None for one with other values.

    Types are part of the key (1, 1.0 and True are equal in Python but not as attributes), floats go by their exact
    bits (-0.0 is not 0.0), and lists keep their element types.
    """
    kinds = tuple(map(type, attrs.values()))
    if PLAIN_KINDS.issuperset(kinds):  # the common case, built in C
        return tuple(attrs.items()), kinds
    key = []
    for name, value in attrs.items():
        kind = type(value)
        if kind is int or kind is bool or kind is str or value is None:
            key.append((name, kind, value))
        elif kind is float:
            key.append((name, kind, value.hex()))
        elif kind is list or kind is tuple:
            if not all(type(v) is int for v in value):
                return None
            key.append((name, kind, tuple(value)))
        else:
            return None
    return tuple(key)


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


def find(name: str) -> OpDef | None:
    """The op called `name`, or None."""
    return _REGISTRY.get(name) if type(name) is str else None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# ---- helpers shared by op declarations -----------------------------------------------------------


def numel(shape: Shape) -> int:
    return math.prod(shape)


def approx(n: int) -> str:
    """A huge integer in short scientific form (exact for small ones); never overflows a float, and
    never converts more digits than Python allows (its int max str digits limit)."""
    size = abs(n)
    if size < 10**15:
        return f"{n:,}"
    exponent = int(math.log10(size))  # a big int's log10 is off by at most one
    while 10**exponent > size:
        exponent -= 1
    while 10 ** (exponent + 1) <= size:
        exponent += 1
    lead = size // 10 ** (exponent - 2)
    return f"{'-' if n < 0 else ''}{lead // 100}.{lead % 100:02d}e+{exponent}"


def shown(value: Any, limit: int = 80) -> str:
    """`value` as an error message shows it: short, and never failing on an integer too long to print."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return approx(value)
    try:
        text = repr(value)
    except ValueError:  # a container holding an integer past Python's digit limit
        text = f"<{type(value).__name__} holding a number too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked(shapes: list[Shape], field: str = "output") -> list[Shape]:
    """Reject empty or absurdly large outputs; `field` names what the error points at."""
    for s in shapes:
        if s and min(s) <= 0:
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
    return "·".join(map(str, factors))
