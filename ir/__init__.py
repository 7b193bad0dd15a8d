"""ConvStudio's graph IR: nodes, ops, shapes, cost, passes, templates and design files.

Imports only the standard library, numpy and networkx.
"""

from convstudio.ir.cost import Analyzer, CostReport, analyze
from convstudio.ir.design import Design, load, save
from convstudio.ir.errors import AttrError, DesignError, GraphError, ShapeError
from convstudio.ir.graph import Graph, Node, make_ref, parse_ref, verify
from convstudio.ir.ops import registry

__all__ = [
    "Analyzer", "CostReport", "analyze", "Design", "load", "save", "AttrError", "DesignError", "GraphError",
    "ShapeError", "Graph", "Node", "make_ref", "parse_ref", "verify", "registry",
]
