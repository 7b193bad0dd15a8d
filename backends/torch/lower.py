"""Lower an IR graph to a `torch.fx.GraphModule` whose submodules are named after the nodes.

Rules:
- Each node becomes the fx calls its entry in `backends.torch.modules.LOWERINGS` emits; the fx nodes
  carry the IR node's name, so the generated code reads like the design.
- Nodes of one sharing group call one submodule, named after the group's first node.
- Parameters come from `node.params`; nodes without them get `backends.weights.init_params(graph,
  seed)` (on a copy: the input graph is not changed), so torch and ONNX see the same weights.
- `state_dict()` keys are ``<node>.<param>``: the safetensors keys plus, for each BatchNorm that tracks
  running statistics, torch's own ``<node>.num_batches_tracked`` counter (not part of the design: the
  IR's momentum is always a number, so torch never reads it). `module.load_state_dict(weights)` with a
  weights dict that lacks the counters works with strict=True, as torch fills them in.
- ReLU and ReLU6 (standalone or fused) overwrite their input in place when it is a fresh tensor that
  nothing else reads, as torchvision's models do; the design's outputs are unaffected.
- forward takes the graph inputs in `graph.inputs` order and returns one tensor, or a tuple in
  `graph.outputs` order.
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from convstudio.backends.torch.modules import LOWERINGS, ModuleSpec
from convstudio.backends.weights import check_params, init_params, param_shapes, share_params
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, Node, make_ref, parse_ref, verify
from convstudio.ir.shapes import infer_shapes

TORCH_ONLY_BUFFERS = ("num_batches_tracked",)
# Globals that generated code refers to: a value named like one would hide it.
CODE_GLOBALS = frozenset({"torch", "nn", "F", "self", "operator", "math", "inf", "nan", "device", "NoneType", "fx_pytree", "pytree"})


@functools.cache
def _reserved_names() -> frozenset[str]:
    """Attribute names a GraphModule already has; a submodule cannot take them."""
    return frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph())))


def class_name_for(name: str) -> str:
    """'resnet18_small' -> 'Resnet18Small', a valid class name."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    text = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return text if text[0].isalpha() else "Model" + text


class Emitter:
    """Adds the fx nodes of one IR node at a time, named after it."""

    def __init__(self, graph: Graph):
        self.ir = graph
        self.fx = fx.Graph()
        self.specs: dict[str, ModuleSpec] = {}
        self.node: Node | None = None

    def value_name(self, suffix: str = "") -> str:
        name = self.node.name + suffix
        return name + "_" if name in CODE_GLOBALS or keyword.iskeyword(name) else name

    def placeholder(self) -> fx.Node:
        return self.fx.placeholder(self.value_name())

    def module(self, spec: ModuleSpec, args) -> fx.Node:
        name = self.node.name
        owner = self.ir.param_owner(name)
        if owner in _reserved_names() or keyword.iskeyword(owner):
            raise DesignError(f"node name '{owner}' is reserved in PyTorch modules (rename the node)", f"node '{owner}'")
        known = self.specs.setdefault(owner, spec)
        if known != spec:
            raise DesignError(
                f"shares parameters with '{owner}' but its input makes a different layer ({spec.source()}, not {known.source()})",
                f"node '{name}' share",
            )
        return self.fx.create_node("call_module", owner, tuple(args), name=self.value_name())

    def owns_input(self, index: int, fresh_ops: frozenset[str]) -> bool:
        """Whether input `index` is a fresh tensor (made by one of `fresh_ops`, no fused activation) that
        only this node reads, so it may be overwritten in place. Never for nodes in a sharing group."""
        ref = self.node.inputs[index]
        producer = self.ir.nodes[parse_ref(ref)[0]]
        return (
            not self.node.share
            and producer.op in fresh_ops
            and producer.resolved.get("activation", "none") == "none"
            and len(self.ir.value_users(ref)) == 1
        )

    def function(self, fn, args, kwargs: dict | None = None, suffix: str = "") -> fx.Node:
        return self.fx.create_node("call_function", fn, tuple(args), kwargs or {}, name=self.value_name(suffix))

    def method(self, method: str, args, kwargs: dict | None = None, suffix: str = "") -> fx.Node:
        return self.fx.create_node("call_method", method, tuple(args), kwargs or {}, name=self.value_name(suffix))


