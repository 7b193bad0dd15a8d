"""Undoable edits. Each command calls the IR's edit API and restores the exact previous state on undo.

After every redo/undo the command calls `controller.commit()`, which refreshes shapes and costs
incrementally and tells the views what changed.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtGui import QUndoCommand

from convstudio.backends.weights import retire_pending
from convstudio.designer.gui.fragments import add_spec, node_spec
from convstudio.ir.design import write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.groups import copy_groups

MOVE_ID = 1
NUDGE_ID = 2


class GraphCommand(QUndoCommand):
    """Base: `apply()` and `revert()` edit `controller.graph`; commit follows each of them."""

    def __init__(self, controller, text: str):
        super().__init__(text)
        self.ctl = controller

    def redo(self) -> None:
        self.apply()
        self.ctl.commit()

    def undo(self) -> None:
        self.revert()
        self.ctl.commit()

    def apply(self) -> None:
        raise NotImplementedError

    def revert(self) -> None:
        raise NotImplementedError


class AddNodes(GraphCommand):
    """Add nodes from specs (palette drop, paste, template or block inserted), optionally rewiring
    existing consumers `(consumer, index, old_ref, new_ref)` onto the new nodes and moving existing
    nodes to `moves` (name -> position) to make room; undo puts those back exactly. `groups` (of the
    new nodes, a template's stages and blocks) are added with them; undo erases the nodes, which drops them."""

    def __init__(self, controller, specs: list[dict], positions: dict, text: str, rewire: list | None = None, moves: dict | None = None,
                 groups: dict | None = None):
        super().__init__(controller, text)
        self.specs = specs
        self.positions = positions
        self.rewire = rewire or []
        self.moves = dict(moves or {})
        self.groups = copy_groups(groups or {})
        self.before = {name: controller.graph.layout.get(name) for name in self.moves}

    def apply(self) -> None:
        graph = self.ctl.graph
        for spec in self.specs:
            add_spec(graph, spec)
            if spec["name"] in self.positions:
                graph.layout[spec["name"]] = self.positions[spec["name"]]
        graph.groups.update(copy_groups(self.groups))
        for consumer, index, _, new in self.rewire:
            graph.set_input(consumer, index, new)
        graph.layout.update(self.moves)
        self.ctl.note_moved([*self.positions, *self.moves])

    def revert(self) -> None:
        graph = self.ctl.graph
        for consumer, index, old, _ in self.rewire:
            graph.set_input(consumer, index, old)
        for spec in reversed(self.specs):
            graph.erase(spec["name"])
        for name, pos in self.before.items():
            if pos is None:
                graph.layout.pop(name, None)
            else:
                graph.layout[name] = pos
        self.ctl.note_moved(self.before)


class DeleteNodes(GraphCommand):
    """Delete nodes and every edge touching them; undo restores nodes, edges, order, layout and groups."""

    def __init__(self, controller, names: list[str]):
        super().__init__(controller, f"Delete {', '.join(names[:3])}{'...' if len(names) > 3 else ''}")
        graph = controller.graph
        chosen = set(names)
        self.order = list(graph.nodes)
        self.layout = dict(graph.layout)
        self.groups = copy_groups(graph.groups)
        schedule = [n for n in graph.topo_order() if n in chosen]
        self.specs = [node_spec(graph.nodes[n]) for n in schedule]
        self.cut = [(c, i, graph.nodes[c].inputs[i]) for n in schedule for c, i in graph.users(n) if c not in chosen]

    def apply(self) -> None:
        graph = self.ctl.graph
        for consumer, index, _ in self.cut:
            graph.set_input(consumer, index, None)
        for spec in reversed(self.specs):
            graph.erase(spec["name"])

    def revert(self) -> None:
        graph = self.ctl.graph
        for spec in self.specs:
            add_spec(graph, spec)
        for consumer, index, ref in self.cut:
            graph.set_input(consumer, index, ref)
        graph.reorder(self.order)
        graph.layout.clear()
        graph.layout.update(self.layout)
        graph.groups = copy_groups(self.groups)
        self.ctl.note_moved(self.layout)


class SetInputs(GraphCommand):
    """Connect or disconnect: the consumer's whole input list before and after."""

    def __init__(self, controller, name: str, after: list, text: str):
        super().__init__(controller, text)
        self.name = name
        self.before = list(controller.graph.nodes[name].inputs)
        self.after = list(after)

    def apply(self) -> None:
        self.ctl.graph.set_inputs(self.name, self.after)

    def revert(self) -> None:
        self.ctl.graph.set_inputs(self.name, self.before)


class MoveNodes(GraphCommand):
    """Move nodes; consecutive moves of the same selection merge into one step."""

    def __init__(self, controller, positions: dict):
        super().__init__(controller, f"Move {len(positions)} node{'s' if len(positions) != 1 else ''}")
        layout = controller.graph.layout
        self.before = {name: layout.get(name) for name in positions}
        self.after = dict(positions)

    def id(self) -> int:
        return MOVE_ID

    def mergeWith(self, other) -> bool:
        if not isinstance(other, MoveNodes) or set(other.after) != set(self.after):
            return False
        self.after.update(other.after)
        return True

    def apply(self) -> None:
        self.ctl.graph.layout.update(self.after)
        self.ctl.note_moved(self.after)

    def revert(self) -> None:
        layout = self.ctl.graph.layout
        for name, pos in self.before.items():
            if pos is None:
                layout.pop(name, None)
            else:
                layout[name] = pos
        self.ctl.note_moved(self.before)


class NudgeNodes(MoveNodes):
    """Move nodes with the arrow keys; the auto-repeats of a held key merge into the press that started them."""

    def __init__(self, controller, positions: dict, repeat: bool):
        super().__init__(controller, positions)
        self.setText(f"Nudge {len(positions)} node{'s' if len(positions) != 1 else ''}")
        self.repeat = repeat

    def id(self) -> int:
        return NUDGE_ID

    def mergeWith(self, other) -> bool:
        return isinstance(other, NudgeNodes) and other.repeat and super().mergeWith(other)


class SetLayout(GraphCommand):
    """Replace every position at once (auto-layout), with the layout's edge routes and the positions they fit."""

    def __init__(self, controller, positions: dict, routes: dict):
        super().__init__(controller, "Auto-layout")
        self.before = dict(controller.graph.layout)
        self.after = dict(positions)
        self.before_routes = (dict(controller.routes), controller.laid_out)
        self.after_routes = (routes, dict(positions))

    def apply(self) -> None:
        self._set(self.after, *self.after_routes)

    def revert(self) -> None:
        self._set(self.before, *self.before_routes)

    def _set(self, positions: dict, routes: dict, laid_out: dict) -> None:
        layout = self.ctl.graph.layout
        layout.clear()
        layout.update(positions)
        self.ctl.routes = dict(routes)
        self.ctl.laid_out = laid_out
        self.ctl.note_moved(self.ctl.graph.nodes)


class SetAttrs(GraphCommand):
    """Replace a node's explicit attributes (already validated by the controller)."""

    def __init__(self, controller, name: str, attrs: dict, text: str):
        super().__init__(controller, text)
        self.name = name
        self.before = dict(controller.graph.nodes[name].attrs)
        self.after = dict(attrs)

    def apply(self) -> None:
        self.ctl.graph.set_attrs(self.name, self.after)

    def revert(self) -> None:
        self.ctl.graph.set_attrs(self.name, self.before)


class SetAttrsOfMany(GraphCommand):
    """Replace the explicit attributes of several nodes at once (an attribute set across a multi-selection)."""

    def __init__(self, controller, after: dict[str, dict], text: str):
        super().__init__(controller, text)
        nodes = controller.graph.nodes
        self.before = {name: dict(nodes[name].attrs) for name in after}
        self.after = {name: dict(attrs) for name, attrs in after.items()}

    def apply(self) -> None:
        for name, attrs in self.after.items():
            self.ctl.graph.set_attrs(name, attrs)

    def revert(self) -> None:
        for name, attrs in self.before.items():
            self.ctl.graph.set_attrs(name, attrs)


class Rename(GraphCommand):
    def __init__(self, controller, old: str, new: str):
        super().__init__(controller, f"Rename {old} to {new}")
        self.old = old
        self.new = new

    def apply(self) -> None:
        self.ctl.graph.rename(self.old, self.new)

    def revert(self) -> None:
        self.ctl.graph.rename(self.new, self.old)


class SetShare(GraphCommand):
    def __init__(self, controller, name: str, group: str | None):
        super().__init__(controller, f"Share group of {name}")
        self.name = name
        self.before = controller.graph.nodes[name].share
        self.after = group or None

    def apply(self) -> None:
        self.ctl.graph.set_share(self.name, self.after)

    def revert(self) -> None:
        self.ctl.graph.set_share(self.name, self.before)


class RenameDesign(GraphCommand):
    """Give the design another name (the window title and the file name Save As proposes)."""

    def __init__(self, controller, name: str):
        super().__init__(controller, f"Rename design to {name}")
        self.before = controller.graph.name
        self.after = name

    def apply(self) -> None:
        self.ctl.graph.name = self.after

    def revert(self) -> None:
        self.ctl.graph.name = self.before


class ReplaceGraph(GraphCommand):
    """Swap in another graph (strategy or fusion applied, recovered design); undo swaps back.

    `training` and `weights` replace the design's when given. Each graph comes back with the edge routes it
    had; with `keep_routes` (a rewrite laid out around its change) the new graph starts with the old one's,
    which still fit the edges whose ends kept their places."""

    def __init__(self, controller, graph, text: str, training: dict | None = None, weights: str | None = None, keep_routes: bool = False):
        super().__init__(controller, text)
        design = controller.design
        self.before = (design.graph, design.training, design.weights)
        self.after = (graph, design.training if training is None else training, design.weights if weights is None else weights)
        self.before_routes = (controller.routes, controller.laid_out)
        self.after_routes = self.before_routes if keep_routes else None

    def apply(self) -> None:
        self.ctl.swap_graph(*self.after, routes=self.after_routes)
        self.after_routes = (self.ctl.routes, self.ctl.laid_out)

    def revert(self) -> None:
        self.ctl.swap_graph(*self.before, routes=self.before_routes)


class ReplaceGraphAndFile(ReplaceGraph):
    """A training run: the trained graph replaces the design's and the weights file the design uses gets the run's
    bytes; undo brings back the old graph and the file as it was (or removes it when there was none)."""

    def __init__(self, controller, graph, text: str, training: dict | None, weights: str | None, path: Path, data: bytes):
        super().__init__(controller, graph, text, training, weights)
        self.path = Path(path)
        self.data = data
        self.old = self.path.read_bytes() if self.path.is_file() else None

    def apply(self) -> None:
        super().apply()
        self._write(self.data)

    def revert(self) -> None:
        super().revert()
        self._write(self.old)

    def _write(self, data: bytes | None) -> None:
        try:
            if data is None:
                self.path.unlink(missing_ok=True)
            else:
                write_atomic(self.path, data)
                retire_pending(self.path)
        except (OSError, DesignError) as e:
            self.ctl.message.emit(f"cannot write the weights: {e.line() if isinstance(e, DesignError) else e.strerror or e}, file '{self.path}'")


class SetGroups(GraphCommand):
    """Replace the design's groups (made, renamed, folded or unfolded) and move the nodes a fold moves; undo restores both."""

    def __init__(self, controller, groups: dict, moves: dict, text: str):
        super().__init__(controller, text)
        graph = controller.graph
        self.before = copy_groups(graph.groups)
        self.after = copy_groups(groups)
        self.moves = dict(moves)
        self.placed = {name: graph.layout.get(name) for name in self.moves}

    def apply(self) -> None:
        self.ctl.graph.groups = copy_groups(self.after)
        self.ctl.graph.layout.update(self.moves)
        self.ctl.note_groups()

    def revert(self) -> None:
        graph = self.ctl.graph
        graph.groups = copy_groups(self.before)
        for name, pos in self.placed.items():
            if pos is None:
                graph.layout.pop(name, None)
            else:
                graph.layout[name] = pos
        self.ctl.note_groups()
