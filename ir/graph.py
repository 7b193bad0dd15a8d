"""Graph IR: nodes, edges kept consistent in both directions, and `verify`.

A value is referenced as ``"node"`` (output 0) or ``"node:k"`` (output k). Input nodes (op ``Input``)
are the graph's inputs and Output nodes (op ``Output``) its outputs; both are ordinary nodes so the
designer can show them. Analyses write ``node.meta``; nothing outside this module edits ``inputs``
or the user lists.
"""

from __future__ import annotations

import functools
import gc
import heapq
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import networkx as nx
import numpy as np

from convstudio.ir.errors import AttrError, DesignError, GraphError
from convstudio.ir.groups import Group, copy_groups, drop_node, rename_node
from convstudio.ir.ops import registry
from convstudio.ir.order import StableOrder

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z, not $: "$" also matches before a trailing newline


PLAIN_FIELDS = frozenset(("name", "op", "inputs", "attrs", "share"))  # what a node of a design file holds
_NO_INPUTS = ()  # `add_plain`: an entry without inputs

LARGE_GRAPH = 8_192  # nodes: from this size on, `add` ages what a graph has built every AGE_EVERY nodes
AGE_EVERY = 4_096


_pausing = False  # whether a `paused_gc` stretch has the collector off now
_keep_built = False  # set by `keep_built`: that stretch ages what it built when it ends


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building or analysing many nodes at once.

    Its full collections rescan every live object, which makes bulk work on a large graph grow faster
    than the graph; what the paused stretch leaves unreachable is collected after it. A stretch that
    called `keep_built` ages what it built when it ends (`age_young_objects`).
    """
    global _pausing, _keep_built
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _pausing = True
    try:
        yield
    finally:
        _pausing = False
        gc.enable()
        if _keep_built:
            _keep_built = False
            age_young_objects()


def keep_built(graph: "Graph") -> None:
    """Note that what the paused stretch now running built lives on with `graph` (a large design just loaded or opened):
    if `graph` has LARGE_GRAPH nodes or more, it is aged when the stretch ends instead of being scanned by the collections
    its number would trigger. Outside a paused stretch it does nothing."""
    global _keep_built
    if _pausing and len(graph.nodes) >= LARGE_GRAPH:
        _keep_built = True


def age_young_objects() -> None:
    """Move every object the collector tracks into its oldest generation without scanning it.

    A graph keeps nearly everything its edits allocate, and Python's collector would rescan those objects in the full
    collections that their number triggers, again and again as the graph grows. Aged, they are scanned only by the
    full collections that other work triggers, which still free any cycle among them (garbage the program made
    meanwhile is aged too: it is freed then, not lost). Nothing is done while the collector is off, or while the
    program keeps objects of its own frozen (`gc.freeze`), which this would thaw. Only graphs of LARGE_GRAPH nodes and
    more call it, so the collector's timing in programs with ordinary designs stays as Python makes it.
    """
    if gc.isenabled() and not gc.get_freeze_count():
        gc.freeze()
        gc.unfreeze()


def is_node_name(name) -> bool:
    """Whether `name` is a valid node name: NAME_RE's rule (ASCII letters, digits and '_', not starting with a digit),
    tested without the regular expression, as this runs once per node of a large graph."""
    return isinstance(name, str) and name.isascii() and name.isidentifier()


@functools.lru_cache(maxsize=4096)
def _name_base(text: str) -> str:
    """`text` made a valid node name: other characters become '_', and a leading digit gets 'n_' before it."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", text) or "node"
    return base if is_node_name(base) else "n_" + base


@functools.lru_cache(maxsize=1024)
def _op_base(op: str) -> str:
    """The base of the names `add` generates for nodes of the registered op `op`."""
    return _name_base(op.lower())


def parse_ref(ref: str) -> tuple[str, int]:
    """Split ``"node:k"`` into ``("node", k)``; a bare name means output 0."""
    if ":" in ref:
        name, _, idx = ref.rpartition(":")
        if not (idx.isascii() and idx.isdigit()):  # isdigit alone also takes '²', which int() refuses
            raise GraphError(f"bad value reference '{ref}'", "expected 'node' or 'node:index'")
        return name, int(idx)
    return ref, 0


def _enter_inputs(users: dict[str, list[tuple[str, int]]], name: str, inputs: list[str | None]) -> None:
    """Enter the inputs of node `name` in the consumer index `users`, which has an entry for each of its producers."""
    for i, ref in enumerate(inputs):
        if ref is not None:
            users[ref if ":" not in ref else parse_ref(ref)[0]].append((name, i))


