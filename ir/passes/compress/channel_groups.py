"""Channel dependency groups: which channels of which layers must be removed together, and removing them.

Every channel of every value is traced back to an atom, a channel created by a layer (Conv2d, ConvTranspose2d,
Linear) or by an op pruning does not follow. Rules:
- ops that keep channels (activations, BN, pooling, dropout, ...) pass their input's atoms on;
- a depthwise conv passes them on too (each repeated by its channel multiplier);
- Add and Mul unite the atoms of their inputs position by position (residuals, SE scaling);
- Concat along channels lays its inputs' atoms side by side (each producer keeps its slice);
- Flatten repeats each channel's atom once per flattened position (the Linear after it loses those columns);
- a grouped conv splits the channels it reads and writes into `groups` blocks: each block loses the same count;
- graph inputs and outputs, grouped transposed convs, ChannelShuffle/ChannelSplit, shared parameters and unknown
  ops block the groups they touch, with the reason.
A dependency group is the set of layers whose atoms are united; its channels are the united atom classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convstudio.ir.graph import Graph, make_ref, parse_ref
from convstudio.ir.ops.structure import scale_axis
from convstudio.ir.passes.compress.common import shapes_of

PASS_OPS = frozenset({"Dropout", "Identity", "StochasticDepth", "MaxPool2d", "AvgPool2d", "GlobalAvgPool", "GlobalMaxPool",
                      "AdaptiveAvgPool2d", "Upsample"})
NORM_OPS = frozenset({"BatchNorm2d", "BatchNorm1d"})


def full_dim(dim: int, shape) -> int:
    """Dimension `dim` of a value whose per-sample shape is `shape`, counted from the batch (0); a negative one counts from the end."""
    return dim + len(shape) + 1 if dim < 0 else dim


@dataclass
class Group:
    """Layers whose channels are coupled; `channels` are atom-class roots, `importance` one value per channel,
    `blocks` the block of each channel where a grouped conv splits them (None: no grouped conv)."""

    name: str
    sources: list[str]
    members: list[str]
    channels: list[int]
    importance: np.ndarray
    reason: str | None
    blocks: np.ndarray | None = None

    def removed(self, keep: int) -> list[int]:
        """The channels to remove so that `keep` remain: the least important, the same count from every block."""
        if self.blocks is None:
            return [self.channels[i] for i in np.argsort(-self.importance, kind="stable")[keep:].tolist()]
        count = int(self.blocks.max()) + 1
        out = []
        for b in range(count):
            members = np.flatnonzero(self.blocks == b)
            order = members[np.argsort(-self.importance[members], kind="stable")]
            out.extend(self.channels[i] for i in order[keep // count:].tolist())
        return out


class ChannelGraph:
    """The atoms of every value of `graph` (shapes inferred) and the union-find that couples them."""

    def __init__(self, graph: Graph, importance: str):
        self.graph = graph
        self.importance_kind = importance
        self.parent: list[int] = []
        self.atom_source: list[int] = []
        self.sources: list[str] = []
        self.source_parent: list[int] = []
        self.layouts: dict[str, np.ndarray | None] = {}
        self.blocks: list[tuple[np.ndarray, str]] = []
        self.touched: list[tuple[str, list[np.ndarray]]] = []
        self.block_splits: list[tuple[np.ndarray, int, str]] = []
        self.scores: list[tuple[np.ndarray, np.ndarray]] = []
        for name in graph.topo_order():
            self._trace(name)

    # ---- union-find ------------------------------------------------------------------------------

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def _find_source(self, s: int) -> int:
        while self.source_parent[s] != s:
            self.source_parent[s] = self.source_parent[self.source_parent[s]]
            s = self.source_parent[s]
        return s

    def _unite(self, xs: np.ndarray, ys: np.ndarray) -> None:
        for x, y in zip(xs.tolist(), ys.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
            sx, sy = self._find_source(self.atom_source[x]), self._find_source(self.atom_source[y])
            if sx != sy:
                self.source_parent[sy] = sx

    def _fresh(self, name: str, count: int) -> np.ndarray:
        s = len(self.sources)
        self.sources.append(name)
        self.source_parent.append(s)
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.atom_source.extend([s] * count)
        return np.arange(start, start + count)

    # ---- tracing ---------------------------------------------------------------------------------

    def _in(self, name: str, k: int = 0) -> np.ndarray | None:
        name_, idx = parse_ref(self.graph.nodes[name].inputs[k])
        return self.layouts.get(make_ref(name_, idx))

    def _block(self, layout: np.ndarray | None, reason: str) -> None:
        if layout is not None and len(layout):
            self.blocks.append((layout, reason))

    def _opaque(self, name: str, reason: str) -> None:
        """Block every input's groups and give each output fresh blocked atoms."""
        node = self.graph.nodes[name]
        for k in range(len(node.inputs)):
            self._block(self._in(name, k), reason)
        for k, shape in enumerate(node.meta["shapes"]):
            out = self._fresh(name, shape[0]) if shape else None
            self._block(out, reason)
            self.layouts[make_ref(name, k)] = out

    def _score(self, layout: np.ndarray, values) -> None:
        self.scores.append((layout, np.asarray(values, dtype=np.float64)))

    def _filter_l1(self, name: str, axis: int = 0) -> np.ndarray | None:
        w = self.graph.nodes[name].params.get("weight")
        if w is None:
            return None
        return np.abs(np.moveaxis(np.asarray(w), axis, 0).reshape(w.shape[axis], -1)).sum(axis=1, dtype=np.float64)

    def _trace(self, name: str) -> None:
        g = self.graph
        node = g.nodes[name]
        op, a = node.op, node.resolved
        shapes = node.meta["shapes"]
        in_shapes = [shapes_of(g, r) for r in node.inputs]
        x = self._in(name) if node.inputs else None
        out: np.ndarray | None = None
        if op == "Input":
            out = self._fresh(name, shapes[0][0]) if shapes[0] else None
            self._block(out, f"channels come from the graph input '{name}'")
        elif op == "Output":
            self._block(x, f"channels feed the graph output '{name}'")
            out = x
        elif x is None and node.inputs:
            return self._opaque(name, f"{name} takes a value without channels")
        elif node.share:
            return self._opaque(name, f"{name} shares its parameters (group '{node.share}')")
        elif op in ("Conv2d", "ConvTranspose2d"):
            g_, cin = a["groups"], in_shapes[0][0]
            if op == "Conv2d" and g_ == cin and g_ > 1:
                out = np.repeat(x, shapes[0][0] // cin)
                self.touched.append((name, [x, out]))
                if self.importance_kind == "l1" and (l1 := self._filter_l1(name)) is not None:
                    self._score(out, l1)
            elif g_ != 1 and op != "Conv2d":
                return self._opaque(name, f"grouped transposed conv {name} (groups={g_}) is not followed by pruning")
            else:
                out = self._fresh(name, shapes[0][0])
                self.touched.append((name, [x, out]))
                if g_ != 1:
                    self.block_splits.extend([(x, g_, name), (out, g_, name)])
                if self.importance_kind == "l1" and (l1 := self._filter_l1(name, 0 if op == "Conv2d" else 1)) is not None:
                    self._score(out, l1)
        elif op == "Linear":
            if len(in_shapes[0]) != 1:
                return self._opaque(name, f"Linear {name} acts on the last dimension of a {len(in_shapes[0])}-d value")
            out = self._fresh(name, shapes[0][0])
            self.touched.append((name, [x, out]))
            if self.importance_kind == "l1" and (l1 := self._filter_l1(name)) is not None:
                self._score(out, l1)
        elif op in NORM_OPS:
            out = x
            self.touched.append((name, [x]))
            if self.importance_kind == "bn" and a["affine"] and "weight" in node.params:
                self._score(x, np.abs(np.asarray(node.params["weight"], dtype=np.float64)))
        elif op == "PReLU" or (op == "Scale" and scale_axis(a, in_shapes[0]) == 0):
            out = x
            if node.opdef.params(a, in_shapes).get("weight", (1,))[0] != 1:
                self.touched.append((name, [x]))
        elif op == "Softmax" and full_dim(a["dim"], in_shapes[0]) == 1:
            return self._opaque(name, f"Softmax {name} normalizes across channels")
        elif node.opdef.category == "activation" or op in PASS_OPS or op == "Scale":
            out = x
        elif op in ("Add", "Mul"):
            full = [self._in(name, k) for k, s in enumerate(in_shapes) if len(s) == len(shapes[0]) and s[0] == shapes[0][0]]
            if any(len(s) != len(shapes[0]) or s[0] not in (1, shapes[0][0]) for s in in_shapes) or not full or any(f is None for f in full):
                return self._opaque(name, f"{op} {name} broadcasts across channels")
            for other in full[1:]:
                self._unite(full[0], other)
            out = full[0]
        elif op == "Concat":
            dim = full_dim(a["dim"], shapes[0])
            layouts = [self._in(name, k) for k in range(len(node.inputs))]
            if any(lay is None for lay in layouts):
                return self._opaque(name, f"Concat {name} joins values without channels")
            if dim == 1:
                out = np.concatenate(layouts)
            else:
                for other in layouts[1:]:
                    self._unite(layouts[0], other)
                out = layouts[0]
        elif op == "Flatten":
            end = full_dim(a["end_dim"], in_shapes[0])
            out = np.repeat(x, int(np.prod(in_shapes[0][1:end], dtype=np.int64))) if a["start_dim"] == 1 else x
        elif op in ("ChannelShuffle", "ChannelSplit"):
            why = "couples channels across groups" if op == "ChannelShuffle" else "splits channels by position"
            return self._opaque(name, f"{op} {name} {why}")
        else:
            return self._opaque(name, f"{op} {name} is not followed by pruning")
        self.layouts[name] = out

    # ---- groups ----------------------------------------------------------------------------------

    def groups(self) -> list[Group]:
        """The dependency groups in graph order, each with its channels, their summed importance and any block reason."""
        importance: dict[int, float] = {}
        for layout, values in self.scores:
            for atom, v in zip(layout.tolist(), values.tolist()):
                r = self.find(atom)
                importance[r] = importance.get(r, 0.0) + v
        by_source: dict[int, Group] = {}
        order: list[Group] = []

        def group_of(atom: int) -> Group:
            s = self._find_source(self.atom_source[atom])
            if s not in by_source:
                by_source[s] = Group(self.sources[self.atom_source[atom]], [], [], [], np.zeros(0), None)
                order.append(by_source[s])
            return by_source[s]

        def groups_of(layout: np.ndarray) -> list[Group]:
            return list({id(grp): grp for grp in map(group_of, np.unique(layout).tolist())}.values())

        seen: set[int] = set()
        for atom in range(len(self.parent)):
            grp = group_of(atom)
            src = self.sources[self.atom_source[atom]]
            if src not in grp.sources:
                grp.sources.append(src)
            r = self.find(atom)
            if r not in seen:
                seen.add(r)
                grp.channels.append(r)
        for layout, reason in self.blocks:
            for grp in groups_of(layout):
                grp.reason = grp.reason or reason
        for name, layouts in self.touched:
            for grp in groups_of(np.concatenate(layouts)):
                if name not in grp.members:
                    grp.members.append(name)
        for grp in order:
            grp.importance = np.array([importance.get(c, 0.0) for c in grp.channels])
        for layout, count, name in self.block_splits:
            self._split_into_blocks(groups_of(layout), layout, count, name)
        return order

    def _split_into_blocks(self, groups: list[Group], layout: np.ndarray, count: int, name: str) -> None:
        """Record that grouped conv `name` splits the channels of `layout` into `count` blocks (or why it cannot)."""
        grp = groups[0]
        roots = [self.find(a) for a in layout.tolist()]
        if len(groups) > 1 or len(set(roots)) != len(roots) or len(roots) != len(grp.channels):
            for other in groups:
                other.reason = other.reason or f"grouped conv {name} (groups={count}) reads channels it cannot split evenly"
            return
        block_of = {r: i * count // len(roots) for i, r in enumerate(roots)}
        blocks = np.array([block_of[c] for c in grp.channels])
        if grp.blocks is not None and not np.array_equal(grp.blocks, blocks):
            grp.reason = grp.reason or f"grouped conv {name} splits the channels into other blocks than another grouped conv"
        grp.blocks = blocks

    # ---- rewriting -------------------------------------------------------------------------------

    def remove(self, removed: set[int]) -> list[str]:
        """Remove the channels of the atom classes in `removed` from every layer; returns the nodes changed."""
        g = self.graph
        changed = []

        def keep(layout: np.ndarray | None) -> np.ndarray | None:
            if layout is None:
                return None
            return np.array([self.find(a) not in removed for a in layout.tolist()], dtype=bool)

        for name in g.topo_order():
            node = g.nodes[name]
            if not node.inputs or name not in self.layouts:
                continue
            ik, ok = keep(self._in(name)), keep(self.layouts[name])
            if (ik is None or ik.all()) and (ok is None or ok.all()):
                continue
            attrs = _slice(node, ik, ok, int(ik.sum()) if ik is not None else 0, int(ok.sum()) if ok is not None else 0)
            if attrs is not None:
                g.set_attrs(name, {**node.attrs, **attrs})
                changed.append(name)
        return changed


def _slice(node, ik: np.ndarray, ok: np.ndarray, n_in: int, n_out: int) -> dict | None:
    """Cut one node's parameters to the kept input (`ik`) and output (`ok`) positions; returns its new channel
    attributes (None: the node has none)."""
    p, op = node.params, node.op
    a = {}
    set_in = {key for key in ("in_channels", "in_features", "num_features") if node.attrs.get(key) is not None}
    if op == "Conv2d" or op == "ConvTranspose2d":
        groups = node.resolved["groups"]
        depthwise = groups > 1 and groups == len(ik)
        if "weight" in p:
            w = p["weight"]
            if op == "ConvTranspose2d":
                p["weight"] = w[ik][:, ok]
            elif depthwise:
                p["weight"] = w[ok]
            else:  # each kept output reads the kept inputs of its own block
                columns = np.array([np.flatnonzero(block) for block in ik.reshape(groups, -1)])
                rows = np.flatnonzero(ok)
                p["weight"] = w[rows[:, None], columns[rows // (len(ok) // groups)]]
        if "bias" in p:
            p["bias"] = p["bias"][ok]
        a["out_channels"] = n_out
        if depthwise:
            a["groups"] = n_in
    elif op == "Linear":
        if "weight" in p:
            p["weight"] = p["weight"][ok][:, ik]
        if "bias" in p:
            p["bias"] = p["bias"][ok]
        a["out_features"] = n_out
    elif op in NORM_OPS:
        for key in list(p):
            p[key] = p[key][ik]
    elif op == "PReLU" and node.resolved["num_parameters"] > 1:
        if "weight" in p:
            p["weight"] = p["weight"][ik]
        a["num_parameters"] = n_in
    elif op == "Scale" and "weight" in p and p["weight"].shape[0] == len(ik):
        p["weight"] = p["weight"][ik]
    else:
        return None
    return {**a, **{key: n_in for key in set_in}}
