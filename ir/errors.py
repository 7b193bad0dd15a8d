"""Errors raised for bad designs: each names what is wrong and where."""

from __future__ import annotations


class DesignError(Exception):
    """A problem with user input. `what` says what is wrong, `where` names the node, field or file."""

    def __init__(self, what: str, where: str = ""):
        self.what = what
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.what}, {self.where}" if self.where else self.what

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