def make_ref(name: str, index: int = 0) -> str:
    return name if index == 0 else f"{name}:{index}"


class Node:
    """One op application. `attrs` holds the attributes set explicitly; `resolved` adds defaults."""

    __slots__ = ("name", "op", "attrs", "inputs", "_params", "share", "meta", "_resolved", "_own")

    def __init__(self, name: str, op: str, attrs: dict, inputs: list, params: dict | None, share: str | None, resolved: dict | None = None):
        self.name = name
        self.op = op
        self.attrs = attrs
        self.inputs: list[str | None] = inputs
        self._params: dict[str, np.ndarray] | None = params or None  # made on first use: most nodes of a large graph never hold any
        self.share = share
        self.meta: dict[str, Any] = {}
        # `attrs` resolved, when the caller has them at hand: possibly shared with other nodes (only read), until `resolved`
        # gives this node its own
        self._resolved: dict | None = resolved
        self._own = False

    @property
    def opdef(self) -> registry.OpDef:
        return registry.get(self.op)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Parameter arrays by name (weight, bias, ...); empty until some are set."""
        params = self._params
        if params is None:
            params = self._params = {}
        return params

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        self._params = value

    @property
    def resolved(self) -> dict:
        """Attributes with defaults filled in and normalized (pairs as tuples): this node's own dict."""
        if not self._own:
            shared = self._resolved
            self._resolved = dict(shared) if shared is not None else self.opdef.resolve(self.attrs)
            self._own = True
        return self._resolved

    def _set_checked(self, found: tuple[dict, dict, bool]) -> None:
        """Take attributes as `OpDef.checked` gives them: its own copy of the JSON form, the resolved ones shared."""
        out, self._resolved, lists = found
        self.attrs = registry.own_attrs(out, lists)
        self._own = False

    def input_names(self) -> list[str]:
        return [parse_ref(r)[0] for r in self.inputs if r is not None]

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, inputs={self.inputs}, attrs={self.attrs})"


