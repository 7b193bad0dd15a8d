"""Find nodes by name, op or attribute: the query language of the designer's find bar (Ctrl+F).

A query is words separated by spaces; a node is a hit when every word matches it:
- `op:BatchNorm2d` matches the op exactly (any case);
- `name:conv` matches names containing the text;
- `kernel_size=3` matches an attribute (defaults included): `3` matches (3, 3), `3x3` or `3,3` give
  each element, text compares in any case, `true`/`false`/`none` as written;
- any other word matches names or ops containing it (`conv` finds conv1 and every Conv2d).
"""

from __future__ import annotations

import re

from convstudio.ir.graph import Graph, Node

ELEMENT_SPLIT = re.compile(r"[x×,\s()\[\]]+")


def value_matches(value, text: str) -> bool:
    """Whether attribute `value` equals the typed `text` (see the module docstring for the forms)."""
    text = text.strip().lower()
    if isinstance(value, (tuple, list)):
        parts = [p for p in ELEMENT_SPLIT.split(text) if p]
        if len(parts) == 1:
            return bool(value) and all(value_matches(v, parts[0]) for v in value)  # `3` matches (3, 3)
        return len(parts) == len(value) and all(value_matches(v, p) for v, p in zip(value, parts))
    if isinstance(value, bool):
        return text == str(value).lower()
    if value is None:
        return text in ("none", "null")
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return str(value).lower() == text


def word_matches(node: Node, word: str) -> bool:
    """Whether one query word matches `node`."""
    key, sep, wanted = word.partition(":")
    if sep and key.lower() == "op":
        return node.op.lower() == wanted.lower()
    if sep and key.lower() == "name":
        return wanted.lower() in node.name.lower()
    key, sep, wanted = word.partition("=")
    if sep:
        resolved = node.resolved
        return key in resolved and value_matches(resolved[key], wanted)
    word = word.lower()
    return word in node.name.lower() or word in node.op.lower()


def find_nodes(graph: Graph, query: str) -> list[str]:
    """Names of the nodes matching every word of `query`, in topological order (none for an empty query)."""
    words = query.split()
    if not words:
        return []
    return [name for name in graph.topo_order() if all(word_matches(graph.nodes[name], w) for w in words)]
