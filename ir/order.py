"""The stable topological order of a graph, kept by edits that move few nodes in it.

The stable order is Kahn's algorithm placing, of the nodes whose producers are all placed, the one inserted first
(`Graph._stable_topological_sort`). Kahn's state after some steps is the set of nodes placed, so when an edit changes
one node's inputs, the sort of the edited graph follows the old order up to the step where the node's readiness
differs, and follows it again once the nodes placed since are the old order's nodes up to some step, give or take
nodes placed early whose readers are all placed, and ready nodes nothing reads, which the sort places later by insertion
rank. `StableOrder.resort` runs the sort over that stretch alone, which for the edits a designer makes (a layer put
between two others, an edge drawn or taken back) is a handful of steps, whatever the graph's size.

The order is held as blocks of node names with spaced keys, so that nodes can be put between two others; when two
neighbours have no room left, every key is given again. A segment tree over the blocks holds each block's smallest
ready key (the key of a node's last producer) and largest insertion rank, so the search for the nodes ready at a step,
and for the place of a node that waits, skips to the next block that matters in O(log blocks).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

SPACING = 1 << 32  # between the keys of neighbours after keys are given again: room for 32 halvings
BLOCK = 64  # nodes per block; a block splits when it holds twice as many
BUDGET = 4096  # steps a local sort may take before `resort` gives up (the caller sorts the whole graph)

_serials = itertools.count()  # block serials, unique across orders: a reader's cache keyed by serial never mixes two orders
_NONE = 1 << 62  # above every key and rank


class _BlockTree:
    """Per block, the smallest ready key and the largest rank, in a segment tree: the next block (from a given one) that
    holds a node ready before some key or ranked above some rank is found in O(log blocks)."""

    def __init__(self, min_ready: list[int], max_rank: list[int]):
        size = 1
        while size < len(min_ready):
            size *= 2
        self.size, self.count = size, len(min_ready)
        low = self.low = [_NONE] * size + min_ready + [_NONE] * (size - len(min_ready))
        high = self.high = [-1] * size + max_rank + [-1] * (size - len(max_rank))
        for node in range(size - 1, 0, -1):
            low[node] = min(low[2 * node], low[2 * node + 1])
            high[node] = max(high[2 * node], high[2 * node + 1])

    def set(self, b: int, low: int, high: int) -> None:
        node = b + self.size
        self.low[node], self.high[node] = low, high
        node >>= 1
        while node:
            self.low[node] = min(self.low[2 * node], self.low[2 * node + 1])
            self.high[node] = max(self.high[2 * node], self.high[2 * node + 1])
            node >>= 1

    def first(self, b: int, below: int, above: int) -> int:
        """The first block from `b` on with a ready key under `below` or a rank over `above`; `count` when there is none."""
        low, high, size = self.low, self.high, self.size
        if b >= self.count:
            return self.count
        node = b + size
        while not (low[node] < below or high[node] > above):
            while node & 1:  # up while a right child: the next subtree to the right starts at the parent's right sibling
                node >>= 1
            if node == 0:
                return self.count
            node += 1
        while node < size:
            node *= 2
            if not (low[node] < below or high[node] > above):
                node += 1
        return min(node - size, self.count)

    def highest(self, b: int, e: int) -> int:
        """The largest rank in blocks b..e-1 (-1 when none)."""
        high, best = self.high, -1
        b += self.size
        e += self.size
        while b < e:
            if b & 1:
                best = max(best, high[b])
                b += 1
            if e & 1:
                e -= 1
                best = max(best, high[e])
            b >>= 1
            e >>= 1
        return best


class StableOrder:
    """The stable order of a graph's nodes with keys (`keys`: name -> key, increasing along the order; the graph's own
    dict, updated in place), kept by `append`, `remove`, `rename` and `resort`.

    `nodes` (name -> node, whose `inputs` are references 'name' or 'name:k', or None) and `consumers(name)` read the graph's
    edges as they are now; `rank` holds each node's position in the graph's insertion order (the sort's tie-break), and
    `next_rank` the one the next added node gets.
    """

    def __init__(self, order: list[str], keys: dict[str, int], rank: dict[str, int], nodes: Mapping[str, Any],
                 consumers: Callable[[str], Iterable[str]], block: int | None = None):
        self.keys = keys
        self.rank = rank
        self.next_rank = max(rank.values(), default=-1) + 1
        self.nodes = nodes
        self.consumers = consumers
        self.block = block or BLOCK
        self.blocks: list[list[str]] = [order[i:i + self.block] for i in range(0, len(order), self.block)]
        self.ready: dict[str, int] = {}
        self.firsts: list[int] = []
        self.min_ready: list[int] = []
        self.max_rank: list[int] = []
        self.serials: list[int] = []  # changes whenever a block's nodes or their order change (readers cache per serial)
        self._tree: _BlockTree | None = None  # made again when the number of blocks changes
        self._renumber()

    # ---- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(itertools.chain.from_iterable(self.blocks))

    def locate(self, name: str) -> tuple[int, int]:
        """(block, index in the block) of `name`."""
        b = bisect.bisect_right(self.firsts, self.keys[name]) - 1
        return b, self.blocks[b].index(name)

    def block_of_key(self, key: int) -> int:
        """The block that holds the node with `key` (or would, among the nodes there)."""
        return max(bisect.bisect_right(self.firsts, key) - 1, 0)

    def producers(self, name: str) -> list[str]:
        return [ref if ":" not in ref else ref.rpartition(":")[0] for ref in self.nodes[name].inputs if ref is not None]

    def _ready_key(self, name: str) -> int:
        """The key of the last producer of `name` in the order; -1 when it has none."""
        keys = self.keys
        last = -1
        for ref in self.nodes[name].inputs:
            if ref is not None:
                key = keys[ref] if ":" not in ref else keys[ref.rpartition(":")[0]]
                if key > last:
                    last = key
        return last

    # ---- upkeep ------------------------------------------------------------------------------
    def _renumber(self) -> None:
        """Give every node a key again, SPACING apart, and every block its summaries."""
        names = self.names()
        self.keys.update(zip(names, itertools.count(SPACING, SPACING)))
        self.ready = dict(zip(names, map(self._ready_key, names)))
        count = len(self.blocks)
        self.firsts, self.min_ready, self.max_rank, self.serials = [0] * count, [0] * count, [0] * count, [0] * count
        for b in range(count):
            self._summarize(b)

    def _summarize(self, b: int) -> None:
        """Recompute block `b`'s first key, smallest ready key and largest rank, and give it a new serial."""
        names = self.blocks[b]
        ready, rank = self.ready, self.rank
        self.firsts[b] = self.keys[names[0]]
        self.min_ready[b] = min(map(ready.__getitem__, names))
        self.max_rank[b] = max(map(rank.__getitem__, names))
        self.serials[b] = next(_serials)
        tree = self._tree
        if tree is not None and tree.count == len(self.blocks):
            tree.set(b, self.min_ready[b], self.max_rank[b])
        else:
            self._tree = None

    def _blocks_tree(self) -> _BlockTree:
        tree = self._tree
        if tree is None or tree.count != len(self.blocks):
            tree = self._tree = _BlockTree(self.min_ready, self.max_rank)
        return tree

    def _split_or_drop(self, b: int) -> None:
        """Summarize block `b` after a change; split it when it grew past twice the block size, drop it when empty."""
        names = self.blocks[b]
        if not names:
            for table in (self.blocks, self.firsts, self.min_ready, self.max_rank, self.serials):
                del table[b]
            self._tree = None
            return
        if len(names) > 2 * self.block:
            half = len(names) // 2
            self.blocks[b:b + 1] = [names[:half], names[half:]]
            for table in (self.firsts, self.min_ready, self.max_rank, self.serials):
                table.insert(b, 0)
            self._tree = None
            self._summarize(b + 1)
        self._summarize(b)

    def _insert(self, b: int, i: int, names: list[str]) -> None:
        """Put `names` (keyless so far) in block `b` at index `i` and give them keys between their neighbours'; give every
        key again when there is no room."""
        if not self.blocks:
            self.blocks.append([])
            for table in (self.firsts, self.min_ready, self.max_rank, self.serials):
                table.append(0)
            b, i = 0, 0
        block = self.blocks[b]
        keys = self.keys
        if i > 0:
            low = keys[block[i - 1]]
        else:
            low = keys[self.blocks[b - 1][-1]] if b > 0 else 0
        if i < len(block):
            high = keys[block[i]]
        else:
            high = keys[self.blocks[b + 1][0]] if b + 1 < len(self.blocks) else low + (len(names) + 1) * SPACING
        block[i:i] = names
        step = (high - low) // (len(names) + 1)
        for name in names:
            self.ready[name] = -1  # set below, once every key is known
        if step < 1:
            self._renumber()
            return
        for k, name in enumerate(names, 1):
            keys[name] = low + k * step
        self._split_or_drop(b)

    def _insert_last(self, name: str) -> None:
        """Put `name` (keyless so far) at the end of the order."""
        b = len(self.blocks) - 1
        self._insert(b, len(self.blocks[b]) if b >= 0 else 0, [name])

    def _touch_ready(self, names: Iterable[str]) -> None:
        """Recompute the ready keys of `names` and the summaries of their blocks."""
        touched = set()
        for name in names:
            self.ready[name] = self._ready_key(name)
            touched.add(self.block_of_key(self.keys[name]))
        for b in sorted(touched):
            self._summarize(b)

    def append(self, name: str) -> None:
        """A node added last in insertion order, whose producers are all in the order: it comes last."""
        self.rank[name] = self.next_rank
        self.next_rank += 1
        self._insert_last(name)
        self.ready[name] = self._ready_key(name)
        self._summarize(self.block_of_key(self.keys[name]))

    def remove(self, name: str) -> None:
        """Drop a node nothing reads: the others keep their places."""
        b, i = self.locate(name)
        del self.blocks[b][i]
        del self.keys[name], self.rank[name], self.ready[name]
        self._split_or_drop(b)

    def rename(self, old: str, new: str) -> None:
        b, i = self.locate(old)
        self.blocks[b][i] = new
        self.keys[new] = self.keys.pop(old)
        self.rank[new] = self.rank.pop(old)
        self.ready[new] = self.ready.pop(old)
        self.serials[b] = next(_serials)

    # ---- the local sort ----------------------------------------------------------------------
    def resort(self, edited: str, old_producers: set[str]) -> set[str] | None:
        """Bring the order up to date after the inputs of `edited` changed (they were `old_producers`). Returns the nodes
        that changed place, or None when the sort would run more than BUDGET steps: the caller then sorts the whole graph,
        as this order is no longer kept."""
        keys, rank, blocks = self.keys, self.rank, self.blocks
        old_ready = max((keys[p] for p in old_producers), default=-1)
        new_ready = self._ready_key(edited)
        start = min(old_ready, new_ready)  # the two sorts place the same nodes up to the node with this key
        b0 = bisect.bisect_right(self.firsts, start) - 1
        if b0 < 0:
            b0, i0 = 0, 0
        else:
            i0 = bisect.bisect_right(blocks[b0], start, key=keys.__getitem__)
            if i0 == len(blocks[b0]):
                b0, i0 = b0 + 1, 0
        first = keys[blocks[b0][i0]]  # the prefix, placed by both sorts alike, is every node with a smaller key
        ready = dict.fromkeys((edited,), new_ready)  # ready keys in the edited graph where they differ from `self.ready`
        ready_key = self.ready

        def placed(name: str) -> bool:
            return keys[name] < first or name in out_set

        def is_ready(name: str) -> bool:
            return all(placed(p) for p in self.producers(name))

        def consumers(name: str) -> set[str]:
            return set(self.consumers(name))

        def converged() -> bool:  # the edited node is placed or waits, and every node placed ahead has its readers placed
            return (edited in out_set or edited in waiting) and all(consumers(n) <= out_set for n in ahead)

        out: list[str] = []
        out_set: set[str] = set()
        heap: list[tuple[int, str]] = []
        queued: set[str] = set()
        if new_ready < first:
            heapq.heappush(heap, (rank[edited], edited))
            queued.add(edited)
        ahead: set[str] = set()  # placed here, not yet passed in the old order
        waiting: set[str] = set()  # passed in the old order, not placed here: ready nodes nothing reads, placed later by rank
        sb, si, seen_rank = b0, i0, -1  # the scan for nodes ready at the start: every one beyond it ranks above seen_rank
        qb, qi = b0, i0  # the old order, passed up to here
        count = len(blocks)
        tree = self._blocks_tree()
        for _ in range(BUDGET):
            while sb < count and (not heap or heap[0][0] > seen_rank):
                if si == 0:  # skip the blocks with no node ready at the start, up to one whose ranks reach the heap's top
                    skip = tree.first(sb, first, heap[0][0] if heap else _NONE)
                    if skip > sb:
                        seen_rank = max(seen_rank, tree.highest(sb, skip))
                        sb = skip
                        continue
                    if self.min_ready[sb] >= first:
                        seen_rank = max(seen_rank, self.max_rank[sb])
                        sb += 1
                        continue
                names = blocks[sb]
                name = names[si]
                seen_rank = max(seen_rank, rank[name])
                if ready.get(name, ready_key[name]) < first and name not in out_set and name not in queued:
                    heapq.heappush(heap, (rank[name], name))
                    queued.add(name)
                si += 1
                if si == len(names):
                    sb, si = sb + 1, 0
            if not heap:  # the sort placed every node it could: a cycle if some are left
                if qb < count:
                    return None
                break
            _, name = heapq.heappop(heap)
            queued.discard(name)
            out.append(name)
            out_set.add(name)
            if name in waiting:
                waiting.discard(name)
            else:
                ahead.add(name)
            for consumer in consumers(name):
                if consumer not in out_set and consumer not in queued and is_ready(consumer):
                    heapq.heappush(heap, (rank[consumer], consumer))
                    queued.add(consumer)
            done = False
            while qb < count:  # pass the nodes of the old order placed here, then, unless the sorts agree, a ready one nothing reads
                name = blocks[qb][qi]
                if name in ahead:
                    ahead.discard(name)
                elif not (done := converged()) and name not in out_set and not consumers(name) and is_ready(name):
                    waiting.add(name)
                else:
                    break
                qi += 1
                if qi == len(blocks[qb]):
                    qb, qi = qb + 1, 0
            if done or converged():
                break
        else:
            return None
        stop = blocks[qb][qi] if qb < count else None  # the first node of the old order the sort did not pass
        moved = out_set | waiting
        self._take_out(moved)
        if start < 0 or not blocks:
            b, i = 0, 0
        else:
            b = self.block_of_key(start)
            i = bisect.bisect_right(blocks[b], start, key=keys.__getitem__)
        if out:
            self._insert(b, i, out)
        for name in sorted(waiting, key=rank.__getitem__):
            self._land(name, stop)
        self._touch_ready(moved | {c for n in moved for c in self.consumers(n)})
        return moved

    def _take_out(self, names: set[str]) -> None:
        by_block: dict[int, list[str]] = {}
        for name in names:
            by_block.setdefault(self.block_of_key(self.keys[name]), []).append(name)
        for b in sorted(by_block, reverse=True):
            gone = set(by_block[b])
            self.blocks[b] = [n for n in self.blocks[b] if n not in gone]
            self._split_or_drop(b)
        for name in names:
            del self.keys[name]

    def _land(self, name: str, stop: str | None) -> None:
        """Place `name`, a ready node nothing reads, where the sort places it: before the first node from `stop` on that
        ranks above it (the sort picks it as soon as every ready node ranks above it), or last."""
        rank, blocks = self.rank, self.blocks
        mine = rank[name]
        if stop is not None:
            b, i = self.locate(stop)
            while b < len(blocks):
                if i == 0:
                    b = self._blocks_tree().first(b, -1, mine)  # the next block holding a node ranked above it
                    if b == len(blocks):
                        break
                names = blocks[b]
                while i < len(names) and rank[names[i]] < mine:
                    i += 1
                if i < len(names):
                    self._insert(b, i, [name])
                    return
                b, i = b + 1, 0
        self._insert_last(name)
