"""`convstudio validate FILE`: load a design, check every field and shape, and summarize it."""

from __future__ import annotations

from convstudio.backends.weights import load_design_weights
from convstudio.designer.cli.common import add_weights_argument, analyze_design, human, load_design, named_shapes, print_json
from convstudio.ir.graph import paused_gc

VERB = "validate"
HELP = "check a design file (fields, graph, shapes, weights) and summarize it"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="design file")
    add_weights_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def summary(design, weights_file: str | None = None) -> dict:
    """What a valid design holds: layer count (`nodes`, Input and Output not counted), input and output shapes, parameters,
    weights (`weights_file`, else its own)."""
    graph = design.graph
    report = analyze_design(design, memory=False, nodes=False)  # the summary shows no peak memory and no per-node costs
    weights = load_design_weights(design, weights_file)
    if weights is not None and design.path is not None and weights.parent == design.path.parent:
        weights = weights.name
    return {
        "valid": True,
        "name": graph.name,
        "nodes": graph.layer_count(),
        "inputs": {name: ["N", *shape] for name, shape in report.input_shapes.items()},
        "outputs": {name: ["N", *graph.nodes[name].meta["shapes"][0]] for name in graph.outputs},
        "params": report.total.params,
        "weights": None if weights is None else str(weights),
    }


@paused_gc()  # a short run that builds no reference cycles: the collector would only rescan the design's nodes
def run(args) -> int:
    data = summary(load_design(args.file), args.weights)
    if args.json:
        print_json(data)
        return 0
    ins, outs = named_shapes(data["inputs"]), named_shapes(data["outputs"])
    weights = f", weights {data['weights']} ok" if data["weights"] else ""
    print(f"{args.file}: valid design '{data['name']}': {data['nodes']} layers, inputs {ins}, outputs {outs}, "
          f"{data['params']:,} params ({human(data['params'])}){weights}")
    return 0
