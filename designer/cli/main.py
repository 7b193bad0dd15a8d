"""`convstudio VERB ...`: each verb lives in its own module in this package (see `verbs()`)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ir.errors import DesignError

import designer.cli as cli_package


def verbs() -> dict:
    """Modules of this package that define VERB, HELP, add_arguments(parser) and run(args) -> int."""
    found = {}
    for info in pkgutil.iter_modules(cli_package.__path__):
        if not info.name.startswith("verb_"):
            continue
        module = importlib.import_module(f"designer.cli.{info.name}")
        found[module.VERB] = module
    return dict(sorted(found.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convstudio",
        description="Design, analyse, compress, train and export convolutional networks.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in verbs().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except DesignError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
