"""`convstudio codegen FILE -o model.py`: write the design as a standalone, readable PyTorch file."""

from __future__ import annotations

import os
from pathlib import Path

from convstudio.designer.cli.common import (
    add_memory_argument,
    add_weights_argument,
    apply_input_shapes,
    check_design_memory,
    load_design,
    load_weights_for,
    print_json,
)
from convstudio.ir.design import write_atomic

VERB = "codegen"
HELP = "write a standalone PyTorch file (one nn.Module class, imports only torch) for a design"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.py", help="Python file to write")
    add_weights_argument(parser)
    parser.add_argument("--class-name", metavar="NAME", help="name of the generated class (default: from the design's name)")
    parser.add_argument("--input", action="append", metavar="[NAME=]SHAPE", help="override an input shape, e.g. 1x3x160x160")
    add_memory_argument(parser)
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def run(args) -> int:
    from convstudio.backends.torch.codegen import generate
    from convstudio.backends.torch.lower import class_name_for

    design = load_design(args.file)
    batch = apply_input_shapes(design.graph, args.input)
    check_design_memory(design, batch, args.max_memory)  # before the weights are read
    weights = weights_seen_from(load_weights_for(design, args), args.output)  # the generated class must fit the weights
    class_name = args.class_name or class_name_for(design.name)
    source = generate(design.graph, class_name, weights)
    write_atomic(args.output, source)
    summary = {"output": args.output, "class_name": class_name, "lines": source.count("\n"), "weights": weights}
    if args.json:
        print_json(summary)
        return 0
    print(f"wrote {args.output}: class {class_name} ({summary['lines']} lines)")
    if weights:
        print(f"load the weights with model.load_state_dict(safetensors.torch.load_file('{weights}'))")
    return 0


def weights_seen_from(path: Path | None, output: str) -> str | None:
    """The weights file as a path relative to the generated file's folder."""
    if path is None:
        return None
    return os.path.relpath(path.resolve(), Path(output).resolve().parent).replace(os.sep, "/")
