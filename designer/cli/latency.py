"""Latency beside the counts in compare, compress and fuse: predicted from the stored latency model, measured
on ONNX Runtime CPU when asked."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from convstudio.ir.graph import Graph


def add_latency_arguments(parser, flag: str, measure_help: str) -> None:
    """`flag` (--measure or --latency) measures on ONNX Runtime CPU; --latency-model names the model that predicts."""
    parser.add_argument(flag, action="store_true", help=measure_help)
    parser.add_argument("--latency-model", metavar="FILE",
                        help="latency model to predict with (default: the one `profile --calibrate` stored for ONNX Runtime CPU, when there is one)")


def latency_model(args):
    """The model named by --latency-model, else the stored one, else None (no predicted column)."""
    from convstudio.backends.latency_model import find_model, load_model

    return load_model(path=args.latency_model) if args.latency_model else find_model()


def change(before: float, after: float) -> dict:
    return {"before": before, "after": after, "delta": after - before, "pct": 100 * (after / before - 1) if before else None}


def latency_delta(before: Graph, after: Graph, args) -> dict:
    """{"predicted": change or None, "measured": change or None} in ms at batch 1; measured is the best of 10 runs
    (the figure least disturbed by other processes)."""
    from convstudio.backends.latency_model import predict
    from convstudio.backends.profile import measure_latency

    model = latency_model(args)
    out = {"predicted": None, "measured": None}
    if model is not None:
        out["predicted"] = change(predict(before, 1, model)[1], predict(after, 1, model)[1])
    if args.measure:
        out["measured"] = change(measure_latency(before)["min"], measure_latency(after)["min"])
    return out


def render_latency(data: dict, console: Console) -> None:
    """Rows of predicted / measured latency before, after and the change; nothing when neither is known."""
    rows = [(label, data[key]) for key, label in (("predicted", "predicted (latency model)"), ("measured", "measured (ORT CPU, best of 10)")) if data[key]]
    if not rows:
        return
    table = Table(title="latency at batch 1", title_justify="left")
    for column in ("", "before", "after", "delta", "%"):
        table.add_column(column, justify="left" if not column else "right")
    for label, c in rows:
        pct = f"{c['pct']:+.1f}%" if c["pct"] is not None else ""
        table.add_row(label, f"{c['before']:.3f} ms", f"{c['after']:.3f} ms", f"{c['delta']:+.3f} ms", pct)
    console.print(table)


def compare_latency(graphs: dict[str, Graph], totals: dict, args) -> dict | None:
    """Per design: predicted and (with --latency) measured ms at batch 1, with ratios to the first beside its MACs ratio."""
    from convstudio.backends.latency_model import predict
    from convstudio.backends.profile import measure_latency

    model = latency_model(args)
    if model is None and not args.latency:
        return None
    rows = {}
    for label, graph in graphs.items():
        rows[label] = {"macs": totals[label]["macs"],
                       "predicted": predict(graph, 1, model)[1] if model is not None else None,
                       "measured": measure_latency(graph)["min"] if args.latency else None}
    first = rows[next(iter(rows))]
    for row in rows.values():
        for key in ("macs", "predicted", "measured"):
            row[f"{key}_ratio"] = row[key] / first[key] if row[key] is not None and first[key] else None
    return rows


def render_compare_latency(rows: dict, console: Console) -> None:
    labels = list(rows)
    table = Table(title=f"latency at batch 1 beside MACs, ratios to {labels[0]} (measured: ORT CPU, best of 10 runs)", title_justify="left")
    table.add_column("", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_row("MACs ratio", *[f"{rows[lb]['macs_ratio']:.3f}" if rows[lb]["macs_ratio"] is not None else "" for lb in labels])
    for key, name in (("predicted", "predicted"), ("measured", "measured")):
        if rows[labels[0]][key] is None:
            continue
        table.add_row(f"{name} ms", *[f"{rows[lb][key]:.3f}" for lb in labels])
        table.add_row(f"  {key} ratio", *[f"{rows[lb][key + '_ratio']:.3f}" if rows[lb][key + "_ratio"] is not None else "" for lb in labels])
    console.print(table)
