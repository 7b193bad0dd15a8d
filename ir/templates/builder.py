"""A small helper for writing templates and blocks: each call adds one node and returns its reference."""

from __future__ import annotations

from convstudio.ir.graph import Graph
from convstudio.ir.groups import Group


class Builder:
    """Adds nodes to a graph with automatic unique names under a prefix stack."""

    def __init__(self, graph: Graph | str):
        self.graph = graph if isinstance(graph, Graph) else Graph(graph)
        self._prefix: list[str] = []
        self._groups: list[str] = []

    def scope(self, prefix: str, group: bool = False) -> "_Scope":
        """`with b.scope("layer1_0"):` names nodes layer1_0_conv1, ...; with `group=True` they also form a group of that name."""
        return _Scope(self, prefix, "_".join([*self._prefix, prefix]) if group else None)

    def group(self, name: str) -> "_Scope":
        """`with b.group("stem"):` puts the nodes added inside in group `name` (nested in the enclosing group) without renaming them."""
        return _Scope(self, None, name)

    def name(self, base: str) -> str:
        return self.graph.fresh_name("_".join([*self._prefix, base]))

    def input(self, name: str, shape) -> str:
        return self.graph.add("Input", name=name, attrs={"shape": list(shape)}).name

    def output(self, ref: str, name: str = "logits") -> str:
        return self.graph.add("Output", [ref], name=name).name

    def op(self, op: str, inputs, name: str | None = None, share: str | None = None, **attrs) -> str:
        refs = [inputs] if isinstance(inputs, str) else list(inputs)
        node = self.graph.add(op, refs, name=self.name(name or op.lower()), attrs=attrs, share=share)
        if self._groups:
            self.graph.groups[self._groups[-1]].nodes.append(node.name)
        return node.name


class _Scope:
    def __init__(self, builder: Builder, prefix: str | None, group: str | None):
        self.builder = builder
        self.prefix = prefix
        self.group = group

    def __enter__(self) -> Builder:
        b = self.builder
        if self.prefix is not None:
            b._prefix.append(self.prefix)
        if self.group is not None:
            b.graph.groups[self.group] = Group(self.group, parent=b._groups[-1] if b._groups else None)
            b._groups.append(self.group)
        return b

    def __exit__(self, *exc) -> None:
        b = self.builder
        if self.prefix is not None:
            b._prefix.pop()
        if self.group is not None:
            b._groups.pop()
