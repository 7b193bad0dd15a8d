"""Undoable edits. Each command calls the IR's edit API and restores the exact previous state on undo.

After every redo/undo the command calls `controller.commit()`, which refreshes shapes and costs
incrementally and tells the views what changed.
"""

from __future__ import annotations

from PyQt6.QtGui import QUndoCommand

from convstudio.designer.gui.fragments import add_spec, node_spec

MOVE_ID = 1


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
    existing consumers `(consumer, index, old_ref, new_ref)` onto the new nodes."""

    def __init__(self, controller, specs: list[dict], positions: dict, text: str, rewire: list | None = None):
        super().__init__(controller, text)
        self.specs = specs
        self.positions = positions
        self.rewire = rewire or []

    def apply(self) -> None:
        graph = self.ctl.graph
        for spec in self.specs:
            add_spec(graph, spec)
            if spec["name"] in self.positions:
                graph.layout[spec["name"]] = self.positions[spec["name"]]
        for consumer, index, _, new in self.rewire:
            graph.set_input(consumer, index, new)
        self.ctl.note_moved(self.positions)

    def revert(self) -> None:
        graph = self.ctl.graph
        for consumer, index, old, _ in self.rewire:
            graph.set_input(consumer, index, old)
        for spec in reversed(self.specs):
            graph.erase(spec["name"])


class DeleteNodes(GraphCommand):
    """Delete nodes and every edge touching them; undo restores nodes, edges, order and layout."""

    def __init__(self, controller, names: list[str]):
        super().__init__(controller, f"Delete {', '.join(names[:3])}{'...' if len(names) > 3 else ''}")
        graph = controller.graph
        chosen = set(names)
        self.order = list(graph.nodes)
        self.layout = dict(graph.layout)
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


class SetLayout(GraphCommand):
    """Replace every position at once (auto-layout)."""

    def __init__(self, controller, positions: dict, routes: dict):
        super().__init__(controller, "Auto-layout")
        self.before = dict(controller.graph.layout)
        self.after = dict(positions)
        self.before_routes = dict(controller.routes)
        self.after_routes = routes

    def apply(self) -> None:
        self._set(self.after, self.after_routes)

    def revert(self) -> None:
        self._set(self.before, self.before_routes)

    def _set(self, positions: dict, routes: dict) -> None:
        layout = self.ctl.graph.layout
        layout.clear()
        layout.update(positions)
        self.ctl.routes = dict(routes)
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


class ReplaceGraph(GraphCommand):
    """Swap in another graph (strategy or fusion applied, recovered design); undo swaps back.

    `training` and `weights` replace the design's when given."""

    def __init__(self, controller, graph, text: str, training: dict | None = None, weights: str | None = None):
        super().__init__(controller, text)
        design = controller.design
        self.before = (design.graph, design.training, design.weights)
        self.after = (graph, design.training if training is None else training, design.weights if weights is None else weights)

    def apply(self) -> None:
        self.ctl.swap_graph(*self.after)

    def revert(self) -> None:
        self.ctl.swap_graph(*self.before)
