"""Op vocabulary. Importing this package registers every op; `registry` is the table."""

from convstudio.ir.ops import activation, conv, norm, opaque, pool, registry, structure  # noqa: F401  (registration)
from convstudio.ir.ops.registry import CATEGORIES, Attr, OpCost, OpDef, all_ops, get

__all__ = ["registry", "CATEGORIES", "Attr", "OpCost", "OpDef", "all_ops", "get"]
