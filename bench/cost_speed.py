"""How fast shapes + cost are: resnet50, synthetic graphs up to 600k nodes, incremental vs full, and fvcore.

Run: python bench/cost_speed.py [--repeat N] [--sizes 1000,10000,100000] [--skip-fvcore] [--scale-only]
Prints one table of medians measured in this run. Targets: resnet50 under 20 ms, 10k nodes under 1 s
with linear growth (10k/1k about 10), at least 20x faster than fvcore's FlopCountAnalysis on the same
network as a torch module, incremental refresh at least 10x cheaper than a full re-analysis.
Scale: building a chain or branchy design with the graph API, saving it, then `convstudio validate` and
`convstudio cost` on the file (the CLI's own code, run in this process) grow linearly (10x nodes, about
10x time), 100k nodes take under 3 s in all (each size's row gives its total as a ratio to those 3 s, by the wall
clock and by this process's CPU time, which other load inflates less), and one edit + refresh costs the same at 1k,
10k and 100k nodes: an attribute edit, and a structural one (a node put in front of the output or between two layers,
then taken out), once the first structural edit has made the order's blocks and the buffer plan (its own row). Beside
each size's total, a machine reference (parsing the file and keeping one bare object per node) is timed in the same run:
the machine's speed varies by up to 2x over a day, and a slow spell shows in both. A rename
keeps the plan too; the graph rebuilds its dict of nodes for it (insertion order), which grows with the graph in C.
--scale-only prints just the scale and edit + refresh rows.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convstudio.designer.cli.main import main as cli_main  # noqa: E402
from convstudio.ir.cost import Analyzer, analyze  # noqa: E402
from convstudio.ir.design import Design, save  # noqa: E402
from convstudio.ir.graph import Graph, paused_gc  # noqa: E402
from convstudio.ir.templates import build_template  # noqa: E402

TARGET_S = 3.0  # build + validate + cost of 100k nodes


def timed(fn, repeat: int, setup=None) -> tuple[float, float]:
    """(median, min) milliseconds of `fn(setup())` over `repeat` runs; setup time is not counted."""
    times = []
    gc.collect()
    for _ in range(repeat):
        arg = setup() if setup else None
        start = time.perf_counter()
        fn(arg) if setup else fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def chain(n: int) -> Graph:
    """Input, then conv -> bn -> relu repeated until the graph has about n nodes, then a classifier."""
    g = Graph("chain")
    x = g.add("Input", name="x", attrs={"shape": [16, 32, 32]}).name
    while len(g) < n - 4:
        x = g.add("Conv2d", [x], attrs={"out_channels": 16, "kernel_size": 3, "padding": 1, "bias": False}).name
        x = g.add("BatchNorm2d", [x]).name
        x = g.add("ReLU", [x]).name
    x = g.add("GlobalAvgPool", [x]).name
    x = g.add("Flatten", [x]).name
    x = g.add("Linear", [x], attrs={"out_features": 10}).name
    g.add("Output", [x], name="y")
    return g


def branchy(n: int) -> Graph:
    """Alternating residual blocks (skip + Add) and four-branch inception blocks (Concat)."""
    g = Graph("branchy")
    x = g.add("Input", name="x", attrs={"shape": [32, 16, 16]}).name
    conv = {"kernel_size": 3, "padding": 1, "bias": False}
    while len(g) < n - 4:
        skip = x
        y = g.add("Conv2d", [x], attrs={"out_channels": 32, **conv}).name
        y = g.add("BatchNorm2d", [y]).name
        y = g.add("ReLU", [y]).name
        y = g.add("Conv2d", [y], attrs={"out_channels": 32, **conv}).name
        y = g.add("BatchNorm2d", [y]).name
        y = g.add("Add", [y, skip]).name
        x = g.add("ReLU", [y]).name
        branches = [g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 1}).name]
        for k in (3, 5):
            b = g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 1}).name
            branches.append(g.add("Conv2d", [b], attrs={"out_channels": 8, "kernel_size": k, "padding": k // 2}).name)
        pool = g.add("MaxPool2d", [x], attrs={"kernel_size": 3, "stride": 1, "padding": 1}).name
        branches.append(g.add("Conv2d", [pool], attrs={"out_channels": 8, "kernel_size": 1}).name)
        x = g.add("Concat", branches).name
    x = g.add("GlobalAvgPool", [x]).name
    x = g.add("Flatten", [x]).name
    x = g.add("Linear", [x], attrs={"out_features": 10}).name
    g.add("Output", [x], name="y")
    return g


def full_analysis(graph: Graph, repeat: int) -> tuple[float, float]:
    """Cold `analyze` on fresh copies (no stored shapes or costs; a copy keeps the cached schedule)."""
    return timed(lambda g: analyze(g), repeat, setup=graph.copy)


def growth(small: Graph, large: Graph, repeat: int, gc_paused: bool = False) -> tuple[float, float]:
    """Median ms of a cold `analyze` of each graph, the two measured alternately.

    With `gc_paused`, Python's cyclic garbage collector is off while `analyze` runs: its full
    collections scan every live object, which adds a superlinear term unrelated to the analysis.
    """
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeat):
        for k, graph in enumerate((small, large)):
            work = graph.copy()
            gc.collect()
            if gc_paused:
                gc.disable()
            start = time.perf_counter()
            analyze(work)
            times[k].append((time.perf_counter() - start) * 1e3)
            gc.enable()
    return statistics.median(times[0]), statistics.median(times[1])


def baseline_growth(repeat: int) -> float:
    """10k/1k time ratio of a plain Python loop over dicts, for calibrating this machine's memory effects."""
    def loop(table: dict) -> None:
        seen = set()
        for key, value in table.items():
            for ref in value["inputs"]:
                _ = ref.rpartition(":")[0] in seen
            seen.add(key)

    tables = [{f"node_{i}": {"inputs": [f"node_{i - 1}"]} for i in range(n)} for n in (1000, 10000)]
    small, large = (timed(lambda t=t: loop(t), repeat)[0] for t in tables)
    return large / small


