"""The stable order kept by local sorts (ir/order.py) and the buffer plan that follows it (`LivePlan`): after every edit
they equal a sort of the whole graph and a plan made from scratch, and an edit that moves few nodes costs what it moves."""

import random

import pytest

from convstudio.ir import order as order_module
from convstudio.ir.cost import Analyzer, analyze, schedule_buffers
from convstudio.ir.errors import DesignError, GraphError
from convstudio.ir.graph import Graph
from tests.ir.test_cost import fresh_share_lines, share_lines
from tests.ir.test_graph_bulk import relu_chain


@pytest.fixture(params=[2, 3, 256], ids=["blocks of 2", "blocks of 3", "blocks of 256"])
def block(request, monkeypatch):
    """Small blocks make every edit split, drop and search across blocks."""
    monkeypatch.setattr(order_module, "BLOCK", request.param)
    return request.param


def check_order(g: Graph) -> None:
    """The kept order is a fresh sort's, and its blocks' keys, ready keys, ranks and summaries are right."""
    assert g.topo_order() == g._stable_topological_sort()
    blocks = g._order_blocks
    if blocks is None:
        return
    keys = g.order_keys()
    names = blocks.names()
    assert [keys[n] for n in names] == sorted(set(keys[n] for n in names)) and set(keys) == set(g.nodes)
    assert sorted(names, key=blocks.rank.__getitem__) == list(g.nodes)  # ranks follow insertion order
    for b, members in enumerate(blocks.blocks):
        assert members and blocks.firsts[b] == keys[members[0]]
        assert blocks.min_ready[b] == min(blocks.ready[n] for n in members)
        assert blocks.max_rank[b] == max(blocks.rank[n] for n in members)
    for n in names:
        assert blocks.ready[n] == max((keys[p] for p in g.nodes[n].input_names()), default=-1)


def random_graph(rnd: random.Random, size: int) -> Graph:
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [8, 8, 8]})
    for _ in range(size):
        grow(g, rnd)
    g.add("Output", [pick(g, rnd)], name="y")
    return g


def pick(g: Graph, rnd: random.Random) -> str:
    return rnd.choice([n for n, node in g.nodes.items() if node.op != "Output"])


def grow(g: Graph, rnd: random.Random) -> None:
    """Add one node: convs, views (Identity, Dropout, a ChannelSplit and its second output), joins, outputs, sources."""
    kind, p = rnd.random(), pick(g, rnd)
    if kind < 0.3:
        g.add("Conv2d", [p], attrs={"out_channels": rnd.choice([4, 8]), "kernel_size": 1})
    elif kind < 0.45:
        g.add(rnd.choice(["ReLU", "Identity", "Dropout"]), [p])
    elif kind < 0.55:
        g.add("ChannelSplit", [p], attrs={"parts": rnd.choice([1, 2])})
    elif kind < 0.7:
        g.add(rnd.choice(["Concat", "Add"]), [p, pick(g, rnd)])
    elif kind < 0.75:
        g.add("Output", [p])
    elif kind < 0.8:
        g.add("Input", attrs={"shape": [8, 8, 8]})
    else:
        splits = [n for n, node in g.nodes.items() if node.op == "ChannelSplit"]
        g.add("ReLU", [rnd.choice(splits) + ":1" if splits else p])


def edit(g: Graph, rnd: random.Random) -> None:
    """One edit a designer makes: add, put a node between two, rewire, erase, change shapes, share, rename, or another."""
    names = list(g.nodes)
    kind = rnd.random()
    if kind < 0.18:
        grow(g, rnd)
    elif kind < 0.36:  # a node put between a node and its first producer
        consumer = rnd.choice(names)
        node = g.nodes[consumer]
        if node.inputs and node.inputs[0] is not None:
            op = rnd.choice(["ReLU", "Identity", "Conv2d"])
            added = g.add(op, [node.inputs[0]], attrs={"out_channels": 8, "kernel_size": 1} if op == "Conv2d" else None).name
            g.set_input(consumer, 0, added)
    elif kind < 0.5:
        consumer = rnd.choice(names)
        node = g.nodes[consumer]
        producer = pick(g, rnd)
        if node.inputs and producer != consumer and producer not in g.descendants(consumer):
            g.set_input(consumer, rnd.randrange(len(node.inputs)), producer)
    elif kind < 0.62:
        sinks = [n for n in names if n != "x" and not g.users(n)]
        if sinks:
            g.erase(rnd.choice(sinks))
    elif kind < 0.72:
        convs = [n for n in names if g.nodes[n].op == "Conv2d"]
        if convs:
            g.set_attr(rnd.choice(convs), "out_channels", rnd.choice([4, 8, 12]))
    elif kind < 0.78:
        splits = [n for n in names if g.nodes[n].op == "ChannelSplit"]
        if splits:
            try:
                g.set_attr(rnd.choice(splits), "parts", rnd.choice([1, 2, 4]))  # the number of outputs changes
            except DesignError:
                pass
    elif kind < 0.82:
        g.set_attr("x", "shape", rnd.choice([[8, 8, 8], [4, 8, 8], [8, 4, 4]]))
    elif kind < 0.86:
        convs = [n for n in names if g.nodes[n].op == "Conv2d"]
        if convs:
            g.set_share(rnd.choice(convs), rnd.choice(["s", None]))
    elif kind < 0.88:
        name = rnd.choice(names)
        if name not in ("x", "y"):
            g.rename(name, g.fresh_name("r"))
    else:
        other_edit(g, rnd)


