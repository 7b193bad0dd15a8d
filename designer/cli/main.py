"""`convstudio VERB ...`: each verb lives in its own module in this package (see `verbs()`)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import convstudio.designer.cli as cli_package
from convstudio.ir.errors import DesignError, printable


def verb_names() -> list[str]:
    """Verb modules are named verb_<VERB>.py; each defines VERB, HELP, add_arguments(parser) and run(args)."""
    return sorted(info.name[5:] for info in pkgutil.iter_modules(cli_package.__path__) if info.name.startswith("verb_"))


def verbs(only: str | None = None) -> dict:
    """Import the verb modules (just `only` when given, so a verb loads no other verb's dependencies)."""
    names = [only] if only in verb_names() else verb_names()
    found = {}
    for name in names:
        module = importlib.import_module(f"convstudio.designer.cli.verb_{name}")
        found[module.VERB] = module
    return dict(sorted(found.items()))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line `error: <what>, <command>` with exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {printable(message)}, command '{printable(self.prog)}' (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="convstudio",
        description="Design, analyse, compress, train and export convolutional networks.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in verbs(only).items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except DesignError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            return 0
        where = f", file '{e.filename}'" if e.filename else ""
        print(f"error: {printable(f'{e.strerror or e}{where}')}", file=sys.stderr)
        return 2
    except MemoryError:  # the size checks before allocating should prevent it; if not, one line rather than a traceback
        print(f"error: ran out of memory (use a smaller batch or input), command 'convstudio {args.verb}'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
