"""The exporter's emitter: collects the ONNX nodes and initializers of one graph, and the site of each IR node.

Lowerings (`backends.onnx.ops`) receive an `Emitter` and a `Site`; the exporter (`backends.onnx.export`) creates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from convstudio.backends.onnx.opaque import opaque_to_onnx
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node


@dataclass
class Site:
    """One IR node being lowered: resolved attrs, ONNX input/output value names, per-sample shapes."""

    node: Node
    a: dict
    ins: list[str]
    outs: list[str]
    in_shapes: list[tuple]
    out_shapes: list[tuple]


class Emitter:
    """Collects ONNX nodes and initializers for one graph at one opset."""

    def __init__(self, graph: Graph, opset: int, target: onnx.GraphProto):
        self.graph = graph
        self.opset = opset
        self.target = target
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: set[str] = set()
        self.extra_domains: dict[str, int] = {}
        self._node_names: set[str] = set()

    def node(self, op_type: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> str:
        """Append one ONNX node (name made unique); returns its first output."""
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self._unique(name), domain=domain or None, **attrs))
        return outputs[0]

    def _unique(self, name: str) -> str:
        """`name`, or `name_1`, `name_2`, ... when an earlier node took it."""
        unique, i = name, 1
        while unique in self._node_names:
            unique, i = f"{name}_{i}", i + 1
        self._node_names.add(unique)
        return unique

    def tmp(self, owner: str, label: str) -> str:
        return f"{owner}/{label}"

    def const(self, owner: str, label: str, array: np.ndarray) -> str:
        """A constant (not a learnable parameter) as an initializer named ``<owner>/<label>``."""
        name = f"{owner}/{label}"
        self._initializer(name, np.asarray(array))
        return name

    def param(self, node: Node, key: str) -> str:
        """The initializer ``<owner>.<key>`` of a parameter; nodes sharing weights get the same one."""
        owner = self.graph.param_owner(node.name)
        name = f"{owner}.{key}"
        if name not in self.initializers:
            value = self.graph.nodes[owner].params.get(key)
            if value is None:
                raise DesignError(f"weights lack '{name}'", f"node '{node.name}'")
            self._initializer(name, np.asarray(value, dtype=np.float32))
        return name

    def _initializer(self, name: str, array: np.ndarray) -> None:
        """Append an initializer straight into the model (one copy of the data)."""
        array = np.ascontiguousarray(array)
        tensor = self.target.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        self.initializers.add(name)

    def opaque(self, s: Site) -> None:
        """Re-emit an imported ONNX node kept as is (backends.onnx.opaque restores its attributes)."""
        proto = opaque_to_onnx(s.node, list(s.ins), list(s.outs))
        if proto.domain:
            self.extra_domains[proto.domain] = max(self.extra_domains.get(proto.domain, 1), int(s.a["opset"]))
        proto.name = self._unique(proto.name or s.node.name)
        self.nodes.append(proto)