def incremental_vs_full(graph: Graph, edit: tuple[str, str, object, object], repeat: int) -> dict[str, float]:
    """Alternately: a cold `analyze`, a warm full `Analyzer` refresh, and one `set_attr` + incremental `refresh()`."""
    name, key, first, second = edit
    work = graph.copy()
    analyzer = Analyzer(work)
    analyzer.refresh()
    cold, warm, inc = [], [], []
    recomputed = 0
    gc.collect()
    for i in range(repeat):
        fresh = graph.copy()
        t0 = time.perf_counter()
        analyze(fresh)
        t1 = time.perf_counter()
        analyzer.invalidate()
        analyzer.refresh()
        t2 = time.perf_counter()
        work.set_attr(name, key, first if i % 2 else second)
        analyzer.refresh()
        t3 = time.perf_counter()
        cold.append(t1 - t0)
        warm.append(t2 - t1)
        inc.append(t3 - t2)
        recomputed = max(recomputed, len(analyzer.recomputed))
    analyzer.close()
    med = statistics.median
    return {"cold": med(cold) * 1e3, "warm": med(warm) * 1e3, "incremental": med(inc) * 1e3, "recomputed": recomputed}


class _Entry:
    """One node as the machine reference keeps it: its fields, nothing checked or computed."""

    __slots__ = ("name", "op", "attrs", "inputs")

    def __init__(self, name, op, attrs, inputs):
        self.name, self.op, self.attrs, self.inputs = name, op, attrs, inputs


