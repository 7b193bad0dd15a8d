"""Errors raised for bad designs: each names what is wrong and where."""

from __future__ import annotations

import unicodedata

# Characters that would break or restyle a terminal line: controls, format marks (bidi overrides), line separators.
UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every unprintable character written as a visible escape (\\n, \\x00, \\x1b, \\u202e)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif unicodedata.category(ch) in UNPRINTABLE:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


class DesignError(Exception):
    """A problem with user input. `what` says what is wrong, `where` names the node, field or file."""

    def __init__(self, what: str, where: str = ""):
        self.what = what
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        """`what, where` as one printable line: control characters in user-supplied names are escaped."""
        return printable(f"{self.what}, {self.where}" if self.where else self.what)

    def at(self, where: str) -> "DesignError":
        """Return a copy whose location is prefixed with `where`."""
        joined = f"{where} {self.where}".strip() if self.where else where
        return type(self)(self.what, joined)


class ShapeError(DesignError):
    """Shapes of a node's inputs do not fit its op and attributes."""


class AttrError(DesignError):
    """An attribute is missing, mistyped or out of range."""


class GraphError(DesignError):
    """The graph structure is broken: dangling references, duplicates, cycles."""