@dataclass
class Traced:
    """The fx graph of a design with what is needed to build modules around it."""

    fx_graph: fx.Graph
    specs: dict[str, ModuleSpec]  # submodule name -> constructor
    values: dict[str, str]  # IR value reference -> fx node name
    params: dict[str, dict[str, np.ndarray]]  # submodule name -> parameters and buffers
    class_name: str


def trace(graph: Graph, seed: int = 0, with_params: bool = True) -> Traced:
    """Build the fx graph and module constructors of a design (the input graph is not changed).

    With `with_params`, `Traced.params` holds every parameter and buffer (initialized where missing).
    """
    verify(graph)
    for node in graph:
        if node.op not in LOWERINGS:
            raise DesignError(f"op '{node.op}' has no PyTorch lowering", f"node '{node.name}'")
    work = graph.copy()
    infer_shapes(work, strict=True)
    if with_params:
        init_params(work, seed)
        check_params(work)
    emit = Emitter(work)
    values: dict[str, fx.Node] = {}
    order = work.inputs + [n for n in work.topo_order() if work.nodes[n].op != "Input"]
    for name in order:
        node = work.nodes[name]
        args = [values[_ref(r)] for r in node.inputs]
        ins = [work.nodes[src].meta["shapes"][k] for src, k in map(parse_ref, node.inputs)]
        emit.node = node
        outs = LOWERINGS[node.op](emit, node.resolved, ins, args)
        for k, value in enumerate(outs):
            values[make_ref(name, k)] = value
    results = [values[name] for name in work.outputs]
    emit.fx.output(results[0] if len(results) == 1 else tuple(results))
    emit.fx.lint()
    params = {owner: dict(work.nodes[owner].params) for owner in param_shapes(work)} if with_params else {}
    return Traced(emit.fx, emit.specs, {ref: v.name for ref, v in values.items()}, params, class_name_for(graph.name))


def _ref(ref: str) -> str:
    return make_ref(*parse_ref(ref))


def lower(graph: Graph, seed: int = 0) -> fx.GraphModule:
    """The design as a torch.fx.GraphModule (see the module docstring for naming and weights).

    `module.meta["values"]` maps each IR value reference ("node" or "node:k") to its fx node's name.
    """
    traced = trace(graph, seed)
    root = nn.Module()
    with torch.device("meta"):  # every tensor is overwritten below: skip torch's own initialization
        for name, spec in traced.specs.items():
            root.add_module(name, spec.build())
    root.to_empty(device="cpu")
    for owner, arrays in traced.params.items():
        _load_arrays(root, owner, arrays)
    module = fx.GraphModule(root, traced.fx_graph, class_name=traced.class_name)
    module.meta["values"] = traced.values
    return module


def _load_arrays(root: nn.Module, owner: str, arrays: dict[str, np.ndarray]) -> None:
    if not hasattr(root, owner):
        raise DesignError("has parameters but its lowering builds no module", f"node '{owner}'")
    sub = root.get_submodule(owner)
    tensors = {**dict(sub.named_parameters(recurse=False)), **dict(sub.named_buffers(recurse=False))}
    counters = [k for k in tensors if k in TORCH_ONLY_BUFFERS]
    if set(tensors) - set(counters) != set(arrays):
        raise DesignError(f"the module holds {sorted(tensors)}, the design {sorted(arrays)}", f"node '{owner}'")
    with torch.no_grad():
        for key, array in arrays.items():
            tensors[key].copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))
        for key in counters:
            tensors[key].zero_()


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel, DataParallel or torch.compile wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def params_from_module(graph: Graph, module: nn.Module) -> None:
    """Copy a (trained) module's parameters and buffers into node.params as float32 numpy arrays."""
    state = unwrap(module).state_dict()
    for owner, shapes in param_shapes(graph).items():
        params = {}
        for key, shape in shapes.items():
            tensor = state.get(f"{owner}.{key}")
            if tensor is None:
                raise DesignError(f"the module has no tensor '{owner}.{key}'", f"node '{owner}'")
            if tuple(tensor.shape) != tuple(shape):
                what = f"tensor '{owner}.{key}' has shape {list(tensor.shape)}, the design needs {list(shape)}"
                raise DesignError(what, f"node '{owner}'")
            params[key] = tensor.detach().to("cpu", torch.float32).numpy().copy()
        graph.nodes[owner].params = params
    share_params(graph)