class Graph:
    """Nodes in insertion order plus a consumer index kept in step with every node's inputs."""

    def __init__(self, name: str = "design"):
        self.name = name
        self.nodes: dict[str, Node] = {}
        # consumer index: node -> (consumer, input index) pairs, built from the nodes' inputs when first asked for (a design
        # loaded or built only to be analysed may never need it), then kept in step by every edit
        self._users: dict[str, list[tuple[str, int]]] | None = None
        self._counts: dict[str, int] | None = None  # node -> how many inputs read it, while there is no index; dropped by edits
        self._listeners: list[Callable[[str, dict], None]] = []
        self._order_cache: dict[str, int] | None = {}  # the stable topological order: node -> step key, increasing along it
        self._order_end = 0  # the key the next node appended to that order gets
        # the same order in blocks, made by the first edit that moves a node within it (`_resort`), then kept by every edit
        # that keeps the order; while there is none, the order cache's own order is the stable order
        self._order_blocks: StableOrder | None = None
        self._owners: dict[str, str] | None = None  # sharing group -> its first member, built on demand, dropped by share edits
        self._suffix_floor: dict[str, int] = {}  # base -> k such that every base_j with j < k is taken
        # Input and Output names in insertion order: kept by `add`, built on demand after other edits
        self._ends: tuple[list[str], list[str]] | None = ([], [])
        self.layout: dict[str, tuple[float, float]] = {}
        self.groups: dict[str, Group] = {}  # see ir/groups.py

    # ---- queries -------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.nodes

    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise GraphError(f"no node named '{name}'", f"graph '{self.name}'") from None

    def __len__(self) -> int:
        return len(self.nodes)

    def layer_count(self) -> int:
        """The design's layers: every node but Input and Output (the count every command and dialog reports)."""
        inputs, outputs = self._io_names()
        return len(self.nodes) - len(inputs) - len(outputs)

    def __iter__(self):
        return iter(self.nodes.values())

    @property
    def inputs(self) -> list[str]:
        return list(self._io_names()[0])

    @property
    def outputs(self) -> list[str]:
        return list(self._io_names()[1])

    def _io_names(self) -> tuple[list[str], list[str]]:
        """Input and Output names, kept until an Input or Output node is added, erased or renamed, or the nodes reordered."""
        if self._ends is not None:
            return self._ends
        ends: tuple[list[str], list[str]] = ([], [])
        for name, n in self.nodes.items():
            if n.op == "Input":
                ends[0].append(name)
            elif n.op == "Output":
                ends[1].append(name)
        self._ends = ends
        return ends

    def _index(self) -> dict[str, list[tuple[str, int]]]:
        """The consumer index, built now if it was not yet: consumers in insertion order, each one's inputs in order."""
        users = self._users
        if users is None:
            users = self._users = {name: [] for name in self.nodes}
            for name, node in self.nodes.items():
                _enter_inputs(users, name, node.inputs)
        return users

    def users(self, name: str) -> list[tuple[str, int]]:
        """Consumers of any output of `name` as (consumer, input index) pairs."""
        return list(self._index().get(name, ()))

    def user_count(self, name: str) -> int:
        """How many inputs read any output of `name` (`len(users(name))` without the copy). Without a consumer index, the
        counts of all nodes are taken at once (counting in C costs a fraction of building the index) and kept until an edit."""
        users = self._users
        if users is not None:
            return len(users.get(name, ()))
        counts = self._counts
        if counts is None:
            counts = self._counts = Counter(itertools.chain.from_iterable(node.inputs for node in self.nodes.values()))
            counts.pop(None, None)
            for ref in [ref for ref in counts if ":" in ref]:  # output k of a node counts for the node
                counts[parse_ref(ref)[0]] += counts.pop(ref)
        return counts.get(name, 0)

    def value_users(self, ref: str) -> list[tuple[str, int]]:
        """Consumers of one value reference."""
        name, idx = parse_ref(ref)
        return [(c, i) for c, i in self._index().get(name, ()) if parse_ref(self.nodes[c].inputs[i])[1] == idx]

    def share_groups(self) -> dict[str, list[str]]:
        """Sharing groups in insertion order: group name -> member node names (first one owns)."""
        groups: dict[str, list[str]] = {}
        for node in self.nodes.values():
            if node.share:
                groups.setdefault(node.share, []).append(node.name)
        return groups

    def param_owner(self, name: str) -> str:
        """The node whose parameters `name` uses (itself unless it shares with an earlier node)."""
        node = self.nodes[name]
        if not node.share:
            return name
        if self._owners is None:  # one pass for all groups, not one scan per shared node
            self._owners = {}
            for other in self.nodes.values():
                if other.share and other.share not in self._owners:
                    self._owners[other.share] = other.name
        return self._owners[node.share]

    def fresh_name(self, base: str) -> str:
        """`base` as a valid node name if it is free, else `base_k` with the smallest free k >= 1."""
        return self._fresh(_name_base(base))[0]

    def _fresh(self, base: str) -> tuple[str, int]:
        """`fresh_name` of a valid `base`, and the k of the `base_k` it gives (0 for `base` itself)."""
        nodes = self.nodes
        if base not in nodes:
            return base, 0
        i = self._suffix_floor.get(base, 1)
        name = f"{base}_{i}"
        while name in nodes:
            i += 1
            name = f"{base}_{i}"
        self._suffix_floor[base] = i
        return name, i

    def _name_freed(self, name: str) -> None:
        """A name left the graph: `fresh_name` may hand it out again."""
        base, _, suffix = name.rpartition("_")
        if suffix.isdigit() and len(suffix) < 19 and int(suffix) < self._suffix_floor.get(base, 0):
            self._suffix_floor[base] = max(int(suffix), 1)

    # ---- events --------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, dict], None]) -> None:
        """Call `listener(event, info)` after every edit ('add', 'erase', 'attr', 'input', 'rename', 'reorder')."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str, dict], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event: str, **info) -> None:
        for listener in list(self._listeners):
            listener(event, info)

    def _structure_changed(self) -> None:
        self._order_cache = None
        self._order_blocks = None

    def order_blocks(self) -> StableOrder:
        """The stable topological order in blocks (`ir.order.StableOrder`), made now if it was not yet; made, it is kept by
        every edit that keeps the order, and `order_keys()` holds its keys. Read it again after an edit of the structure."""
        if self._order_cache is None:
            self.topo_order()
        blocks = self._order_blocks
        if blocks is None:  # the cache's own order is the stable order
            blocks = self._order_blocks = StableOrder(list(self._order_cache), self._order_cache, dict(zip(self.nodes, range(len(self.nodes)))),
                                                      self.nodes, self._consumer_names)
        return blocks

    def _consumer_names(self, name: str) -> list[str]:
        return [c for c, _ in self._index()[name]]

    def _resort(self, name: str, index: int, old: str | None) -> set[str] | None:
        """Bring the cached order up to date after input `index` of `name` changed (it was `old`) by sorting where it changes
        (`StableOrder.resort`); returns the nodes that moved in it, or None when the order is to be sorted again."""
        before = list(self.nodes[name].inputs)
        before[index] = old
        moved = self.order_blocks().resort(name, {parse_ref(ref)[0] for ref in before if ref is not None})
        if moved is None:
            self._structure_changed()
        return moved

    # ---- edit primitives -----------------------------------------------------------------
    def add(
        self,
        op: str,
        inputs: Iterable[str | None] = (),
        name: str | None = None,
        attrs: dict | None = None,
        params: dict | None = None,
        share: str | None = None,
    ) -> Node:
        """Create a node; attributes are validated against the op's schema."""
        nodes = self.nodes
        opdef = registry.find(op)
        given = name is not None  # only a given name is checked: one from `fresh_name` is valid and free
        if not given:
            base = _op_base(op) if opdef is not None else _name_base(str(op).lower())
            name, suffix = self._fresh(base)
        if opdef is None:
            registry.get(op, f"node '{name}' field op")
        if given:
            if not (isinstance(name, str) and name.isascii() and name.isidentifier()):  # `is_node_name` inline
                raise GraphError(f"invalid node name {name!r} (letters, digits and '_', not starting with a digit)", f"node {name!r} field name")
            if name in nodes:
                raise GraphError(f"duplicate node name '{name}'", f"node '{name}' field name")
        out, resolved, lists = opdef.checked({} if attrs is None else attrs, name)
        inputs = list(inputs)
        for i, ref in enumerate(inputs):  # checked before anything changes; a bare name, the common case, is checked inline
            if ref is not None and (type(ref) is not str or ":" in ref or (producer := nodes.get(ref)) is None or producer.op == "Output"):
                self._check_ref(ref, name, i)
        node = Node(name, op, registry.own_attrs(out, lists), inputs, dict(params) if params else None, share, resolved)
        if share:
            self._owners = None
        if (op == "Input" or op == "Output") and self._ends is not None:
            self._ends[op == "Output"].append(name)
        nodes[name] = node
        self._counts = None
        if not given and suffix:  # every base_k up to this one is taken now: the next `fresh_name` starts after it
            self._suffix_floor[base] = suffix + 1
        users = self._users
        if users is not None:
            users[name] = []
            _enter_inputs(users, name, inputs)
        if self._order_cache is not None:  # the newest node comes last in the stable topological order
            if self._order_blocks is not None:
                self._order_blocks.append(name)
            else:
                self._order_cache[name] = self._order_end
                self._order_end += 1
        if len(nodes) >= LARGE_GRAPH and not len(nodes) % AGE_EVERY:
            age_young_objects()
        if self._listeners:
            self._emit("add", name=name)
        return node

    def add_plain(self, entries: Iterable[dict]) -> int:
        """Add the nodes `entries` describe, in order, as `add` would one by one, while each is the common case: a mapping
        with only PLAIN_FIELDS, a new valid name, a registered op other than Input and Output, inputs (a list) naming
        output 0 of nodes already in the graph, attributes (an object, or none) that `add` accepts and a share group name
        or none. One pass with those checks inlined, for loading large designs.

        Returns how many it added: it stops before the first entry that is not such a case, or whose input count the op
        does not take, which `add` then takes (and says what is wrong with it; `verify` refuses the count), and adds none
        while someone listens to edits. The nodes it adds need no check of `verify`'s own (see its `checked`).
        """
        if self._listeners:
            return 0
        if self._order_blocks is not None:
            self._structure_changed()
        self._counts = None
        nodes, users, order = self.nodes, self._users, self._order_cache
        ops = registry.all_ops()
        checked: dict = {}  # op, or (op, items, kinds) -> `OpDef.checked` of those attributes
        count = len(nodes)
        start, end = count, self._order_end
        try:
            for entry in entries:
                if type(entry) is not dict or not PLAIN_FIELDS.issuperset(entry):
                    break
                name = entry.get("name")
                if type(name) is not str or not name.isascii() or not name.isidentifier() or name in nodes:
                    break
                op = entry.get("op")
                opdef = ops.get(op)
                if opdef is None or op == "Input" or op == "Output":
                    break
                refs = entry.get("inputs", _NO_INPUTS)
                if type(refs) is not list and refs is not _NO_INPUTS:
                    break
                lo, hi = opdef.arity
                if not lo <= len(refs) <= (len(refs) if hi is None else hi):
                    break
                for ref in refs:
                    producer = nodes.get(ref) if type(ref) is str else None
                    if producer is None or producer.op == "Output":
                        break
                else:
                    share = entry.get("share")
                    if share is not None and type(share) is not str:
                        break
                    attrs = entry.get("attrs")
                    if attrs:  # `OpDef.checked`'s memo key, with the op: its common case, computed here once per node
                        kinds = tuple(map(type, attrs.values())) if type(attrs) is dict else None
                        key = (op, tuple(attrs.items()), kinds) if kinds is not None and registry.PLAIN_KINDS.issuperset(kinds) else None
                    else:
                        key = op if attrs is None or type(attrs) is dict else None
                    found = checked.get(key) if key is not None else None
                    if found is None:
                        try:
                            found = opdef.checked({} if attrs is None else attrs, name)
                        except DesignError:
                            break
                        if key is not None:
                            checked[key] = found
                    out, resolved, lists = found
                    nodes[name] = Node(name, op, registry.own_attrs(out, lists), list(refs), None, share, resolved)
                    if users is not None:
                        users[name] = []
                        _enter_inputs(users, name, refs)
                    if order is not None:
                        order[name] = end
                        end += 1
                    if share:
                        self._owners = None
                    count += 1
                    if count >= LARGE_GRAPH and not count % AGE_EVERY:
                        age_young_objects()
                    continue
                break
        except TypeError:  # an unhashable op: not the common case
            pass
        self._order_end = end
        return count - start

    def _check_ref(self, ref: str, name: str, index: int) -> None:
        """Refuse a reference that input `index` of node `name` cannot take."""
        if not isinstance(ref, str):
            raise GraphError(f"input reference must be a string, got {ref!r}", f"node '{name}' input {index}")
        producer = self.nodes.get(parse_ref(ref)[0])
        if producer is None:
            raise GraphError(f"input '{ref}' refers to no node", f"node '{name}' input {index}")
        if producer.op == "Output":
            raise GraphError(f"input '{ref}' is an Output node, which has no consumers", f"node '{name}' input {index}")

    def set_input(self, name: str, index: int, ref: str | None) -> None:
        """Point input `index` of `name` at `ref` (None disconnects). Appends when index == len(inputs)."""
        node = self[name]
        if not 0 <= index <= len(node.inputs):
            raise GraphError(f"input index {index} is out of range (the node has {len(node.inputs)} inputs)", f"node '{name}'")
        if ref is not None:
            self._check_ref(ref, name, index)
        if index == len(node.inputs):
            node.inputs.append(None)
        old = node.inputs[index]
        ready = self._ready_step(node)
        users = self._users
        self._counts = None
        if old is not None and users is not None:
            users[parse_ref(old)[0]].remove((name, index))
        node.inputs[index] = ref
        if ref is not None and users is not None:
            users[parse_ref(ref)[0]].append((name, index))
        now = self._ready_step(node)
        moved: set[str] | None = set() if ready is not None else None
        if now != ready:
            moved = {name} if self._moved_to_end(name, now) else self._resort(name, index, old)
        self._emit("input", name=name, index=index, old=old, new=ref, moved=moved)

    def _moved_to_end(self, name: str, ready: int | None) -> bool:
        """Move `name` to the end of the cached order when nothing reads it and its last producer (key `ready`) is now the
        order's last node, as when a node is put in front of an output; the sort would place it there and leave the rest
        as it was (a node nothing reads frees no other). False, changing nothing, in every other case."""
        cache = self._order_cache
        if cache is None or self._order_blocks is not None or ready is None:  # with blocks, `_resort` moves it
            return False
        if self._index()[name] or ready <= cache[name] or cache[next(reversed(cache))] != ready:
            return False
        del cache[name]
        cache[name] = self._order_end
        self._order_end += 1
        return True

    def _ready_step(self, node: Node) -> int | None:
        """The key of `node`'s last producer in the cached order (-1 with none), or None without a cached order.

        An input edit that leaves it as it was keeps the stable order: the node becomes ready at the same step of
        the sort, so every choice the sort makes stays the same.
        """
        cache = self._order_cache
        if cache is None:
            return None
        last = -1
        for ref in node.inputs:
            if ref is not None:
                last = max(last, cache[ref.rpartition(":")[0] if ":" in ref else ref])
        return last

    def remove_input(self, name: str, index: int) -> str | None:
        """Delete input slot `index` (for variadic ops such as Concat); returns the old reference."""
        node = self[name]
        if not 0 <= index < len(node.inputs):
            raise GraphError(f"input index {index} is out of range (the node has {len(node.inputs)} inputs)", f"node '{name}'")
        old = node.inputs[index]
        self.set_input(name, index, None)
        del node.inputs[index]
        for src in {parse_ref(ref)[0] for ref in node.inputs[index:] if ref is not None} if self._users is not None else ():
            src_users = self._users[src]
            for k, (c, i) in enumerate(src_users):
                if c == name and i > index:
                    src_users[k] = (c, i - 1)
        self._emit("input", name=name, index=index, old=old, new=None, moved=set())  # the order is as `set_input` left it
        return old

    def set_inputs(self, name: str, refs: Iterable[str | None]) -> None:
        node = self[name]
        refs = list(refs)
        for i, ref in enumerate(refs):
            if ref is not None:
                self._check_ref(ref, name, i)
        while len(node.inputs) > len(refs):
            self.remove_input(name, len(node.inputs) - 1)
        for i, ref in enumerate(refs):
            if i < len(node.inputs):
                if node.inputs[i] != ref:
                    self.set_input(name, i, ref)
            else:
                self.set_input(name, i, ref)

    def set_attr(self, name: str, key: str, value: Any) -> None:
        """Set (or with value None, reset to default) one attribute, validated."""
        node = self[name]
        attrs = dict(node.attrs)
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
        node._set_checked(node.opdef.checked(attrs, name))
        self._emit("attr", name=name, key=key)

    def set_attrs(self, name: str, attrs: dict) -> None:
        node = self[name]
        node._set_checked(node.opdef.checked(dict(attrs), name))
        self._emit("attr", name=name, key=None)

    def set_share(self, name: str, group: str | None) -> None:
        self[name].share = group or None
        self._owners = None
        self._emit("attr", name=name, key="share")

    def erase(self, name: str) -> Node:
        """Remove a node that has no consumers."""
        node = self[name]
        index = self._index()
        if index[name]:
            users = ", ".join(sorted({c for c, _ in index[name]}))
            raise GraphError(f"cannot erase '{name}': it still feeds {users}", f"node '{name}'")
        for i, ref in enumerate(node.inputs):
            if ref is not None:
                index[parse_ref(ref)[0]].remove((name, i))
        del self.nodes[name]
        del index[name]
        self._counts = None
        if node.share:
            self._owners = None
        if node.op in ("Input", "Output") and self._ends is not None:
            self._ends[node.op == "Output"].remove(name)
        self.layout.pop(name, None)
        if self.groups:
            drop_node(self.groups, name)
        if self._order_cache is not None:  # dropping a node nothing consumes leaves the others' order as it was
            if self._order_blocks is not None:
                self._order_blocks.remove(name)
            else:
                del self._order_cache[name]
        self._name_freed(name)
        self._emit("erase", name=name, producers=node.input_names())
        return node

    def replace_all_uses(self, old_ref: str, new_ref: str, exclude: Iterable[str] = ()) -> int:
        """Redirect every consumer of value `old_ref` to `new_ref`; returns how many inputs moved."""
        exclude = set(exclude)
        moved = 0
        for consumer, index in self.value_users(old_ref):
            if consumer in exclude:
                continue
            self.set_input(consumer, index, new_ref)
            moved += 1
        return moved

    def rename(self, old: str, new: str) -> None:
        """Rename a node and every reference to it."""
        if old == new:
            return
        node = self[old]
        if not is_node_name(new):
            raise GraphError(f"invalid node name {new!r}", f"node '{old}'")
        if new in self.nodes:
            raise GraphError(f"duplicate node name '{new}'", f"node '{old}'")
        index = self._index()
        self._counts = None
        users = index.pop(old)
        self.nodes = {(new if k == old else k): v for k, v in self.nodes.items()}
        node.name = new
        if node.share:
            self._owners = None
        if node.op in ("Input", "Output"):
            self._ends = None
        index[new] = users
        for src in {parse_ref(ref)[0] for ref in node.inputs if ref is not None}:
            src_users = index[new if src == old else src]
            for k, (c, i) in enumerate(src_users):
                if c == old:
                    src_users[k] = (new, i)
        for consumer, index in users:
            c = self.nodes[consumer]
            _, idx = parse_ref(c.inputs[index])
            c.inputs[index] = make_ref(new, idx)
        if old in self.layout:
            self.layout = {(new if k == old else k): v for k, v in self.layout.items()}
        if self.groups:
            rename_node(self.groups, old, new)
        if self._order_blocks is not None:
            self._order_blocks.rename(old, new)
            self._order_blocks.nodes = self.nodes
        elif self._order_cache is not None:
            self._order_cache = {(new if k == old else k): v for k, v in self._order_cache.items()}
        self._name_freed(old)
        self._emit("rename", old=old, new=new)

    def reorder(self, names: list[str]) -> None:
        """Put the nodes in the insertion order `names` (a permutation of the current names)."""
        if sorted(names) != sorted(self.nodes):
            raise GraphError("reorder needs every node name exactly once", f"graph '{self.name}'")
        self.nodes = {name: self.nodes[name] for name in names}
        self._owners = None
        self._ends = None
        self._structure_changed()
        self._emit("reorder")

    # ---- algorithms ----------------------------------------------------------------------
    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            for src in node.input_names():
                g.add_edge(src, node.name)
        return g

    def topo_order(self) -> list[str]:
        """Node names in a topological order (stable: ties broken by insertion order)."""
        if self._order_cache is None:
            order = list(self.nodes) if self._insertion_order_is_topological() else self._stable_topological_sort()
            if order is None:
                cycle = self.find_cycle()
                raise GraphError("graph has a cycle: " + " -> ".join(cycle), f"node '{cycle[0]}' inputs")
            self._keep_order(order)
        if self._order_blocks is not None:
            return self._order_blocks.names()
        return list(self._order_cache)

    def _keep_order(self, order: list[str]) -> None:
        """Cache `order` as the stable topological order, keyed by position (no blocks)."""
        self._order_cache = dict(zip(order, range(len(order))))
        self._order_end = len(order)

    def order_keys(self) -> dict[str, int]:
        """Each node's key in the stable topological order: increasing along `topo_order()`, not necessarily 0, 1, 2, ...
        A read-only view: read it again after an edit of the graph's structure (add, erase, input, rename, reorder)."""
        if self._order_cache is None:
            self.topo_order()
        return self._order_cache

    def _stable_topological_sort(self) -> list[str] | None:
        """Kahn's algorithm placing, of the nodes whose producers are all placed, the earliest inserted first; None
        when a cycle leaves nodes unplaced. It is networkx's lexicographical topological sort keyed by insertion
        position, run on the consumer index directly: building a DiGraph first would cost more than the sort."""
        names = list(self.nodes)
        position = dict(zip(names, range(len(names))))
        users = self._index()

        def consumers(name: str) -> list[str]:
            """The distinct consumers of `name` (most nodes have one, which needs no set)."""
            found = users[name]
            return [found[0][0]] if len(found) == 1 else list({c for c, _ in found})

        waiting = [0] * len(names)
        for name in names:
            for consumer in consumers(name):
                waiting[position[consumer]] += 1
        ready = [i for i, count in enumerate(waiting) if count == 0]  # ascending, so already a heap
        order = []
        pop, push = heapq.heappop, heapq.heappush
        while ready:
            name = names[pop(ready)]
            order.append(name)
            for consumer in consumers(name):
                i = position[consumer]
                waiting[i] -= 1
                if not waiting[i]:
                    push(ready, i)
        return order if len(order) == len(names) else None

    def _insertion_order_is_topological(self) -> bool:
        """True when every node comes after its producers; insertion order is then the stable topological order."""
        seen: set[str] = set()
        add = seen.add
        for name, node in self.nodes.items():
            for ref in node.inputs:
                if ref is not None and (ref if ":" not in ref else parse_ref(ref)[0]) not in seen:
                    return False
            add(name)
        return True

    def find_cycle(self) -> list[str]:
        try:
            edges = nx.find_cycle(self.to_networkx())
        except nx.NetworkXNoCycle:
            return []
        return [u for u, _ in edges] + [edges[0][0]]

    def generations(self) -> list[list[str]]:
        """Nodes grouped by depth (networkx topological generations), each in insertion order."""
        position = {name: i for i, name in enumerate(self.nodes)}
        return [sorted(gen, key=position.__getitem__) for gen in nx.topological_generations(self.to_networkx())]

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for consumer, _ in self._index().get(stack.pop(), ()):
                if consumer not in seen:
                    seen.add(consumer)
                    stack.append(consumer)
        return seen

    @paused_gc()
    def copy(self) -> "Graph":
        """Deep copy of structure and attributes; parameter arrays are shared (copy-on-write by passes)."""
        g = Graph(self.name)
        for node in self.nodes.values():
            n = Node(node.name, node.op, dict(node.attrs), list(node.inputs), dict(node._params) if node._params else None, node.share)
            if node._resolved is not None:  # shared again, or a copy of the node's own
                n._resolved = dict(node._resolved) if node._own else node._resolved
            g.nodes[n.name] = n
        g._users = None if self._users is None else {k: list(v) for k, v in self._users.items()}
        g._suffix_floor = dict(self._suffix_floor)
        if self._order_blocks is not None:
            g._keep_order(self._order_blocks.names())
        else:
            g._order_cache = None if self._order_cache is None else dict(self._order_cache)
            g._order_end = self._order_end
        g._ends = None if self._ends is None else (list(self._ends[0]), list(self._ends[1]))
        g.layout = dict(self.layout)
        g.groups = copy_groups(self.groups)
        return g


