"""Templates (whole networks) and blocks (insertable pieces)."""

from ir.templates import blocks, classic, lenet  # noqa: F401  (registration)
from ir.templates.builder import Builder
from ir.templates.registry import BLOCKS, TEMPLATES, Block, Template, build_template, insert_block

__all__ = ["Builder", "BLOCKS", "TEMPLATES", "Block", "Template", "build_template", "insert_block"]
