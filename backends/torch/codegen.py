"""Standalone PyTorch source for a design: one nn.Module class whose forward is written out op by op.

The file imports only torch. Its submodules are built by the same constructors the lowering uses, so
its `state_dict()` keys equal the lowered module's and the design's safetensors weights load into it.
Deformable convolution, when used, comes along as a helper function and layer class in the file.
"""

from __future__ import annotations

import inspect
import keyword
import operator
import re

import torch
import torch.fx as fx
import torch.nn.functional as F

from convstudio.backends.torch import deform, layers
from convstudio.backends.torch.lower import CODE_GLOBALS, class_name_for, trace
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph

INFIX = {operator.add: "+", operator.mul: "*"}
HELPERS = {
    deform.DeformConv2d: (deform.deform_conv2d, deform.DeformConv2d),
    **{cls: (cls,) for cls in (layers.LayerNorm2d, layers.Scale, layers.StochasticDepth)},
}
HELPER_NAMES = {obj.__name__ for objs in HELPERS.values() for obj in objs}
INDENT = "    "


def generate(graph: Graph, class_name: str | None = None, weights_file: str | None = None) -> str:
    """Python source of a standalone nn.Module for `graph`; weights are not embedded (the docstring
    shows how to load `weights_file`)."""
    name = class_name or class_name_for(graph.name)
    if not name.isidentifier() or keyword.iskeyword(name):
        raise DesignError(f"class name must be a Python identifier, got {name!r}", "--class-name")
    if name in CODE_GLOBALS or name in HELPER_NAMES:
        raise DesignError(f"class name '{name}' is already used in the generated file", "--class-name")
    traced = trace(graph, with_params=False)
    init = [f"{INDENT * 2}self.{target} = {spec.source()}" for target, spec in traced.specs.items()]
    uses: set[str] = set()
    signature, body = _forward(traced.fx_graph, uses)
    helpers = []
    for spec in traced.specs.values():
        for obj in HELPERS.get(spec.cls, ()):
            source = inspect.getsource(obj)
            if source not in helpers:
                helpers.append(source)
                uses.add("torch")
    cls = [
        f"class {name}(nn.Module):",
        f'{INDENT}"""Design \'{_plain(graph.name)}\': inputs {", ".join(graph.inputs)}; outputs {", ".join(graph.outputs)}."""',
        "",
        f"{INDENT}def __init__(self):",
        f"{INDENT * 2}super().__init__()",
        *init,
        "",
        f"{INDENT}def forward(self, {', '.join(signature)}):",
        *(INDENT * 2 + line for line in body),
    ]
    code = "\n\n\n".join([*(h.rstrip("\n") for h in helpers), "\n".join(cls)])
    return _header(graph, name, uses, weights_file or "weights.safetensors") + code + "\n"


def _plain(text: str) -> str:
    """The design name as safe docstring text."""
    return re.sub(r"[^\w .,:;()+/-]", "_", text)


def _header(graph: Graph, class_name: str, uses: set[str], weights_file: str) -> str:
    imports = ["import torch"] if "torch" in uses else []
    if "F" in uses:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    doc = (
        f'"""PyTorch model of the ConvStudio design \'{_plain(graph.name)}\'.\n\n'
        "Load the design's weights (safetensors, keys <node>.<param>):\n\n"
        "    from safetensors.torch import load_file\n"
        f"    model = {class_name}()\n"
        f"    model.load_state_dict(load_file('{_plain(weights_file)}'))\n"
        '"""\n\n'
    )
    return doc + "\n".join(imports) + "\n\n\n"


def _forward(fx_graph: fx.Graph, uses: set[str]) -> tuple[list[str], list[str]]:
    """Argument names and statements of forward, one per fx node; adds the globals used to `uses`."""
    args, body = [], []
    for node in fx_graph.nodes:
        if node.op == "placeholder":
            args.append(node.name)
        elif node.op == "output":
            result = node.args[0]
            values = result if isinstance(result, tuple) else (result,)
            body.append("return " + ", ".join(_arg(v) for v in values))
        else:
            body.append(f"{node.name} = {_expression(node, uses)}")
    return args, body


def _expression(node: fx.Node, uses: set[str]) -> str:
    if node.op == "call_module":
        return f"self.{node.target}({_call_args(node.args, node.kwargs)})"
    if node.op == "call_method":
        return f"{_arg(node.args[0])}.{node.target}({_call_args(node.args[1:], node.kwargs)})"
    fn = node.target
    if fn in INFIX:
        return f" {INFIX[fn]} ".join(_arg(a) for a in node.args)
    if fn is operator.getitem:
        return f"{_arg(node.args[0])}[{_arg(node.args[1])}]"
    return f"{_function_name(fn, uses)}({_call_args(node.args, node.kwargs)})"


def _function_name(fn, uses: set[str]) -> str:
    name = fn.__name__
    for prefix, namespace in (("F", F), ("torch", torch)):
        if getattr(namespace, name, None) is fn:
            uses.add(prefix)
            return f"{prefix}.{name}"
    raise DesignError(f"code generation does not know how to write {fn!r}", "codegen")


def _call_args(args, kwargs) -> str:
    return ", ".join([_arg(a) for a in args] + [f"{k}={_arg(v)}" for k, v in kwargs.items()])


def _arg(value) -> str:
    if isinstance(value, fx.Node):
        return value.name
    if isinstance(value, list):
        return "[" + ", ".join(_arg(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_arg(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)
