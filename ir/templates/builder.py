"""A small helper for writing templates and blocks: each call adds one node and returns its reference."""

from __future__ import annotations

from convstudio.ir.graph import Graph


class Builder:
    """Adds nodes to a graph with automatic unique names under a prefix stack."""

    def __init__(self, graph: Graph | str):
        self.graph = graph if isinstance(graph, Graph) else Graph(graph)
        self._prefix: list[str] = []

    def scope(self, prefix: str) -> "_Scope":
        """`with b.scope("layer1_0"):` names nodes layer1_0_conv1, ..."""
        return _Scope(self, prefix)

    def name(self, base: str) -> str:
        return self.graph.fresh_name("_".join([*self._prefix, base]))

    def input(self, name: str, shape) -> str:
        return self.graph.add("Input", name=name, attrs={"shape": list(shape)}).name

    def output(self, ref: str, name: str = "logits") -> str:
        return self.graph.add("Output", [ref], name=name).name

    def op(self, op: str, inputs, name: str | None = None, share: str | None = None, **attrs) -> str:
        refs = [inputs] if isinstance(inputs, str) else list(inputs)
        node = self.graph.add(op, refs, name=self.name(name or op.lower()), attrs=attrs, share=share)
        return node.name


class _Scope:
    def __init__(self, builder: Builder, prefix: str):
        self.builder = builder
        self.prefix = prefix

    def __enter__(self) -> Builder:
        self.builder._prefix.append(self.prefix)
        return self.builder

    def __exit__(self, *exc) -> None:
        self.builder._prefix.pop()