@paused_gc()
def verify(graph: Graph, check_attrs: bool = True, built: bool = False, checked: int = 0) -> None:
    """Check names, references, edge consistency, acyclicity, registered ops, attributes and arity.

    `check_attrs=False` skips validating attributes again, for a graph just built through `add`, which validated them.
    `built=True` is for a graph made only through the edit primitives (`add`, `set_input`, ...): its names, attributes,
    references to existing nodes and consumer index are right by construction, so only the rest is checked. With it,
    `checked` says that the first `checked` nodes in insertion order came from `add_plain`, or are Input nodes, whose
    input counts and references are right too.
    """
    nodes = graph.nodes
    users: dict[str, list[tuple[str, int]]] = defaultdict(list) if built else {name: [] for name in nodes}
    arity: dict[str, tuple[int, int | None]] = {}  # op -> (fewest, most) inputs, for the ops met so far
    items = itertools.islice(nodes.items(), checked, None) if built else nodes.items()
    for name, node in items:  # `where` strings are built only on failure: this loop runs once per node
        if not built and (not is_node_name(name) or node.name != name):
            raise GraphError(f"invalid node name {name!r}", f"node '{name}'")
        bounds = arity.get(node.op)
        if bounds is None:
            bounds = arity[node.op] = registry.get(node.op, f"node '{name}'").arity
        if check_attrs and not built:
            node.opdef.validate(node.attrs, where=f"node '{name}'")
        count = len(node.inputs)
        if count < bounds[0] or (bounds[1] is not None and count > bounds[1]):
            node.opdef.check_arity(count, f"node '{name}'")
        if built:  # inputs naming output 0 of a node: the edit primitives checked them when they were set
            for ref in node.inputs:
                if ref is None or ":" in ref:
                    break
            else:
                continue
        for i, ref in enumerate(node.inputs):
            if ref is None:
                raise GraphError(f"input {i} is not connected", f"node '{name}'")
            src, idx = parse_ref(ref) if ":" in ref else (ref, 0)
            producer = nodes.get(src)
            if producer is None:
                raise GraphError(f"input '{ref}' refers to no node", f"node '{name}' input {i}")
            if idx:  # every op but Output has an output 0
                nout = producer.opdef.num_outputs(producer.resolved)
                if idx >= nout:
                    raise GraphError(f"input '{ref}' asks for output {idx} of a node with {nout}", f"node '{name}' input {i}")
            if producer.op == "Output":
                raise GraphError(f"input '{ref}' is an Output node", f"node '{name}' input {i}")
            users[src].append((name, i))
    for name, found in users.items() if not built and graph._users is not None else ():  # an index not built yet is in step
        kept = graph._users.get(name, [])
        if found != kept and sorted(found) != sorted(kept):
            raise GraphError("consumer index out of step with inputs", f"node '{name}'")
    if not graph.inputs:
        raise GraphError("design has no inputs", f"graph '{graph.name}'")
    if not graph.outputs:
        raise GraphError("design has no outputs", f"graph '{graph.name}'")
    graph.order_keys()  # raises on a cycle
    groups = graph.share_groups()
    for group, members in groups.items():
        ops = {graph.nodes[m].op for m in members}
        if len(ops) > 1:
            raise AttrError(f"sharing group '{group}' mixes ops {sorted(ops)}", f"node '{members[1]}' share")
        attrs0 = graph.nodes[members[0]].resolved
        for m in members[1:]:
            if graph.nodes[m].resolved != attrs0:
                raise AttrError(f"node shares '{group}' with '{members[0]}' but its attributes differ", f"node '{m}' share")
