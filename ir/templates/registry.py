"""Template and block tables: each entry declared once with its options and a builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ir.errors import DesignError
from ir.graph import Graph, verify
from ir.templates.builder import Builder


@dataclass(frozen=True)
class Template:
    """A whole network. `build(input_shape, num_classes, width)` returns a verified Graph."""

    name: str
    description: str
    builder: Callable[..., Graph]
    input_shape: tuple[int, ...]
    num_classes: int
    has_width: bool = False
    reference: str = ""  # where the published numbers come from

    def build(self, input_shape=None, num_classes=None, width=None) -> Graph:
        shape = tuple(input_shape) if input_shape else self.input_shape
        classes = num_classes if num_classes is not None else self.num_classes
        if width is not None and not self.has_width:
            raise DesignError(f"template '{self.name}' has no width multiplier", "--width")
        if classes < 1:
            raise DesignError(f"number of classes must be positive, got {classes}", "--classes")
        kwargs = {"width": width} if width is not None else {}
        graph = self.builder(shape, classes, **kwargs)
        verify(graph)
        return graph


@dataclass(frozen=True)
class Block:
    """A reusable piece. `build(b, x, channels, **options)` adds nodes after value `x` and returns the output ref."""

    name: str
    description: str
    builder: Callable[..., str]
    options: dict  # option name -> default


TEMPLATES: dict[str, Template] = {}
BLOCKS: dict[str, Block] = {}


def template(name: str, description: str, input_shape, num_classes: int, has_width: bool = False, reference: str = ""):
    def deco(fn):
        TEMPLATES[name] = Template(name, description, fn, tuple(input_shape), num_classes, has_width, reference)
        return fn

    return deco


def block(name: str, description: str, **options):
    def deco(fn):
        BLOCKS[name] = Block(name, description, fn, options)
        return fn

    return deco


def build_template(name: str, input_shape=None, num_classes=None, width=None) -> Graph:
    if name not in TEMPLATES:
        raise DesignError(f"unknown template '{name}' (see `convstudio templates`)", "template")
    return TEMPLATES[name].build(input_shape, num_classes, width)


def insert_block(graph: Graph, name: str, after: str, prefix: str | None = None, **options) -> tuple[str, list[str]]:
    """Add block `name` consuming value `after`; returns (output ref, names of the new nodes)."""
    if name not in BLOCKS:
        raise DesignError(f"unknown block '{name}'", "block")
    blk = BLOCKS[name]
    unknown = set(options) - set(blk.options)
    if unknown:
        raise DesignError(f"block '{name}' has no option {', '.join(sorted(unknown))}", "block options")
    before = set(graph.nodes)
    b = Builder(graph)
    with b.scope(prefix or name):
        out = blk.builder(b, after, **{**blk.options, **options})
    return out, [n for n in graph.nodes if n not in before]
