"""Calling the `convstudio` command line in-process, and the one-line error every refusal must be."""

from __future__ import annotations

from convstudio.designer.cli.main import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `convstudio ARGV`."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *names: str) -> str:
    """The refusal: exit 2, one printable `error:` line holding every name, no traceback; returns the line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and lines[0].isprintable()
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]