def other_edit(g: Graph, rnd: random.Random) -> None:
    """Edits through the graph's other entry points: a join's second input (maybe a split's second output), a Concat slot
    taken away, every use of a value moved, a Concat's inputs set at once, an input disconnected."""
    names = list(g.nodes)
    joins = [n for n in names if g.nodes[n].op in ("Add", "Concat")]
    concats = [n for n in joins if g.nodes[n].op == "Concat"]
    kind = rnd.randrange(5)
    if kind == 0 and joins:
        consumer = rnd.choice(joins)
        splits = [n + ":1" for n in names if g.nodes[n].op == "ChannelSplit" and g.nodes[n].attrs.get("parts", 2) > 1]
        ref = rnd.choice([*splits, pick(g, rnd)])
        if ref.split(":")[0] != consumer and ref.split(":")[0] not in g.descendants(consumer):
            g.set_input(consumer, 1, ref)
    elif kind == 1 and concats:
        consumer = rnd.choice(concats)
        if len(g.nodes[consumer].inputs) > 1:
            g.remove_input(consumer, rnd.randrange(len(g.nodes[consumer].inputs)))
    elif kind == 2:
        old, new = pick(g, rnd), pick(g, rnd)
        if old != new and new not in g.descendants(old) and old not in g.descendants(new):
            g.replace_all_uses(old, new)
    elif kind == 3 and concats:
        consumer = rnd.choice(concats)
        refs = [pick(g, rnd) for _ in range(rnd.randint(1, 3))]
        if all(r != consumer and r not in g.descendants(consumer) for r in refs):
            g.set_inputs(consumer, refs)
    elif kind == 4:
        consumer = pick(g, rnd)
        if g.nodes[consumer].inputs:
            g.set_input(consumer, 0, None)


@pytest.mark.parametrize("seed", range(12))
def test_the_kept_order_equals_a_fresh_sort_after_every_edit(block, seed):
    rnd = random.Random(seed)
    g = random_graph(rnd, rnd.randint(3, 30))
    g.topo_order()
    kept = 0
    for _ in range(120):
        edit(g, rnd)
        kept += g._order_cache is not None
        check_order(g)
        copy = g.copy()
        assert copy.topo_order() == g.topo_order() and copy.order_keys() is not g.order_keys()
    assert kept > 100  # only a sort that would run past its budget drops the order


def test_a_node_put_between_two_moves_alone_and_taken_out_moves_back(block, monkeypatch):
    """On a long chain the local sort takes a few steps: the new node moves from the end to its place, and back."""
    g = relu_chain(2_000)
    steps = []
    resort = order_module.StableOrder.resort

    def counted(self, edited, producers):
        moved = resort(self, edited, producers)
        steps.append(moved)
        return moved

    monkeypatch.setattr(order_module.StableOrder, "resort", counted)
    g.topo_order()
    for at in ("relu_1000", "relu_3", "relu_1999", "relu_1000"):
        producer = g.nodes[at].inputs[0]
        g.add("Sigmoid", [producer], name="between")
        g.set_input(at, 0, "between")
        assert steps[-1] == {"between", at}
        check_order(g)
        g.set_input(at, 0, producer)
        assert steps[-1] == {"between", at}  # it waits again, last: nothing reads it
        assert g.topo_order()[-1] == "between"
        g.erase("between")
        check_order(g)
    assert g._order_blocks is not None and len(steps) == 8


