"""`convstudio strategies`: the compression strategies, one line each, with their parameters and whether they keep the trained weights."""

from __future__ import annotations

from convstudio.designer.cli.common import print_json
from convstudio.ir.passes.compress import STRATEGIES

VERB = "strategies"
HELP = "list the compression strategies and their parameters"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args) -> int:
    if args.json:
        print_json([{"name": s.name, "summary": s.summary, "params": dict(s.params), "keeps_weights": s.keeps_weights} for s in STRATEGIES.values()])
        return 0
    width = max(len(name) for name in STRATEGIES)
    for s in STRATEGIES.values():
        params = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in s.params.items())
        keeps = "keeps weights" if s.keeps_weights else "fresh weights"
        print(f"{s.name:<{width}}  {keeps:<13}  {s.summary}" + (f"  [{params}]" if params else ""))
    return 0
