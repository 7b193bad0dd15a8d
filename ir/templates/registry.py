"""Template and block tables: each entry declared once with its options and a builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, verify
from convstudio.ir.shapes import infer_one, infer_shapes
from convstudio.ir.templates.builder import Builder
from convstudio.ir.templates.probe import value_channels


@dataclass(frozen=True)
class Template:
    """A whole network. `build(input_shape, num_classes, width)` returns a verified, shape-checked Graph."""

    name: str
    description: str
    builder: Callable[..., Graph]
    input_shape: tuple[int, ...]
    num_classes: int
    has_width: bool = False
    reference: str = ""  # where the published numbers come from
    min_side: int = 1  # the smallest spatial side the network accepts

    def small_input(self, side: int) -> tuple[int, ...]:
        """The default input with each spatial side capped at `side`, but never below `min_side`."""
        channels, *spatial = self.input_shape
        return (channels, *(min(s, max(side, self.min_side)) for s in spatial))

    def build(self, input_shape=None, num_classes=None, width=None) -> Graph:
        shape = tuple(input_shape) if input_shape else self.input_shape
        classes = num_classes if num_classes is not None else self.num_classes
        if width is not None and not self.has_width:
            raise DesignError(f"template '{self.name}' has no width multiplier", "--width")
        if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 16):
            raise DesignError(f"width multiplier must be a number in (0, 16], got {width!r}", "--width")
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise DesignError(f"number of classes must be a positive integer, got {classes!r}", "--classes")
        spatial = shape[1:]
        if len(shape) == len(self.input_shape) and all(isinstance(s, int) for s in spatial) and min(spatial, default=self.min_side) < self.min_side:
            got = "x".join(map(str, shape))
            raise DesignError(f"template '{self.name}' needs a spatial size of at least {self.min_side}, got input {got}", "--input")
        kwargs = {"width": width} if width is not None else {}
        graph = self.builder(shape, classes, **kwargs)
        verify(graph)
        infer_shapes(graph)
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


def template(name: str, description: str, input_shape, num_classes: int, has_width: bool = False, reference: str = "", min_side: int = 1):
    def deco(fn):
        TEMPLATES[name] = Template(name, description, fn, tuple(input_shape), num_classes, has_width, reference, min_side)
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
    """Add block `name` consuming value `after`; returns (output ref, names of the new nodes).

    Existing consumers of `after` are left as they are. New node names start with `prefix` (default: the
    block name, numbered when taken). On bad options or shapes nothing is added and a DesignError is raised.
    """
    if name not in BLOCKS:
        raise DesignError(f"unknown block '{name}'", "block")
    blk = BLOCKS[name]
    unknown = set(options) - set(blk.options)
    if unknown:
        raise DesignError(f"block '{name}' has no option {', '.join(sorted(unknown))}", "block options")
    channels = value_channels(graph, after)
    before = set(graph.nodes)
    b = Builder(graph)
    try:
        with b.scope(_fresh_prefix(graph, prefix or name)):
            out = blk.builder(b, after, channels, **{**blk.options, **options})
        added = [n for n in graph.nodes if n not in before]
        _check_shapes(graph, added)
    except DesignError:
        for n in reversed([n for n in graph.nodes if n not in before]):
            graph.erase(n)
        raise
    return out, added


def _fresh_prefix(graph: Graph, prefix: str) -> str:
    """`prefix`, or `prefix_k` when nodes named `prefix_...` already exist."""
    candidate, k = prefix, 1
    while any(n == candidate or n.startswith(candidate + "_") for n in graph.nodes):
        candidate, k = f"{prefix}_{k}", k + 1
    return candidate


def _check_shapes(graph: Graph, added: list[str]) -> None:
    """Infer the new nodes' shapes into their meta, raising the first error (the others' shapes come from meta)."""
    shapes = {n: node.meta.get("shapes") for n, node in graph.nodes.items() if n not in added}
    for n in added:
        result, error = infer_one(graph, graph.nodes[n], shapes)
        if error is not None:
            raise error
        shapes[n] = result
        graph.nodes[n].meta.update(shapes=result, error=None)