def test_many_nodes_put_in_one_place_give_the_keys_again(block):
    """More nodes between two neighbours than their keys have room for: the keys are given again, the order stays."""
    g = relu_chain(50)
    g.topo_order()
    for _ in range(order_module.SPACING.bit_length() + 5):
        producer = g.nodes["relu_25"].inputs[0]
        added = g.add("Sigmoid", [producer]).name
        g.set_input("relu_25", 0, added)
        check_order(g)
    assert g.order_keys()["relu_25"] - g.order_keys()[g.nodes["relu_25"].inputs[0]] < order_module.SPACING


def test_an_edit_that_makes_a_cycle_drops_the_order_and_sorting_reports_it(block):
    g = relu_chain(20)
    g.add("Sigmoid", ["relu_3"], name="side")
    g.set_input("relu_5", 0, "side")
    assert g._order_blocks is not None
    g.set_input("relu_3", 0, "relu_8")
    assert g._order_cache is None and g._order_blocks is None
    with pytest.raises(GraphError, match="cycle"):
        g.topo_order()
    g.set_input("relu_3", 0, "relu_2")
    check_order(g)


def test_a_sort_past_its_budget_gives_the_order_up(monkeypatch):
    """A wide graph whose edit moves more nodes than the budget: the order is dropped and sorted again, still right."""
    monkeypatch.setattr(order_module, "BUDGET", 5)
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [4]})
    heads = [g.add("ReLU", ["x"]).name for _ in range(20)]
    tails = [g.add("Sigmoid", [h]).name for h in heads]
    g.add("Concat", tails, name="join")
    g.topo_order()
    g.set_input(heads[0], 0, tails[-1])  # the first head now waits for the last tail: every node between moves
    assert g._order_cache is None
    check_order(g)


def fresh(g: Graph, batch: int | None = None) -> tuple[dict, list[str]]:
    report = analyze(g.copy(), batch=batch, strict=False)
    return report.as_dict(), report.errors


def random_analyzer(seed: int, smallest: int) -> tuple[random.Random, Graph, Analyzer]:
    """A random graph of `smallest` to 25 grown nodes and its analyzer (batch None or 2), refreshed once."""
    rnd = random.Random(seed)
    g = random_graph(rnd, rnd.randint(smallest, 25))
    analyzer = Analyzer(g, batch=rnd.choice([None, 2]))
    analyzer.refresh()
    return rnd, g, analyzer


def assert_fresh_with_plan(g: Graph, analyzer: Analyzer, report) -> None:
    """The report, its errors and its sharing-group lines equal a fresh analysis, and its peak equals a buffer plan made from
    scratch on the same schedule."""
    assert (report.as_dict(), report.errors) == fresh(g, analyzer.batch)
    assert share_lines(g, report) == fresh_share_lines(g)
    assert report.total.peak_activation_bytes == schedule_buffers(g, g.topo_order(), analyzer.costs).peak() * (analyzer.batch or 1)


@pytest.mark.parametrize("seed", range(12))
def test_the_plan_kept_through_structural_edits_equals_a_fresh_analysis(block, seed):
    """Every edit above, one to three at a time: the report (peak memory included) and its errors equal a fresh
    analysis, and the peak equals a buffer plan made from scratch on the same schedule."""
    rnd, g, analyzer = random_analyzer(seed, 3)
    kept = 0
    for _ in range(40):
        for _ in range(rnd.randint(1, 3)):
            edit(g, rnd)
        report = analyzer.refresh()
        kept += analyzer._plan is not None
        assert_fresh_with_plan(g, analyzer, report)
        assert [c.name for c in report.nodes] == g.topo_order()
    assert kept > 20  # renames and full refreshes aside, the plan follows the edits
    analyzer.close()


def test_a_structural_edit_of_a_long_chain_recomputes_what_it_touches(block):
    """A node put in front of the output and between two layers, then taken out: the plan follows the order, the report
    equals a fresh one, and only the nodes whose inputs changed are recomputed."""
    g = relu_chain(3_000)
    analyzer = Analyzer(g)
    analyzer.refresh()
    tail = g.nodes["y"].inputs[0]
    for consumer, producer in (("y", tail), ("relu_1500", "relu_1499"), ("relu_1", "x")):
        g.add("Sigmoid", [producer], name="added")
        g.set_input(consumer, 0, "added")
        report = analyzer.refresh()
        assert analyzer._plan is not None and sorted(analyzer.recomputed) == sorted({"added", consumer})
        assert (report.as_dict(), report.errors) == fresh(g)
        g.set_input(consumer, 0, producer)
        g.erase("added")
        report = analyzer.refresh()
        assert analyzer.recomputed == [consumer]
        assert (report.as_dict(), report.errors) == fresh(g)
    analyzer.close()


