"""Error text for people: the designer shows the IR's error lines without Python lists or field paths,
and says which upstream node leaves a node's shape unknown."""

from __future__ import annotations

import re

from convstudio.ir.graph import Graph

FIELD = re.compile(r"(?<![/\\.\w])attrs\.([A-Za-z_]\w*)(?:\[\d+\])*")
NODE_FIELD = re.compile(r"node '([^']+)' attribute (\w+)")
FLAT_LIST = re.compile(r"(?:(?<=[\s(\[,:])|^)\[([^\[\]]*)\]")  # a list as Python prints it, not brackets inside a word
SHAPE_ITEM = re.compile(r"'N'|\d+")
QUOTED = re.compile(r"^'(.*)'$")


def _list_text(match: re.Match, text: str) -> str:
    """One flat Python list as words: shapes as N×64×8×8, other lists as 'a, b'."""
    items = [item.strip() for item in match.group(1).split(",") if item.strip()]
    if not items:
        return "nothing"
    before = text[max(0, match.start() - 24):match.start()].lower()
    if all(SHAPE_ITEM.fullmatch(item) for item in items) and (items[0] == "'N'" or "shape" in before):
        return "×".join(item.strip("'") for item in items)
    return ", ".join(QUOTED.sub(r"\1", item) for item in items)


def for_people(text: str | None) -> str | None:
    """An IR error line as the designer shows it: 'attrs.kernel_size[0]' becomes 'attribute kernel_size',
    "['N', 64, 8, 8]" becomes 'N×64×8×8' and "['a', 'b']" becomes 'a, b'."""
    if not text:
        return text
    text = FIELD.sub(r"attribute \1", text)
    text = NODE_FIELD.sub(r"attribute \2 of \1", text)
    while True:
        match = FLAT_LIST.search(text)
        if match is None:
            return text
        text = text[:match.start()] + _list_text(match, text) + text[match.end():]


def upstream_errors(graph: Graph, name: str, known: dict[str, str | None]) -> str | None:
    """The nearest node above `name` whose error leaves `name`'s shape unknown, or None. `known` remembers the
    answers for the nodes passed on the way, so asking for every node below one error costs one walk."""
    nodes = graph.nodes
    stack = [name]
    while stack:
        current = stack[-1]
        waiting = [p for p in nodes[current].input_names()
                   if p in nodes and p not in known and not nodes[p].meta.get("error") and nodes[p].meta.get("shapes") is None]
        if waiting:
            stack.extend(waiting)
            continue
        stack.pop()
        if current in known:
            continue
        culprit = None
        for producer in nodes[current].input_names():
            meta = nodes[producer].meta if producer in nodes else {}
            if meta.get("error"):
                culprit = producer
                break
            if meta.get("shapes") is None and known.get(producer):
                culprit = known[producer]
                break
        known[current] = culprit
    return known[name]


def unknown_shape_text(culprit: str | None) -> str:
    """What a node with no error but no shape shows."""
    return f"shape unknown: upstream node {culprit} has an error" if culprit else "shape unknown"
