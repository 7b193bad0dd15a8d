"""The document: a Design, its incremental cost Analyzer and a QUndoStack of edits.

Views call the methods here; each edit becomes one undoable command from `commands.py`. The
controller listens to the graph's edit events, and after each command refreshes the analysis and
emits `graph_changed(Change)` naming exactly what the views must redraw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QUndoStack

from convstudio.backends.latency_model import find_model
from convstudio.backends.weights import has_params, save_design_and_weights
from convstudio.designer.gui import commands
from convstudio.designer.gui.fragments import add_spec, enclosed_groups, extract, node_spec, starter_attrs, starter_inputs, with_fresh_names
from convstudio.designer.gui.groups import folded_layout
from convstudio.designer.gui.layout import ROW, beside, bounds, free_offset, incremental_layout, layered_layout
from convstudio.designer.gui.recovery import read_recovery
from convstudio.ir.cost import Analyzer, CostReport
from convstudio.ir.design import Design, dumps, load, save
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph, is_node_name, parse_ref, paused_gc
from convstudio.ir.groups import Group, ancestors, copy_groups, group_of, members, prune_empty
from convstudio.ir.ops import registry
from convstudio.ir.templates import BLOCKS, build_template, insert_block

HEATMAP_METRICS = ("macs", "params", "memory", "latency")
MAX_DESIGN_NAME = 120


@dataclass
class Change:
    """Names touched since the last commit, by kind of edit."""

    added: set = field(default_factory=set)
    erased: set = field(default_factory=set)
    inputs: set = field(default_factory=set)
    attrs: set = field(default_factory=set)
    moved: set = field(default_factory=set)
    renamed: list = field(default_factory=list)
    recomputed: set = field(default_factory=set)
    reset: bool = False

    def record(self, event: str, info: dict) -> None:
        if event == "add":
            self.added.add(info["name"])
        elif event == "erase":
            self.erased.add(info["name"])
            self.added.discard(info["name"])
        elif event == "input":
            self.inputs.add(info["name"])
        elif event == "attr":
            self.attrs.add(info["name"])
        elif event == "rename":
            old, new = info["old"], info["new"]
            self.renamed.append((old, new))
            for names in (self.added, self.erased, self.inputs, self.attrs, self.moved):
                if old in names:
                    names.discard(old)
                    names.add(new)

    def touched(self) -> set:
        """Nodes whose text, ports or colour may have changed (moves only change positions)."""
        return self.added | self.inputs | self.attrs | self.recomputed | {new for _, new in self.renamed}


def default_design() -> Design:
    """The example a new window opens with: the LeNet template."""
    return Design(build_template("lenet"))


class Controller(QObject):
    """Owns the design being edited; every edit goes through the undo stack."""

    graph_changed = pyqtSignal(object)
    report_changed = pyqtSignal(object)
    selection_changed = pyqtSignal(list)
    modified_changed = pyqtSignal(bool)
    design_replaced = pyqtSignal()
    heatmap_changed = pyqtSignal(str)
    measured_changed = pyqtSignal()
    message = pyqtSignal(str)

    def __init__(self, design: Design | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.convention = "flops"
        self.batch: int | None = None
        self.heatmap = "macs"
        self.latency_model = find_model()  # predicts the latency column; None until `profile --calibrate` stored one
        self.profile = None  # the backends.profile.ProfileReport whose times fill the measured column
        self._measured: dict[str, tuple[tuple, float]] = {}  # node -> (what it computed when profiled, ms)
        self.measured: dict[str, float] = {}  # ms of the profiled nodes that still compute what they computed then
        self.routes: dict = {}
        self.laid_out: dict = {}  # where the auto-layout that gave `routes` put each node
        self._last_layout: tuple | None = None  # (graph, its structure, its layered layout): auto-layout of an unchanged graph reuses it
        self.selection: list[str] = []
        self.clipboard: tuple[list, dict, dict] = ([], {}, {})  # node specs, their positions, the groups wholly inside them
        self.paste_count = 0
        self.design: Design | None = None
        self.analyzer: Analyzer | None = None
        self.report: CostReport | None = None
        self.accuracy_record: tuple | None = None  # (state, accuracy, source) of the last measurement
        self._change = Change()
        self._attach(design or default_design())

    def _on_clean_changed(self, clean: bool) -> None:
        self.modified_changed.emit(not clean)

    # ---- document --------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self.design.graph

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def _attach(self, design: Design) -> None:
        if self.design is not None:
            self._unwatch()
        self.design = design
        self._watch(design.graph)
        self.selection = []
        self.profile, self._measured, self.measured = None, {}, {}  # a profile belongs to the design it measured

    def _unwatch(self) -> None:
        self.graph.unsubscribe(self._on_graph_event)
        self.analyzer.close()

    def close(self) -> None:
        """Stop listening to the design's graph (its window closed): later edits of that graph reach no view."""
        self._unwatch()

    def _watch(self, graph: Graph, routes: tuple | None = None) -> None:
        """Place, subscribe to and analyse `graph` (the design's graph); the views redraw it all.
        `routes` ((routes, laid_out) known for this graph) spares laying it out again for its edge routes."""
        if routes is None:
            self._place_unplaced(graph)
        else:
            self.routes, self.laid_out = routes
        graph.subscribe(self._on_graph_event)
        self.analyzer = Analyzer(graph, self.convention, self.batch, self.latency_model)
        self._change = Change(reset=True)

    def _place_unplaced(self, graph: Graph) -> None:
        """Lay out a graph that has no positions; in a partly placed graph (a strategy or fusion
        applied) put each new node one row below its producers. Keeps the layout's edge routes."""
        layout = self._layered(graph)
        if not graph.layout:
            graph.layout.update(layout.positions)
        else:
            for name in graph.topo_order():
                if name not in graph.layout:
                    graph.layout[name] = _below_producers(graph, name)
        self.routes = self._routes_matching(graph, layout)
        self.laid_out = layout.positions

    def _layered(self, graph: Graph):
        """The layered layout of `graph`, computed again only when its nodes, their order or their inputs changed."""
        structure = [(name, tuple(node.inputs)) for name, node in graph.nodes.items()]
        if self._last_layout is None or self._last_layout[0] is not graph or self._last_layout[1] != structure:
            self._last_layout = (graph, structure, layered_layout(graph))
        return self._last_layout[2]

    def _routes_matching(self, graph: Graph, layout) -> dict:
        routes = {}
        for (dst, index), points in layout.routes.items():
            src = parse_ref(graph.nodes[dst].inputs[index])[0]
            ends = (layout.positions[src], layout.positions[dst])
            routes[(dst, index)] = (ends, points)
        return routes

    def route(self, dst: str, index: int) -> list | None:
        """Waypoints of the edge into (dst, index) if both ends still sit where the layout put them."""
        entry = self.routes.get((dst, index))
        if entry is None:
            return None
        ends, points = entry
        ref = self.graph.nodes[dst].inputs[index] if dst in self.graph.nodes else None
        if ref is None:
            return None
        src = parse_ref(ref)[0]
        layout = self.graph.layout
        if (tuple(layout.get(src, ())), tuple(layout.get(dst, ()))) != (tuple(ends[0]), tuple(ends[1])):
            return None
        return points

    def load_design(self, design: Design) -> None:
        """Start editing `design` with a fresh undo history."""
        self.undo_stack.clear()
        self._attach(design)
        self.commit()
        self.undo_stack.setClean()
        self.design_replaced.emit()
        self.modified_changed.emit(False)

    def open(self, path: str | Path) -> str | None:
        """Load a design file; on failure return the one-line error and keep the current design."""
        try:
            design = load(path)
        except DesignError as e:
            return e.line()
        self.load_design(design)
        return None

    def new_from_template(self, name: str) -> str | None:
        try:
            graph = build_template(name)
        except DesignError as e:
            return e.line()
        self.load_design(Design(graph))
        return None

    def new_blank(self, name: str = "untitled") -> None:
        """Start an empty design (File > New)."""
        self.load_design(Design(Graph(name)))

    def design_name_error(self, name: str) -> str | None:
        """Why `name` cannot name the design (it becomes the proposed file name), or None."""
        if not name.strip():
            return "a design needs a name"
        if any(ch in name for ch in '/\\:*?"<>|') or not name.isprintable():
            return "a design name cannot hold / \\ : * ? \" < > | or control characters (it becomes the file name)"
        if len(name) > MAX_DESIGN_NAME:
            return f"a design name has at most {MAX_DESIGN_NAME} characters"
        return None

    def rename_design(self, name: str) -> str | None:
        """Rename the design (one undoable step); returns why not instead when the name is unfit."""
        name = name.strip()
        reason = self.design_name_error(name)
        if reason is None and name != self.design.name:
            self.push(commands.RenameDesign(self, name))
        return reason

    def save(self, path: str | Path | None = None) -> str | None:
        """Save atomically; returns the one-line error, or None when saved."""
        target = path or self.design.path
        if target is None:
            return "no file name yet, use Save As"
        try:
            weights = self._trained_copy()
            if weights is not None:
                save_design_and_weights(self.design, target, weights)  # the weights the design holds go beside it, as one pair
            else:
                save(self.design, target)
        except DesignError as e:
            return e.line()
        except OSError as e:
            return f"cannot write: {e.strerror or e}, file '{target}'"
        self.undo_stack.setClean()
        return None

    def _trained_copy(self) -> Graph | None:
        """A copy of the graph when every layer holds its parameters (after a training run in the designer), else None."""
        if not any(node.params for node in self.graph.nodes.values()):
            return None
        copy = self.graph.copy()  # the shape pass below must not touch the live graph's analysis
        try:
            return copy if has_params(copy) else None
        except DesignError:
            return None

    def dumps(self) -> str:
        return dumps(self.design)

    # ---- analysis --------------------------------------------------------------------------
    def _on_graph_event(self, event: str, info: dict) -> None:
        self._change.record(event, info)
        if event == "rename":
            old, new = info["old"], info["new"]
            self.routes = {(new if d == old else d, i): v for (d, i), v in self.routes.items()}
            self.laid_out = {(new if n == old else n): p for n, p in self.laid_out.items()}
            self.selection = [new if n == old else n for n in self.selection]

    def note_moved(self, names) -> None:
        self._change.moved.update(n for n in names if n in self.graph.nodes)

    def commit(self) -> None:
        """Refresh shapes and costs of what changed, then tell the views."""
        change, self._change = self._change, Change()
        self.report = self.analyzer.refresh()
        change.recomputed |= set(self.analyzer.recomputed)  # set_convention marks every node
        change.recomputed |= self.analyzer.share_changed  # a sharing group's member that can or no longer can use its parameters
        if self._measured:
            self._match_measured(change)
        self.selection = [n for n in self.selection if n in self.graph.nodes]
        self.graph_changed.emit(change)
        self.report_changed.emit(self.report)

    def swap_graph(self, graph: Graph, training: dict, weights: str | None, routes: tuple | None = None) -> None:
        self._unwatch()
        self.design.graph = graph
        self.design.training = training
        self.design.weights = weights
        self._watch(graph, routes)

    def set_convention(self, convention: str, batch: int | None) -> None:
        self.convention = convention
        self.batch = batch
        self.analyzer.set_convention(convention, batch)
        self._change = Change(recomputed=set(self.graph.nodes))
        self.commit()

    def set_latency_model(self, model) -> None:
        """Predict latency with `model` (a LatencyTable; None: no prediction); every node is recomputed."""
        self.latency_model = model
        self.analyzer.latency = model
        self.analyzer.invalidate()
        self._change = Change(recomputed=set(self.graph.nodes))
        self.commit()

    def set_profile(self, report) -> None:
        """Show a measured profile (a ProfileReport; None drops it): its per-node times fill the measured column."""
        self.profile = report
        nodes = report.nodes if report is not None else []
        self._measured = {n.name: (self._work(n.name), n.latency_ms) for n in nodes if n.name in self.graph.nodes}
        self.measured = {name: ms for name, (_, ms) in self._measured.items()}
        self.measured_changed.emit()

    def _work(self, name: str) -> tuple:
        """What a node computes, as far as its time goes: op, attributes, input and output shapes."""
        node = self.graph.nodes[name]
        shapes = self.analyzer.shapes
        ins = [shapes.get(parse_ref(ref)[0]) for ref in node.inputs if ref is not None]
        return (node.op, str(node.resolved), str(ins), str(node.meta.get("shapes")))

    def _match_measured(self, change: Change) -> None:
        """A measured time shows while its node computes what it computed when profiled (so undo brings it back)."""
        for old, new in change.renamed:
            for table in (self._measured, self.measured):
                if old in table:
                    table[new] = table.pop(old)
        names = self._measured if change.reset else (change.touched() | change.erased) & self._measured.keys()
        for name in names:
            sig, ms = self._measured[name]
            if name in self.graph.nodes and self._work(name) == sig:
                self.measured[name] = ms
            else:
                self.measured.pop(name, None)

    @property
    def profile_stale(self) -> bool:
        """Whether layers changed since the shown profile measured them (their measured times are hidden)."""
        return len(self.measured) < len(self._measured)

    def latency_of(self, name: str) -> float | None:
        """A node's latency in ms: measured when the profile still applies to it, else predicted, else None."""
        if name in self.measured:
            return self.measured[name]
        cost = self.analyzer.costs.get(name)
        return cost.latency_ms if cost is not None else None

    def set_heatmap(self, metric: str) -> None:
        if metric not in HEATMAP_METRICS:
            raise ValueError(f"heatmap metric must be one of {HEATMAP_METRICS}")
        self.heatmap = metric
        self.heatmap_changed.emit(metric)

    def state(self) -> tuple:
        """The document as it is now: the design and the last edit on the undo stack that is not a move (an edit, undo or redo changes it)."""
        stack, index = self.undo_stack, self.undo_stack.index() - 1
        while index >= 0 and isinstance(stack.command(index), (commands.MoveNodes, commands.SetLayout)):
            index -= 1
        return (self.design, stack.command(index))

    def record_accuracy(self, accuracy: float, source: str, state: tuple | None = None) -> None:
        """Note the accuracy measured on the design as it was in `state` (default: as it is now) and by what."""
        self.accuracy_record = (state or self.state(), accuracy, source)

    def measured_accuracy(self) -> tuple[float, str] | None:
        """(accuracy, what measured it) when it was measured on the design exactly as it is now, else None."""
        if self.accuracy_record is None:
            return None
        (design, command), accuracy, source = self.accuracy_record
        now_design, now_command = self.state()
        return (accuracy, source) if design is now_design and command is now_command else None

    def select(self, names: list[str]) -> None:
        names = [n for n in names if n in self.graph.nodes]
        if names != self.selection:
            self.selection = names
            self.selection_changed.emit(list(names))

    # ---- edits -----------------------------------------------------------------------------
    def push(self, command) -> None:
        self.undo_stack.push(command)

    def add_node(self, op: str, pos: tuple[float, float]) -> str:
        """Add a node of `op` with starter attributes at scene position `pos`; returns its name."""
        registry.get(op)
        name = self.graph.fresh_name(op.lower())
        spec = {"name": name, "op": op, "attrs": starter_attrs(op), "inputs": starter_inputs(op), "params": {}, "share": None}
        self.push(commands.AddNodes(self, [spec], {name: _round(pos)}, f"Add {op}"))
        return name

    def add_op_after(self, op: str, ref: str, consumer: tuple[str, int] | None = None) -> str:
        """Add a node of `op` fed by value `ref` (an op dropped on an output port) or, with `consumer` (dst, index),
        spliced into the edge from `ref` to that input (an op dropped on an edge); one undoable step. The node goes
        where the incremental layout puts it, the nodes below moving down to make room. Returns its name."""
        opdef = registry.get(op)
        if opdef.arity[1] == 0 or (op == "Output" and consumer is not None):
            raise DesignError(f"{op} cannot go between two nodes" if consumer else f"{op} takes no input", "drop")
        name = self.graph.fresh_name(op.lower())
        inputs = [ref] + [None] * (max(opdef.arity[0], 1) - 1)
        spec = {"name": name, "op": op, "attrs": starter_attrs(op), "inputs": inputs, "params": {}, "share": None}
        scratch = self.graph.copy()
        add_spec(scratch, spec)
        rewire = []
        if consumer is not None:
            dst, index = consumer
            rewire.append((dst, index, self.graph.nodes[dst].inputs[index], name))
            scratch.set_input(dst, index, name)
        layout = self.graph.layout
        tidy = incremental_layout(scratch, {n: layout[n] for n in self.graph.nodes if n in layout})
        moves = {n: p for n, p in tidy.items() if n in layout and tuple(layout[n]) != p}
        text = f"Insert {op} into {parse_ref(ref)[0]} → {consumer[0]}" if consumer else f"Add {op} after {parse_ref(ref)[0]}"
        self.push(commands.AddNodes(self, [spec], {name: tidy[name]}, text, rewire, moves))
        return name

    def insert_template(self, name: str, pos: tuple[float, float]) -> list[str]:
        """Add a whole template's nodes (fresh names) with their layered layout, top-left at `pos`, or beside
        the design (right of its bounding box, tops aligned) when it would land on the design."""
        graph = build_template(name)
        positions = layered_layout(graph).positions
        here = [self.graph.layout[n] for n in self.graph.nodes if n in self.graph.layout]
        design, block = bounds(here), bounds(positions.values())
        width, height = block[2] - block[0], block[3] - block[1]
        if design is not None and pos[0] < design[2] and design[0] < pos[0] + width and pos[1] < design[3] and design[1] < pos[1] + height:
            pos = beside(here)
        return self._paste_specs(extract(graph, graph.nodes), positions, pos, f"Insert template {name}", graph.groups)

    def insert_block(self, name: str, after: str) -> list[str]:
        """Insert block `name` after value `after`; its consumers are moved onto the block's output.
        The block's nodes go where the incremental layout puts them, the nodes below moving down to make room."""
        if name not in BLOCKS:
            raise DesignError(f"unknown block '{name}'", "block")
        scratch = self.graph.copy()
        out, new_names = insert_block(scratch, name, after)
        specs = [node_spec(scratch.nodes[n]) for n in new_names]
        rewire = [(c, i, self.graph.nodes[c].inputs[i], out) for c, i in self.graph.value_users(after)]
        for consumer, index, _, ref in rewire:
            scratch.set_input(consumer, index, ref)
        layout = self.graph.layout
        tidy = incremental_layout(scratch, {n: layout[n] for n in self.graph.nodes if n in layout})
        positions = {n: tidy[n] for n in new_names}
        moves = {n: p for n, p in tidy.items() if n in layout and tuple(layout[n]) != p}
        self.push(commands.AddNodes(self, specs, positions, f"Insert block {name}", rewire, moves))
        return new_names

    def _paste_specs(self, specs: list[dict], positions: dict, at: tuple[float, float], text: str, groups: dict | None = None) -> list[str]:
        """Add `specs` (fresh names) keeping their relative `positions`, top-left at `at`, or as near to its
        right as no node overlaps one already there; `groups` of those nodes come along, renamed where taken."""
        fresh = with_fresh_names(self.graph, specs)
        xs = [positions[s["name"]][0] for s in specs if s["name"] in positions] or [0.0]
        ys = [positions[s["name"]][1] for s in specs if s["name"] in positions] or [0.0]
        dx, dy = at[0] - min(xs), at[1] - min(ys)
        placed = {}
        for old, new in zip(specs, fresh):
            px, py = positions.get(old["name"], (min(xs), min(ys)))
            placed[new["name"]] = (px + dx, py + dy)
        layout = self.graph.layout
        shift = free_offset(placed, {n: layout[n] for n in self.graph.nodes if n in layout})
        placed = {n: _round((x + shift, y)) for n, (x, y) in placed.items()}
        renamed = {old["name"]: new["name"] for old, new in zip(specs, fresh)}
        self.push(commands.AddNodes(self, fresh, placed, text, groups=self._fresh_groups(groups or {}, renamed)))
        return [s["name"] for s in fresh]

    def _fresh_groups(self, groups: dict, renamed: dict[str, str]) -> dict:
        """`groups` with their nodes renamed as `renamed` says and group names that clash with the design's made unique."""
        taken = set(self.graph.groups) | set(self.graph.nodes) | set(renamed.values())
        names = {}
        for name in groups:
            new, k = name, 1
            while new in taken:
                new, k = f"{name}_{k}", k + 1
            taken.add(new)
            names[name] = new
        return {names[g.name]: Group(names[g.name], [renamed[n] for n in g.nodes if n in renamed], names.get(g.parent), g.collapsed)
                for g in groups.values()}

    def delete(self, names: list[str]) -> None:
        names = [n for n in names if n in self.graph.nodes]
        if names:
            self.push(commands.DeleteNodes(self, names))

    def can_connect(self, src_ref: str, dst: str, index: int) -> str | None:
        """Why the edge src_ref -> (dst, index) cannot be made, or None when it can."""
        graph = self.graph
        src, k = parse_ref(src_ref)
        if src not in graph.nodes or dst not in graph.nodes:
            return "no such node"
        if graph.nodes[src].op == "Output":
            return f"'{src}' is an Output node and has no outputs"
        node = graph.nodes[dst]
        hi = node.opdef.arity[1]
        if index > len(node.inputs) or (hi is not None and index >= hi):
            return f"{node.op} '{dst}' has no input {index}"
        if src == dst or src in graph.descendants(dst):
            return f"connecting {src} to {dst} would make a cycle"
        return None

    def connect(self, src_ref: str, dst: str, index: int) -> str | None:
        """Feed value `src_ref` into input `index` of `dst` (index == number of inputs appends)."""
        reason = self.can_connect(src_ref, dst, index)
        if reason:
            self.message.emit(reason)
            return reason
        after = list(self.graph.nodes[dst].inputs)
        if index == len(after):
            after.append(src_ref)
        else:
            after[index] = src_ref
        self.push(commands.SetInputs(self, dst, after, f"Connect {src_ref} to {dst}"))
        return None

    def disconnect(self, dst: str, index: int) -> None:
        """Remove the edge into input `index` of `dst`; a variadic op's extra slot disappears."""
        node = self.graph.nodes[dst]
        after = list(node.inputs)
        lo, hi = node.opdef.arity
        if hi is None and len(after) > lo:
            del after[index]
        else:
            after[index] = None
        self.push(commands.SetInputs(self, dst, after, f"Disconnect input {index} of {dst}"))

    def move(self, positions: dict) -> None:
        layout = self.graph.layout
        positions = {n: _round(p) for n, p in positions.items() if n in self.graph.nodes and tuple(layout.get(n, ())) != _round(p)}
        if positions:
            self.push(commands.MoveNodes(self, positions))

    def nudge(self, names: list[str], dx: float, dy: float, repeat: bool = False) -> None:
        """Move `names` by (dx, dy) (arrow keys); `repeat` (a held key's auto-repeat) joins the previous nudge's undo step."""
        layout = self.graph.layout
        positions = {n: _round((layout[n][0] + dx, layout[n][1] + dy)) for n in names if n in self.graph.nodes and n in layout}
        if positions:
            self.push(commands.NudgeNodes(self, positions, repeat))

    @paused_gc()
    def auto_layout(self) -> None:
        layout = self._layered(self.graph)
        self.push(commands.SetLayout(self, layout.positions, self._routes_matching(self.graph, layout)))

    def attr_error(self, name: str, key: str, value) -> str | None:
        """Why setting attribute `key` of `name` to `value` is invalid, or None."""
        try:
            self._validated_attrs(name, key, value)
        except DesignError as e:
            return e.what
        return None

    def _validated_attrs(self, name: str, key: str, value) -> dict:
        node = self.graph.nodes[name]
        attrs = dict(node.attrs)
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
        return node.opdef.validate(attrs, where=f"node '{name}'")

    def set_attr(self, name: str, key: str, value) -> str | None:
        """Set one attribute (None resets it to the default); returns the error line instead when invalid."""
        try:
            attrs = self._validated_attrs(name, key, value)
        except DesignError as e:
            return e.line()
        if attrs != self.graph.nodes[name].attrs:
            self.push(commands.SetAttrs(self, name, attrs, f"Set {name}.{key}"))
        return None

    def set_attr_of_many(self, names: list[str], key: str, value) -> str | None:
        """Set attribute `key` of every node in `names` to `value` (None: back to the default) in one undoable step;
        returns the first node's error line instead when the value does not suit one of them."""
        after = {}
        for name in names:
            try:
                attrs = self._validated_attrs(name, key, value)
            except DesignError as e:
                return e.line()
            if attrs != self.graph.nodes[name].attrs:
                after[name] = attrs
        if after:
            self.push(commands.SetAttrsOfMany(self, after, f"Set {key} of {len(after)} node{'s' if len(after) != 1 else ''}"))
        return None

    def rename_error(self, old: str, new: str) -> str | None:
        if new == old:
            return None
        if not is_node_name(new):
            return "a name uses letters, digits and '_' and does not start with a digit"
        if new in self.graph.nodes:
            return f"a node named '{new}' already exists"
        return None

    def rename(self, old: str, new: str) -> str | None:
        reason = self.rename_error(old, new)
        if reason is None and new != old:
            self.push(commands.Rename(self, old, new))
        return reason

    def set_share(self, name: str, group: str | None) -> str | None:
        group = (group or "").strip() or None
        if group is not None and not is_node_name(group):
            return "a group name uses letters, digits and '_'"
        if group != self.graph.nodes[name].share:
            self.push(commands.SetShare(self, name, group))
        return None

    def replace_graph(self, graph: Graph, text: str, training: dict | None = None, weights: str | None = None, tidy: bool = True) -> None:
        """Replace the whole graph in one undoable step (strategy or fusion applied, recovery). With `tidy`,
        `graph` is a rewrite of the current one: its layout becomes the incremental layout around the change."""
        if tidy:
            old = self.graph.layout
            kept = {n: old[n] for n in graph.nodes if n in old}
            gone = {n: p for n, p in old.items() if n not in graph.nodes}
            graph.layout.clear()
            graph.layout.update(incremental_layout(graph, kept, gone))
        self.push(commands.ReplaceGraph(self, graph, text, training, weights, keep_routes=tidy))

    def recover(self, text: str, source: str) -> str | None:
        """Replace the design with a recovered copy (undoable); returns the error line on failure."""
        try:
            recovered = read_recovery(text, source)
        except DesignError as e:
            return e.line()
        self.replace_graph(recovered.graph, "Recover autosaved design", recovered.training, recovered.weights, tidy=False)
        return None

    def copy(self, names: list[str] | None = None) -> int:
        names = self.selection if names is None else names
        specs = extract(self.graph, names)
        self.clipboard = (specs, {s["name"]: self.graph.layout.get(s["name"], (0.0, 0.0)) for s in specs}, enclosed_groups(self.graph.groups, names))
        self.paste_count = 0
        return len(specs)

    def paste(self) -> list[str]:
        """Add the copied nodes (and the edges and groups among them) under fresh names, offset from the originals."""
        specs, positions, _ = self.clipboard
        if not specs:
            return []
        self.paste_count += 1
        xs = [p[0] for p in positions.values()]
        ys = [p[1] for p in positions.values()]
        return self.paste_at((min(xs) + 40.0 * self.paste_count, min(ys) + 40.0 * self.paste_count))

    def paste_at(self, pos: tuple[float, float]) -> list[str]:
        """Paste the copied nodes with the top-left of their block at scene point `pos` (the canvas menu's Paste here),
        with the groups that lay wholly inside the copy, renamed where taken, in the same undo step."""
        specs, positions, groups = self.clipboard
        if not specs:
            return []
        names = self._paste_specs(specs, positions, pos, f"Paste {len(specs)} node{'s' if len(specs) != 1 else ''}", groups)
        self.select(names)
        return names

    # ---- groups ----------------------------------------------------------------------------
    def note_groups(self) -> None:
        """The groups changed (made, renamed, folded): the views redraw everything."""
        self._change.reset = True

    def group_error(self, name: str, old: str | None = None) -> str | None:
        """Why `name` cannot name a group (renaming `old`), or None."""
        if not name or not name.strip():
            return "a group needs a name"
        if name != old and name in self.graph.groups:
            return f"a group named '{name}' already exists"
        if name in self.graph.nodes:
            return f"'{name}' already names a node"
        return None

    def make_group(self, names: list[str], name: str) -> str | None:
        """Group the nodes `names` as `name` (one undoable step); returns the error line instead when it cannot.

        A group whose members are all among `names` moves into the new group whole; the other nodes leave their
        groups for it. The new group sits inside the innermost group that held all of them."""
        name = name.strip()
        chosen = [n for n in dict.fromkeys(names) if n in self.graph.nodes]
        reason = self.group_error(name) or (None if chosen else "select the nodes to group first")
        if reason:
            return reason
        groups = copy_groups(self.graph.groups)
        picked = set(chosen)
        whole = [g for g in groups if set(members(groups, g)) <= picked and members(groups, g)]
        whole = [g for g in whole if groups[g].parent not in whole]
        covered = {n for g in whole for n in members(groups, g)}
        loose = [n for n in chosen if n not in covered]
        places = [groups[g].parent for g in whole] + [group_of(groups, n) for n in loose]
        chains = [[p, *ancestors(groups, p)] if p else [] for p in places]
        common = [g for g in chains[0] if all(g in c for c in chains[1:])] if chains else []
        for g in whole:
            groups[g].parent = name
        for n in loose:
            for g in groups.values():
                if n in g.nodes:
                    g.nodes.remove(n)
        groups[name] = Group(name, loose, common[0] if common else None)
        for g in list(groups):
            prune_empty(groups, g)
        self.push(commands.SetGroups(self, groups, {}, f"Group {len(chosen)} nodes as {name}"))
        return None

    def rename_group(self, old: str, new: str) -> str | None:
        new = new.strip()
        if old not in self.graph.groups:
            return f"no group named '{old}'"
        reason = self.group_error(new, old)
        if reason or new == old:
            return reason
        groups = {}
        for key, g in copy_groups(self.graph.groups).items():
            if g.parent == old:
                g.parent = new
            if key == old:
                g.name = new
            groups[g.name] = g
        self.push(commands.SetGroups(self, groups, {}, f"Rename group {old} to {new}"))
        return None

    def ungroup(self, name: str) -> None:
        """Dissolve group `name`: its nodes and child groups go to its parent."""
        if name not in self.graph.groups:
            return
        groups = copy_groups(self.graph.groups)
        gone = groups.pop(name)
        for g in groups.values():
            if g.parent == name:
                g.parent = gone.parent
        if gone.parent is not None:
            groups[gone.parent].nodes.extend(gone.nodes)
        self.push(commands.SetGroups(self, groups, {}, f"Ungroup {name}"))

    def set_collapsed(self, names: list[str], collapsed: bool) -> None:
        """Fold (or unfold) groups `names` in one undoable step; the design is laid out again as it is then drawn."""
        groups = copy_groups(self.graph.groups)
        names = [n for n in names if n in groups and groups[n].collapsed != collapsed]
        if not names:
            return
        for g in names:
            groups[g].collapsed = collapsed
        layout = self.graph.layout
        moves = {n: p for n, p in folded_layout(self.graph, groups).items() if tuple(layout.get(n, ())) != p}
        verb = "Collapse" if collapsed else "Expand"
        self.push(commands.SetGroups(self, groups, moves, f"{verb} {', '.join(names[:3])}{'...' if len(names) > 3 else ''}"))

    def collapse_group(self, name: str) -> None:
        self.set_collapsed([name], True)

    def expand_group(self, name: str) -> None:
        self.set_collapsed([name], False)

    def collapse_all(self) -> None:
        """Fold every group: the design reads as its top-level groups and the nodes outside them."""
        self.set_collapsed(list(self.graph.groups), True)

    def expand_all(self) -> None:
        self.set_collapsed(list(self.graph.groups), False)


def _round(pos) -> tuple[float, float]:
    return (round(float(pos[0]), 2), round(float(pos[1]), 2))


def _below_producers(graph: Graph, name: str) -> tuple[float, float]:
    placed = [graph.layout[src] for src in graph.nodes[name].input_names() if src in graph.layout]
    if not placed:
        return (0.0, 0.0)
    x = sum(p[0] for p in placed) / len(placed)
    return _round((x, max(p[1] for p in placed) + ROW))
