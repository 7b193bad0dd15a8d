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

from convstudio.backends.weights import has_params, save_design_and_weights
from convstudio.designer.gui import commands
from convstudio.designer.gui.fragments import extract, node_spec, starter_attrs, starter_inputs, with_fresh_names
from convstudio.designer.gui.layout import ROW, layered_layout
from convstudio.designer.gui.recovery import read_recovery
from convstudio.ir.cost import Analyzer, CostReport
from convstudio.ir.design import Design, dumps, load, save
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import NAME_RE, Graph, parse_ref
from convstudio.ir.ops import registry
from convstudio.ir.templates import BLOCKS, build_template, insert_block

HEATMAP_METRICS = ("macs", "params", "memory")


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
    message = pyqtSignal(str)

    def __init__(self, design: Design | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.convention = "flops"
        self.batch: int | None = None
        self.heatmap = "macs"
        self.routes: dict = {}
        self.selection: list[str] = []
        self.clipboard: tuple[list, dict] = ([], {})
        self.paste_count = 0
        self.design: Design | None = None
        self.analyzer: Analyzer | None = None
        self.report: CostReport | None = None
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

    def _unwatch(self) -> None:
        self.graph.unsubscribe(self._on_graph_event)
        self.analyzer.close()

    def close(self) -> None:
        """Stop listening to the design's graph (its window closed): later edits of that graph reach no view."""
        self._unwatch()

    def _watch(self, graph: Graph) -> None:
        """Place, subscribe to and analyse `graph` (the design's graph); the views redraw it all."""
        self._place_unplaced(graph)
        graph.subscribe(self._on_graph_event)
        self.analyzer = Analyzer(graph, self.convention, self.batch)
        self._change = Change(reset=True)

    def _place_unplaced(self, graph: Graph) -> None:
        """Lay out a graph that has no positions; in a partly placed graph (a strategy or fusion
        applied) put each new node one row below its producers. Keeps the layout's edge routes."""
        layout = layered_layout(graph)
        if not graph.layout:
            graph.layout.update(layout.positions)
        else:
            for name in graph.topo_order():
                if name not in graph.layout:
                    graph.layout[name] = _below_producers(graph, name)
        self.routes = self._routes_matching(graph, layout)

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

    def save(self, path: str | Path | None = None) -> str | None:
        """Save atomically; returns the one-line error, or None when saved."""
        target = path or self.design.path
        if target is None:
            return "no file name yet, use Save As"
        try:
            weights = self._trained_copy() if Path(target) != self.design.path else None
            if weights is not None:
                save_design_and_weights(self.design, target, weights)  # Save As: the trained weights go beside the new file
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
            self.selection = [new if n == old else n for n in self.selection]

    def note_moved(self, names) -> None:
        self._change.moved.update(n for n in names if n in self.graph.nodes)

    def commit(self) -> None:
        """Refresh shapes and costs of what changed, then tell the views."""
        change, self._change = self._change, Change()
        self.report = self.analyzer.refresh()
        change.recomputed = set(self.analyzer.recomputed)
        self.selection = [n for n in self.selection if n in self.graph.nodes]
        self.graph_changed.emit(change)
        self.report_changed.emit(self.report)

    def swap_graph(self, graph: Graph, training: dict, weights: str | None) -> None:
        self._unwatch()
        self.design.graph = graph
        self.design.training = training
        self.design.weights = weights
        self._watch(graph)

    def set_convention(self, convention: str, batch: int | None) -> None:
        self.convention = convention
        self.batch = batch
        self.analyzer.set_convention(convention, batch)
        self._change = Change(recomputed=set(self.graph.nodes))
        self.commit()

    def set_heatmap(self, metric: str) -> None:
        if metric not in HEATMAP_METRICS:
            raise ValueError(f"heatmap metric must be one of {HEATMAP_METRICS}")
        self.heatmap = metric
        self.heatmap_changed.emit(metric)

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

    def insert_template(self, name: str, pos: tuple[float, float]) -> list[str]:
        """Add a whole template's nodes (fresh names) with their layered layout at `pos`."""
        graph = build_template(name)
        return self._paste_specs(extract(graph, graph.nodes), layered_layout(graph).positions, pos, f"Insert template {name}")

    def insert_block(self, name: str, after: str, pos: tuple[float, float] | None = None) -> list[str]:
        """Insert block `name` after value `after`; its consumers are moved onto the block's output."""
        if name not in BLOCKS:
            raise DesignError(f"unknown block '{name}'", "block")
        scratch = self.graph.copy()
        out, new_names = insert_block(scratch, name, after)
        specs = [node_spec(scratch.nodes[n]) for n in new_names]
        rewire = [(c, i, self.graph.nodes[c].inputs[i], out) for c, i in self.graph.value_users(after)]
        src = parse_ref(after)[0]
        x, y = pos if pos is not None else self.graph.layout.get(src, (0.0, 0.0))
        positions = {n: _round((x, y + (k + 1) * ROW)) for k, n in enumerate(new_names)}
        self.push(commands.AddNodes(self, specs, positions, f"Insert block {name}", rewire))
        return new_names

    def _paste_specs(self, specs: list[dict], positions: dict, at: tuple[float, float], text: str) -> list[str]:
        fresh = with_fresh_names(self.graph, specs)
        xs = [positions[s["name"]][0] for s in specs if s["name"] in positions] or [0.0]
        ys = [positions[s["name"]][1] for s in specs if s["name"] in positions] or [0.0]
        dx, dy = at[0] - min(xs), at[1] - min(ys)
        placed = {}
        for old, new in zip(specs, fresh):
            px, py = positions.get(old["name"], (min(xs), min(ys)))
            placed[new["name"]] = _round((px + dx, py + dy))
        self.push(commands.AddNodes(self, fresh, placed, text))
        return [s["name"] for s in fresh]

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

    def auto_layout(self) -> None:
        layout = layered_layout(self.graph)
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

    def rename_error(self, old: str, new: str) -> str | None:
        if new == old:
            return None
        if not NAME_RE.match(new):
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
        if group is not None and not NAME_RE.match(group):
            return "a group name uses letters, digits and '_'"
        if group != self.graph.nodes[name].share:
            self.push(commands.SetShare(self, name, group))
        return None

    def replace_graph(self, graph: Graph, text: str, training: dict | None = None, weights: str | None = None) -> None:
        """Replace the whole graph in one undoable step (strategy or fusion applied, recovery)."""
        self.push(commands.ReplaceGraph(self, graph, text, training, weights))

    def recover(self, text: str, source: str) -> str | None:
        """Replace the design with a recovered copy (undoable); returns the error line on failure."""
        try:
            recovered = read_recovery(text, source)
        except DesignError as e:
            return e.line()
        self.replace_graph(recovered.graph, "Recover autosaved design", recovered.training, recovered.weights)
        return None

    def copy(self, names: list[str] | None = None) -> int:
        names = self.selection if names is None else names
        specs = extract(self.graph, names)
        self.clipboard = (specs, {s["name"]: self.graph.layout.get(s["name"], (0.0, 0.0)) for s in specs})
        self.paste_count = 0
        return len(specs)

    def paste(self) -> list[str]:
        """Add the copied nodes (and the edges among them) under fresh names, offset from the originals."""
        specs, positions = self.clipboard
        if not specs:
            return []
        self.paste_count += 1
        xs = [p[0] for p in positions.values()]
        ys = [p[1] for p in positions.values()]
        at = (min(xs) + 40.0 * self.paste_count, min(ys) + 40.0 * self.paste_count)
        names = self._paste_specs(specs, positions, at, f"Paste {len(specs)} node{'s' if len(specs) != 1 else ''}")
        self.select(names)
        return names


def _round(pos) -> tuple[float, float]:
    return (round(float(pos[0]), 2), round(float(pos[1]), 2))


def _below_producers(graph: Graph, name: str) -> tuple[float, float]:
    placed = [graph.layout[src] for src in graph.nodes[name].input_names() if src in graph.layout]
    if not placed:
        return (0.0, 0.0)
    x = sum(p[0] for p in placed) / len(placed)
    return _round((x, max(p[1] for p in placed) + ROW))