def rename_edit(g: Graph, rnd: random.Random, erased: list[str]) -> None:
    """A rename: to a fresh name, to the name of a node erased since the last refresh, or two nodes swapping names."""
    names = [n for n in g.nodes if n not in ("x", "y")]
    if not names:
        return
    name, kind = rnd.choice(names), rnd.random()
    if kind < 0.4:
        g.rename(name, g.fresh_name("r"))
    elif kind < 0.7 and erased:
        free = [n for n in erased if n not in g.nodes]
        if free:
            g.rename(name, rnd.choice(free))
    else:
        other = rnd.choice(names)
        if other != name:
            g.rename(name, "swap")
            g.rename(other, name)
            g.rename("swap", other)


@pytest.mark.parametrize("seed", range(10))
def test_renames_among_other_edits_keep_the_plan_and_equal_a_fresh_analysis(block, seed):
    """Renames batched with every other edit, to names erased in the same batch too: the report and the peak equal a fresh
    analysis and a plan made from scratch, and the plan is kept through renames (the graph keeps its order through them)."""
    rnd, g, analyzer = random_analyzer(seed, 5)
    kept = 0
    for _ in range(40):
        erased: list[str] = []
        renamed = False
        for _ in range(rnd.randint(1, 4)):
            if rnd.random() < 0.4:
                rename_edit(g, rnd, erased)
                renamed = True
            else:
                before = set(g.nodes)
                edit(g, rnd)
                erased += before - set(g.nodes)
        report = analyzer.refresh()
        kept += renamed and analyzer._plan is not None
        assert_fresh_with_plan(g, analyzer, report)
        check_order(g)
    assert kept > 10
    analyzer.close()


def test_a_rename_keeps_the_plan_and_recomputes_the_lines_that_name_it(block):
    """Renaming a layer of a long chain, its reader after it, then its reader before it in one batch, after rewiring it:
    the plan is kept, only those nodes and their readers are recomputed, and the report equals a fresh one."""
    g = relu_chain(3_000)
    analyzer = Analyzer(g)
    analyzer.refresh()
    g.add("Sigmoid", ["relu_1499"], name="added")
    g.set_input("relu_1500", 0, "added")
    analyzer.refresh()
    for batch in ([("relu_1500", "middle")], [("middle", "m2"), ("relu_1501", "after")], [("relu_1502", "r1"), ("after", "r2")]):
        for old, new in batch:
            g.rename(old, new)
        report = analyzer.refresh()
        names = {new for _, new in batch}
        assert analyzer._plan is not None
        assert set(analyzer.recomputed) == names | {c for n in names for c, _ in g.users(n)}
        assert (report.as_dict(), report.errors) == fresh(g)
    g.set_input("m2", 0, "relu_1498")  # the buffer it read before is freed by another node now
    g.rename("m2", "rewired")
    report = analyzer.refresh()
    assert analyzer._plan is not None and (report.as_dict(), report.errors) == fresh(g)
    analyzer.close()


