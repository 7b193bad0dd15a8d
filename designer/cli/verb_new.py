"""`convstudio new TEMPLATE -o FILE`: build a template and save it as a design file."""

from __future__ import annotations

from pathlib import Path

from convstudio.backends.weights import save_design_and_weights
from convstudio.designer.cli.common import format_shape, named_shapes, parse_shape
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.shapes import infer_shapes
from convstudio.ir.templates import TEMPLATES, build_template

VERB = "new"
HELP = "create a design file from a template"


def add_arguments(parser) -> None:
    parser.add_argument("template", help="template name (see `convstudio templates`)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="design file to write")
    parser.add_argument("--input", metavar="SHAPE", help="input shape, e.g. 1x3x224x224 (batch first) or 3x224x224")
    parser.add_argument("--classes", type=int, metavar="N", help="number of output classes")
    parser.add_argument("--width", type=float, metavar="X", help="width multiplier, for templates that have one")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file (and remove the weights beside it)")


def template_input_shape(name: str, text: str | None) -> list[int] | None:
    """The per-sample input shape from `--input`, dropping a leading batch dimension."""
    if text is None:
        return None
    dims = parse_shape(text)
    if name not in TEMPLATES:
        return dims
    rank = len(TEMPLATES[name].input_shape)
    if len(dims) == rank + 1:
        return dims[1:]
    if len(dims) != rank:
        default = format_shape(TEMPLATES[name].input_shape)
        raise DesignError(f"template '{name}' takes a {rank + 1}-d input (Nx{default}), got '{text}'", "--input")
    return dims


def run(args) -> int:
    path = Path(args.output)
    if path.is_dir():
        raise DesignError("is a folder, not a design file", f"file '{path}'")
    if path.exists() and not args.force:
        raise DesignError("file exists (use --force to overwrite)", f"file '{path}'")
    stale = path.with_suffix(".safetensors")
    if stale.exists() and not args.force:
        raise DesignError(f"weights '{stale.name}' beside it would pair with the new design (use --force to replace both)", f"file '{path}'")
    if args.width is not None and not args.width > 0:
        raise DesignError(f"width multiplier must be positive, got {args.width}", "--width")
    shape = template_input_shape(args.template, args.input)
    graph = build_template(args.template, shape, args.classes, args.width)
    infer_shapes(graph, strict=True)
    save_design_and_weights(Design(graph), path)  # without weights: old weights beside `path` go, so none pair with the new design

    def shapes(names: list[str]) -> str:
        return named_shapes({name: ["N", *graph.nodes[name].meta["shapes"][0]] for name in names})

    print(f"wrote {path}: {args.template}, {graph.layer_count()} layers, inputs {shapes(graph.inputs)}, outputs {shapes(graph.outputs)}")
    return 0