def reference_seconds(path: Path) -> float:
    """Seconds to read a saved design, parse it (`json.loads`, the collector paused as `load` pauses it) and keep one bare
    object per node by name: the least any tool reading the file pays, and a gauge of this machine's speed at the moment,
    timed beside the verbs so a slow spell of the machine shows in both (these machines' speed varies by up to 2x)."""
    with paused_gc():
        start = time.perf_counter()
        data = json.loads(path.read_text(encoding="utf-8"))
        kept = {e["name"]: _Entry(e["name"], e["op"], dict(e.get("attrs", {})), list(e.get("inputs", []))) for e in data["nodes"]}
        seconds = time.perf_counter() - start
        del kept, data
    return seconds


def cli(argv: list[str]) -> float:
    """Seconds `convstudio ARGV...` takes, run in this process; its output is discarded, a failure stops the bench."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    if code != 0:
        raise SystemExit(f"convstudio {' '.join(argv)} exited {code}")
    return time.perf_counter() - start


def scale_steps(factory, n: int, folder: Path) -> dict[str, float]:
    """Seconds to build an n-node design with the graph API (generated names), then to `validate` and `cost`
    its saved file through the CLI; saving (a disk write and fsync) is timed on its own, outside the total.
    `cpu` is the process time of the three, which other load on the machine inflates less than the wall clock."""
    cpu = time.process_time()
    start = time.perf_counter()
    graph = factory(n)
    built = time.perf_counter() - start
    cpu -= time.process_time()
    path = folder / f"{graph.name}_{n}.json"
    start = time.perf_counter()
    save(Design(graph), path)
    saved = time.perf_counter() - start
    cpu += time.process_time()
    nodes = len(graph)
    del graph
    times = {"build": built, "validate": cli(["validate", str(path)]), "cost": cli(["cost", str(path)])}
    times["total"] = sum(times.values())
    times["cpu"] = time.process_time() - cpu
    times["reference"] = reference_seconds(path)
    times["save"] = saved
    times["nodes"] = nodes
    path.unlink()
    return times


def scale_rows(sizes: list[int], repeat: int) -> list[tuple[str, str, str]]:
    """Build + validate + cost at each size for the chain and the branchy design, and the growth per size step."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scale_steps(chain, 100, Path(tmp))  # loads the verbs' modules, which the first run would otherwise pay for
        for kind, factory in (("chain", chain), ("branchy", branchy)):
            found = {}
            for n in sizes:
                runs = [scale_steps(factory, n, Path(tmp)) for _ in range(repeat if n <= 10_000 else 1)]
                found[n] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                t = found[n]
                rows.append((f"{kind} {t['nodes']:,.0f} nodes: build + validate + cost",
                             f"{t['total']:.2f} s", f"build {t['build']:.2f} + validate {t['validate']:.2f} + cost {t['cost']:.2f}"
                             f" (save {t['save']:.2f}), cpu {t['cpu']:.2f}"))
                rows.append(("  total / 3 s (the 100k-node target)", f"{t['total'] / TARGET_S:.2f}x", f"cpu {t['cpu'] / TARGET_S:.2f}x"))
                rows.append(("  machine reference: parse the file + one object per node", f"{t['reference'] * 1e3:.1f} ms",
                             f"total = {t['total'] / t['reference']:.1f}x the reference"))
            for small, large in zip(sizes, sizes[1:]):
                ratio = found[large]["total"] / found[small]["total"]
                rows.append((f"  {kind} growth {large // 1000}k/{small // 1000}k", f"{ratio:.1f}x", f"linear = {large / small:g}x"))
    return rows