@pytest.mark.parametrize("case", ["old producer renamed", "moved node renamed", "added node renamed"])
def test_a_node_renamed_after_another_edit_of_the_same_batch_keeps_what_that_edit_did(block, case):
    """The edits before a rename name the node by its old name: a producer read before a rewiring, a node the order moved,
    a node added. Its buffers are placed and freed as a fresh plan's."""
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [8, 8, 8]})
    g.add("Conv2d", ["x"], name="wide", attrs={"out_channels": 64, "kernel_size": 1})
    g.add("Conv2d", ["x"], name="a", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("ReLU", ["wide"], name="b")
    g.add("Conv2d", ["a"], name="c", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("Add", ["b", "c"], name="d")
    g.add("Output", ["d"], name="y")
    analyzer = Analyzer(g)
    analyzer.refresh()
    g.add("Sigmoid", ["x"], name="warm")  # the plan is kept from this refresh on
    g.add("Output", ["warm"], name="z")
    analyzer.refresh()
    if case == "old producer renamed":
        g.set_input("b", 0, "a")  # nothing reads the wide buffer now: it is freed right after it is made
        g.rename("wide", "w2")
    elif case == "moved node renamed":
        g.set_input("a", 0, "b")  # a now waits for b, which waits for wide: a moves after them
        g.rename("a", "a2")
    else:
        g.add("Conv2d", ["wide"], name="late", attrs={"out_channels": 64, "kernel_size": 3, "padding": 1})
        g.set_input("d", 1, "late")
        g.rename("late", "l2")
    report = analyzer.refresh()
    assert analyzer._plan is not None
    assert (report.as_dict(), report.errors) == fresh(g)
    assert report.total.peak_activation_bytes == schedule_buffers(g, g.topo_order(), analyzer.costs).peak()
    analyzer.close()


def test_renaming_nodes_of_a_share_group_keeps_one_owner():
    """The owner and a member of a share group renamed, one at a time and together: the parameters are counted once."""
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [8, 8, 8]})
    g.add("Conv2d", ["x"], name="first", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}, share="s")
    g.add("Conv2d", ["first"], name="second", attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}, share="s")
    g.add("Output", ["second"], name="y")
    analyzer = Analyzer(g)
    analyzer.refresh()
    g.add("Output", ["first"], name="z")
    analyzer.refresh()
    for batch in ([("second", "s2")], [("first", "f2")], [("f2", "f3"), ("s2", "s3")]):
        for old, new in batch:
            g.rename(old, new)
        report = analyzer.refresh()
        assert analyzer._plan is not None
        assert (report.as_dict(), report.errors) == fresh(g)
    analyzer.close()


def test_a_view_of_a_rewired_view_passes_on_the_new_buffer():
    """An Identity rewired to another producer of the same shape: the Dropout reading it (a view, its shapes unchanged)
    now passes on the other buffer, which stays live until the last layer reads it."""
    g = Graph()
    g.add("Input", name="x", attrs={"shape": [8, 8, 8]})
    g.add("Conv2d", ["x"], name="a", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("Conv2d", ["x"], name="b", attrs={"out_channels": 8, "kernel_size": 1})
    g.add("Identity", ["a"], name="v")
    g.add("Dropout", ["v"], name="w")
    g.add("Conv2d", ["x"], name="wide", attrs={"out_channels": 64, "kernel_size": 1})
    g.add("Add", ["w", "b"], name="c")
    g.add("Output", ["c"], name="y")
    g.add("Output", ["wide"], name="z")
    analyzer = Analyzer(g)
    analyzer.refresh()
    for producer in ("b", "a", "x", "b"):
        g.set_input("v", 0, producer)
        report = analyzer.refresh()
        assert analyzer._plan is not None and "w" not in analyzer.recomputed
        assert (report.as_dict(), report.errors) == fresh(g)
    analyzer.close()


@pytest.mark.parametrize("count", [1, 2, 5, 8, 33])
def test_the_block_tree_finds_what_a_scan_finds(count):
    """`_BlockTree.first` and `highest` against a scan of the blocks, before and after changes of single blocks."""
    rnd = random.Random(count)
    low = [rnd.randrange(100) for _ in range(count)]
    high = [rnd.randrange(100) for _ in range(count)]
    tree = order_module._BlockTree(low, high)
    for _ in range(200):
        if rnd.random() < 0.3:
            b = rnd.randrange(count)
            low[b], high[b] = rnd.randrange(100), rnd.randrange(100)
            tree.set(b, low[b], high[b])
        start, below, above = rnd.randrange(count + 1), rnd.randrange(-1, 101), rnd.randrange(-1, 101)
        scan = next((b for b in range(start, count) if low[b] < below or high[b] > above), count)
        assert tree.first(start, below, above) == scan
        end = rnd.randrange(start, count + 1)
        assert tree.highest(start, end) == max(high[start:end], default=-1)


def test_a_concat_slot_taken_away_keeps_the_order_and_the_plan():
    """Removing an input slot of a Concat moves nothing more than disconnecting it did: the plan follows."""
    g = relu_chain(40)
    g.add("Concat", ["relu_10", "relu_20", "relu_30"], name="join")
    g.add("Output", ["join"], name="z")
    analyzer = Analyzer(g)
    analyzer.refresh()
    g.remove_input("join", 1)
    report = analyzer.refresh()
    assert analyzer._plan is not None and g._order_cache is not None
    assert (report.as_dict(), report.errors) == fresh(g)
    analyzer.close()