def refresh_rows(repeat: int) -> list[tuple[str, str, str]]:
    """One attribute edit + incremental refresh on chains of 1k, 10k and 100k nodes: the time should not grow.
    Structural edits: a node put in front of the output, and one put between two layers mid-chain, each taken out
    again. The graph keeps its order by sorting where it changes and the buffer plan follows (ir/order.py, LivePlan),
    so these should not grow either; the first structural edit of an analysis makes the order's blocks and the plan
    from the full one, which grows with the graph and is shown on its own row."""
    rows = []
    medians = {}
    structural = ("structural, in front of the output", "structural, between two layers")
    for n in (1_000, 10_000, 100_000):
        graph = chain(n)
        convs = [name for name, node in graph.nodes.items() if node.op == "Conv2d"]
        target = convs[len(convs) // 2]
        analyzer = Analyzer(graph)
        analyzer.refresh()
        times = {"same shapes": [], "shapes change": []}
        touched = {}
        for i in range(20 * repeat):
            for label, key, values in (("same shapes", "bias", (True, False)), ("shapes change", "out_channels", (24, 16))):
                graph.set_attr(target, key, values[i % 2])
                start = time.perf_counter()
                analyzer.refresh()
                times[label].append(time.perf_counter() - start)
                touched[label] = max(touched.get(label, 0), len(analyzer.recomputed))
        middle = graph.nodes[convs[len(convs) // 3]].inputs[0]
        places = {structural[0]: ("y", graph.nodes["y"].inputs[0]), structural[1]: (convs[len(convs) // 3], middle)}
        first = None
        for label, (consumer, producer) in places.items():
            times[label] = []
            for _ in range(max(5, 3 * repeat) + (first is None)):
                start = time.perf_counter()
                graph.add("ReLU", [producer], name="added")
                graph.set_input(consumer, 0, "added")
                analyzer.refresh()
                if first is None:  # the first structural edit, timed alone: taking the node out again is not
                    first = time.perf_counter() - start
                    graph.set_input(consumer, 0, producer)
                    graph.erase("added")
                    analyzer.refresh()
                    continue
                recomputed = len(analyzer.recomputed)
                graph.set_input(consumer, 0, producer)
                graph.erase("added")
                analyzer.refresh()
                times[label].append((time.perf_counter() - start) / 2)
                touched[label] = max(touched.get(label, 0), recomputed, len(analyzer.recomputed))
        times["rename"] = []  # a layer renamed and named back: the graph rebuilds its dict of nodes, the plan follows
        for _ in range(max(5, 3 * repeat)):
            for old, new in ((target, "renamed"), ("renamed", target)):
                start = time.perf_counter()
                graph.rename(old, new)
                analyzer.refresh()
                times["rename"].append(time.perf_counter() - start)
                touched["rename"] = max(touched.get("rename", 0), len(analyzer.recomputed))
        analyzer.close()
        for label, values in times.items():
            medians[(label, n)] = statistics.median(values) * 1e3
            rows.append((f"edit + refresh, {label}, chain {len(graph):,} nodes", f"{medians[(label, n)]:.3f} ms", f"{touched[label]} nodes recomputed"))
        rows.append((f"first structural edit + refresh, chain {len(graph):,} nodes", f"{first * 1e3:.1f} ms",
                     "makes the order's blocks and the plan from the full analysis"))
    for label in ("same shapes", "shapes change", *structural, "rename"):
        ratio = medians[(label, 100_000)] / medians[(label, 1_000)]
        note = ("linear, in C: the graph rebuilds its dict of nodes; the refresh follows the plan" if label == "rename"
                else "flat = 1x (full re-analysis: 100x)")
        rows.append((f"  refresh growth 100k/1k, {label}", f"{ratio:.1f}x", note))
    return rows


def fvcore_time(graph: Graph, repeat: int) -> tuple[float, float, int] | str:
    """Median/min ms of fvcore's FlopCountAnalysis(module, input).total() and its total, or why it was skipped."""
    try:
        import torch
        from fvcore.nn import FlopCountAnalysis

        from convstudio.backends.torch.lower import lower
    except ImportError as e:
        return f"skipped ({e})"
    module = lower(graph).eval()
    shape = graph.nodes[graph.inputs[0]].attrs["shape"]
    x = torch.zeros(1, *shape)
    totals = []

    def run():
        with torch.no_grad():
            counter = FlopCountAnalysis(module, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            totals.append(counter.total())

    med, low = timed(run, repeat)
    return med, low, totals[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="runs per measurement (median reported)")
    parser.add_argument("--sizes", default="1000,10000,100000", help="node counts of the scale rows, comma separated (600000 for the largest)")
    parser.add_argument("--skip-fvcore", action="store_true", help="leave out the fvcore comparison")
    parser.add_argument("--scale-only", action="store_true", help="only the scale rows and the edit + refresh rows at 1k, 10k and 100k nodes")
    args = parser.parse_args()
    repeat = args.repeat
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows: list[tuple[str, str, str]] = []
    if args.scale_only:
        rows += refresh_rows(max(1, repeat // 7))
        rows += scale_rows(sizes, max(1, repeat // 7))
        print_rows(rows)
        return

    resnet50 = build_template("resnet50")
    r50_med, r50_min = full_analysis(resnet50, repeat)
    rows.append((f"resnet50 analyze ({len(resnet50)} nodes)", f"{r50_med:.2f} ms (min {r50_min:.2f})", "target < 20 ms"))

    for kind, factory in (("chain", chain), ("branchy", branchy)):
        small, large = factory(1000), factory(10000)
        s_med, l_med = growth(small, large, max(5, repeat // 2))
        rows.append((f"{kind} {len(small)} nodes", f"{s_med:.1f} ms", ""))
        rows.append((f"{kind} {len(large)} nodes", f"{l_med:.1f} ms", "target < 1000 ms"))
        rows.append((f"{kind} growth 10k/1k", f"{l_med / s_med:.1f}x", "linear = 10x"))
        p_small, p_large = growth(small, large, max(5, repeat // 2), gc_paused=True)
        rows.append(("  growth with the cyclic GC paused", f"{p_large / p_small:.1f}x ({p_large:.1f} ms)", "the analysis alone"))
    rows.append(("  plain dict loop growth 10k/1k (this machine)", f"{baseline_growth(repeat):.1f}x", "cache effects, not the algorithm"))

    edits = {
        "same shapes (layer3_0_conv2 bias)": ("layer3_0_conv2", "bias", True, False),
        "shapes change (layer2_0_conv1 out_channels)": ("layer2_0_conv1", "out_channels", 96, 128),
    }
    for label, edit in edits.items():
        m = incremental_vs_full(resnet50, edit, 5 * repeat)
        rows.append((f"edit + refresh, {label}", f"{m['incremental']:.3f} ms ({m['recomputed']} nodes)", ""))
        rows.append(("  cold analyze / incremental", f"{m['cold'] / m['incremental']:.1f}x ({m['cold']:.2f} ms)", "target >= 10x"))
        rows.append(("  warm full refresh / incremental", f"{m['warm'] / m['incremental']:.1f}x ({m['warm']:.2f} ms)", ""))

    rows += refresh_rows(max(1, repeat // 7))
    rows += scale_rows(sizes, max(1, repeat // 7))

    fv = "skipped (--skip-fvcore)" if args.skip_fvcore else fvcore_time(resnet50, max(3, repeat // 7))
    if isinstance(fv, str):
        rows.append(("fvcore FlopCountAnalysis resnet50", fv, ""))
    else:
        fv_med, fv_min, fv_total = fv
        ours = analyze(resnet50.copy(), "fvcore").total.flops
        rows.append(("fvcore FlopCountAnalysis resnet50", f"{fv_med:.0f} ms (min {fv_min:.0f})", ""))
        rows.append(("  fvcore / ours", f"{fv_med / r50_med:.0f}x", "target >= 20x"))
        rows.append(("  totals: fvcore vs our fvcore convention", f"{fv_total:,} vs {ours:,}", "equal" if fv_total == ours else "DIFFER"))

    print_rows(rows)


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>{value_width}}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {note}")


if __name__ == "__main__":
    main()
